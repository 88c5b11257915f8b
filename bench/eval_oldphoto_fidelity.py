"""Measured fidelity of the old-photo stages on controlled degradations, and of the print splitter.

Run: ``python bench/eval_oldphoto_fidelity.py`` -> bench/results/oldphoto-fidelity.json and .md.
Clean photos: skimage.data astronaut, chelsea, coffee, camera (grey), and a sepia-toned camera.
Degradation model: albumd.pipeline.degrade (documented there and in docs/oldphoto-stages.md).
Every stage is compared with a do-nothing baseline on the same degraded input.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from albumd.pipeline.defects import DefectParams, repair_defects
from albumd.pipeline.degrade import DegradeSpec, add_scratches_and_dust, fade_and_cast, make_flatbed_scan
from albumd.pipeline.split import SplitParams, split_prints
from albumd.pipeline.tone import ToneParams, correct_tone
from skimage.metrics import structural_similarity

OUT = Path(__file__).parent / "results"


def clean(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3].astype(np.float32) / 255.0


def sepia(img: np.ndarray) -> np.ndarray:
    y = img.mean(axis=2, keepdims=True)
    return np.clip(
        y * np.array([1.07, 0.93, 0.70], np.float32) + np.array([0.03, 0.02, 0.0], np.float32), 0, 1
    )


def delta_e(a: np.ndarray, b: np.ndarray) -> float:
    la = cv2.cvtColor(np.clip(a, 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab)
    lb = cv2.cvtColor(np.clip(b, 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab)
    return float(np.mean(np.linalg.norm(la - lb, axis=2)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))


def chroma(img: np.ndarray) -> float:
    return float(np.abs(img - img.mean(axis=2, keepdims=True)).mean())


def tone_eval() -> list[dict[str, object]]:
    rows = []
    photos = {n: clean(n) for n in ("astronaut", "chelsea", "coffee", "camera")}
    photos["camera_sepia"] = sepia(photos["camera"])
    for name, img in photos.items():
        casts = (
            ["yellow", "magenta", "blue", "autochrome"]
            if name not in ("camera", "camera_sepia")
            else ["none"]
        )
        for cast in casts:
            aged = fade_and_cast(img, 0.6, cast)
            out, rec = correct_tone(aged, ToneParams())
            rows.append(
                {
                    "photo": name,
                    "cast": cast,
                    "kind": rec.result["kind"],
                    "deltaE_nothing": round(delta_e(aged, img), 2),
                    "deltaE_tone": round(delta_e(out, img), 2),
                    "contrast_ratio_nothing": round(float(aged.std() / img.std()), 3),
                    "contrast_ratio_tone": round(float(out.std() / img.std()), 3),
                    "chroma_in": round(chroma(img), 4),
                    "chroma_out": round(chroma(out), 4),
                    "clipped_fraction": rec.result["clipped_fraction"],
                }
            )
    return rows


def defect_eval() -> list[dict[str, object]]:
    rows = []
    for i, name in enumerate(("astronaut", "chelsea", "coffee", "camera")):
        img = clean(name)
        base = np.clip(img + np.random.default_rng(i).normal(0, 0.01, img.shape), 0, 1).astype(np.float32)
        aged, masks = add_scratches_and_dust(
            base, np.random.default_rng(100 + i), scratches=6, dust=120, hairs=3
        )
        out, rec = repair_defects(aged, DefectParams())
        truth = masks["defect"] > 0
        found = rec.artifacts["defect_mask"] > 0
        near = cv2.dilate(truth.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ys, xs = np.where(truth)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        ssim_n = structural_similarity(base, aged, channel_axis=2, data_range=1.0, full=True)[1].mean(axis=2)
        ssim_r = structural_similarity(base, out, channel_axis=2, data_range=1.0, full=True)[1].mean(axis=2)
        rows.append(
            {
                "photo": name,
                "truth_coverage_pct": round(float(truth.mean() * 100), 2),
                "found_coverage_pct": rec.result["coverage_percent"],
                "precision": round(float((found & near).sum() / max(found.sum(), 1)), 3),
                "recall": round(float((found & truth).sum() / max(truth.sum(), 1)), 3),
                "psnr_mask_nothing": round(psnr(aged[truth], base[truth]), 2),
                "psnr_mask_repaired": round(psnr(out[truth], base[truth]), 2),
                "ssim_mask_nothing": round(float(ssim_n[truth].mean()), 4),
                "ssim_mask_repaired": round(float(ssim_r[truth].mean()), 4),
                "psnr_outside_mask_repaired": round(psnr(out[~near], base[~near]), 2),
                "seconds": round(rec.seconds, 3),
            }
        )
        del y0, y1, x0, x1
    return rows


def split_eval() -> dict[str, object]:
    names = ["astronaut", "chelsea", "coffee", "camera"]
    prints_all = [cv2.resize(clean(n), None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA) for n in names]
    rng = np.random.default_rng(7)
    found = total = 0
    errors: list[float] = []
    per: list[dict[str, object]] = []
    for trial in range(24):
        n = trial % 4 + 1
        bg = "white" if trial % 2 == 0 else "dark"
        idx = rng.permutation(4)[:n]
        angles = list(rng.uniform(-15, 15, n))
        scan, truth = make_flatbed_scan([prints_all[i] for i in idx], angles, rng, background=bg)
        cuts, _ = split_prints(scan, SplitParams())
        total += n
        matched = 0
        for t in truth:
            cx, cy = np.mean(t.corners, axis=0)
            best = None
            for c in cuts:
                x, y, w, h = c.box
                if (
                    x <= cx <= x + w
                    and y <= cy <= y + h
                    and abs(w * h - t.box[2] * t.box[3]) < 0.25 * t.box[2] * t.box[3]
                ):
                    best = c
            if best is not None:
                matched += 1
                errors.append(abs(best.angle - t.deskew_angle))
        found += matched
        per.append({"prints": n, "background": bg, "found": matched, "cuts": len(cuts)})
    return {
        "scans": len(per),
        "prints": total,
        "detection_rate": round(found / total, 4),
        "extra_cuts": int(sum(max(0, int(p["cuts"]) - int(p["prints"])) for p in per)),
        "angle_error_mean_deg": round(float(np.mean(errors)), 3),
        "angle_error_max_deg": round(float(np.max(errors)), 3),
        "angle_error_p95_deg": round(float(np.percentile(errors, 95)), 3),
        "per_scan": per,
    }


def markdown(res: dict[str, object]) -> str:
    lines = [f"Machine: {res['machine']}", "", "### Tone (fade 0.6 + cast)", ""]
    lines.append(
        "| photo | cast | detected | ΔE76 nothing | ΔE76 tone | contrast ratio nothing | contrast ratio tone "
        "| chroma in | chroma out | clipped |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in res["tone"]:  # type: ignore[union-attr]
        lines.append(
            f"| {r['photo']} | {r['cast']} | {r['kind']} | {r['deltaE_nothing']} | {r['deltaE_tone']} | "
            f"{r['contrast_ratio_nothing']} | "
            f"{r['contrast_ratio_tone']} | {r['chroma_in']} | {r['chroma_out']} "
            f"| {r['clipped_fraction']} |"
        )
    lines += ["", "### Defects (6 scratches, dust 120/0.26 Mpx, 3 hairs, grain 0.01)", ""]
    lines.append(
        "| photo | truth % | found % | precision | recall | PSNR mask nothing | PSNR mask repaired "
        "| SSIM mask nothing | SSIM mask repaired | PSNR outside mask | s |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["defects"]:  # type: ignore[union-attr]
        lines.append(
            f"| {r['photo']} | {r['truth_coverage_pct']} | {r['found_coverage_pct']} | {r['precision']} | "
            f"{r['recall']} | {r['psnr_mask_nothing']} | "
            f"{r['psnr_mask_repaired']} | {r['ssim_mask_nothing']} | "
            f"{r['ssim_mask_repaired']} | {r['psnr_outside_mask_repaired']} | {r['seconds']} |"
        )
    s = res["split"]
    lines += [
        "",
        "### Splitter (24 synthetic flatbed scans, 1-4 prints, ±15°, white and dark backgrounds)",
        "",
        "| scans | prints | detection rate | extra cuts | angle error mean | p95 | max |",
        "|---|---|---|---|---|---|---|",
        f"| {s['scans']} | {s['prints']} | {s['detection_rate']} | {s['extra_cuts']} | "  # type: ignore[index]
        f"{s['angle_error_mean_deg']}° | {s['angle_error_p95_deg']}° | {s['angle_error_max_deg']}° |",  # type: ignore[index]
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    res: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, OpenCV {cv2.__version__}",
        "degradation": DegradeSpec().to_json(),
        "tone": tone_eval(),
        "defects": defect_eval(),
        "split": split_eval(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "oldphoto-fidelity.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (OUT / "oldphoto-fidelity.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
