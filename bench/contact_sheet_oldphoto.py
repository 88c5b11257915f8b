"""Contact sheet of the old-photo stages on the real test photos: input | tone | defects | denoise | mask.

Run: ``python bench/contact_sheet_oldphoto.py`` -> docs/contact-sheet-stages.png
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from albumd.pipeline.defects import DefectParams, repair_defects
from albumd.pipeline.denoise import DenoiseParams, denoise_sharpen
from albumd.pipeline.imageio import load_image
from albumd.pipeline.split import SplitParams, split_prints
from albumd.pipeline.tone import ToneParams, correct_tone

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "testdata" / "photos"
NAMES = [
    "bop_old_w_scratch_a.png",
    "bop_old_w_scratch_b.png",
    "bop_old_w_scratch_c.png",
    "bop_old_b.png",
    "bop_old_g.png",
    "bop_old_h.png",
    "bop_old_a.png",
    "group4_b.png",
]
TILE = 230


def tile(img: np.ndarray, label: str) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    s = TILE / max(img.shape[:2])
    t = cv2.resize(
        img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))), interpolation=cv2.INTER_AREA
    )
    out = np.ones((TILE + 18, TILE, 3), np.float32)
    out[18 : 18 + t.shape[0], : t.shape[1]] = t
    u8 = (np.clip(out, 0, 1) * 255).astype(np.uint8)
    cv2.putText(u8, label, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return u8


def main() -> None:
    rows = []
    for name in NAMES:
        img = load_image((PHOTOS / name).read_bytes()).pixels
        cuts, _ = split_prints(img, SplitParams())
        p = cuts[0].image
        t, rt = correct_tone(p, ToneParams())
        d, rd = repair_defects(t, DefectParams())
        n, rn = denoise_sharpen(d, DenoiseParams())
        rows.append(
            np.hstack(
                [
                    tile(img, name[:22]),
                    tile(t, f"tone: {rt.result.get('kind')}"),
                    tile(d, f"defects {rd.result['coverage_percent']:.1f}%"),
                    tile(n, f"dn {rn.result['denoise_weight']:.2f} sh {rn.result['sharpen_amount']:.2f}"),
                    tile(rd.artifacts["defect_mask"], "defect mask"),
                ]
            )
        )
    sheet = np.vstack(rows)
    out = ROOT / "docs" / "contact-sheet-stages.png"
    out.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print("wrote", out)


if __name__ == "__main__":
    main()
