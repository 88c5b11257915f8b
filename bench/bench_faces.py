"""Benchmark of the faces stage on the real test photos: counts vs MANIFEST, timings, seams, identity.

    python bench/bench_faces.py [--photos DIR] [--out bench/results/faces-<host>.json]
                                [--contact-sheet docs/contact-sheet-faces.png]

Per photo: detection (HOG passes, CNN pass, CNN verification, landmarks), alignment, embedding and
matting seconds; the face count against MANIFEST's range (recall = found up to faces_min over faces_min,
false positives = found beyond faces_max); the paste-back round-trip error; the boundary gradient energy
after pasting a modified face, this module's matte vs a feathered box. Plus identity distances: each
face against a degraded copy of itself, and between different people.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from albumd.pipeline.faces import (
    Face,
    FacesParams,
    PasteParams,
    boundary_band,
    embed_aligned_crop,
    find_faces,
    gradient_energy,
    identity_distance,
    paste_faces,
    paste_feathered_box,
    seam_energy,
)
from albumd.pipeline.imageio import load_image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "testdata" / "photos"


def read_manifest(folder: Path) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for line in (folder / "MANIFEST.tsv").read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("file\t"):
            continue
        name, lo, hi, *_ = line.split("\t")
        out[name] = (int(lo), int(hi))
    return out


def simulate_restoration(crop: np.ndarray) -> np.ndarray:
    """A restoration that came back with another tone and colour (brighter, warmer).

    No new detail on purpose: detail raises gradient energy inside the face legitimately, and this
    measures the seam (the same stand-in as tests/test_faces_paste.py).
    """
    return np.clip(crop + np.array([0.10, 0.05, -0.04], np.float32), 0, 1).astype(np.float32)


def degrade(crop: np.ndarray) -> np.ndarray:
    """The same face, blurred and recoloured."""
    blurred = cv2.GaussianBlur(crop, (0, 0), 2.0)
    return np.clip(blurred * np.array([1.1, 0.95, 0.85], np.float32), 0, 1)


def seam_energies(image: np.ndarray, faces: list[Face]) -> dict[str, float]:
    restored = {f.index: simulate_restoration(f.aligned.crop) for f in faces if f.aligned is not None}
    ours, rec = paste_faces(image, faces, restored)
    band = boundary_band(rec.artifacts["faces_matte"])
    matte_only, _ = paste_faces(image, faces, restored, PasteParams(color_match=False, grain_match=False))
    box_img = np.array(image, copy=True)
    box_alpha = np.zeros(image.shape[:2], np.float32)
    for f in faces:
        box_img, a = paste_feathered_box(box_img, f, restored[f.index])
        box_alpha = np.maximum(box_alpha, a)
    box_band = boundary_band(box_alpha)
    return {
        "ours_before": gradient_energy(image, band),
        "ours_after": gradient_energy(ours, band),
        "box_before": gradient_energy(image, box_band),
        "box_after": gradient_energy(box_img, box_band),
        "seam_ours": seam_energy(image, ours, band),
        "seam_matte_only": seam_energy(image, matte_only, band),
        "seam_box": seam_energy(image, box_img, box_band),
    }


def run(photos: Path, params: FacesParams) -> dict[str, Any]:
    manifest = read_manifest(photos)
    rows: list[dict[str, Any]] = []
    all_faces: list[tuple[str, Face]] = []
    images: dict[str, tuple[np.ndarray, list[Face]]] = {}
    find_faces(np.zeros((64, 64, 3), np.float32), params)  # load the models before timing
    for name, (lo, hi) in sorted(manifest.items()):
        image = load_image((photos / name).read_bytes()).pixels
        t0 = time.perf_counter()
        faces, record = find_faces(image, params)
        total = time.perf_counter() - t0
        sec = record.result["seconds"]
        t1 = time.perf_counter()
        _, paste_rec = paste_faces(image, faces, {f.index: f.aligned.crop for f in faces if f.aligned})
        paste_s = time.perf_counter() - t1
        matte = paste_rec.artifacts["faces_matte"] > 0.01
        rt = np.abs(_ - image)[matte] if faces else np.zeros(1)
        n = len(faces)
        row: dict[str, Any] = {
            "photo": name,
            "size": [int(image.shape[1]), int(image.shape[0])],
            "expected": [lo, hi],
            "found": n,
            "restorable": sum(f.restorable for f in faces),
            "within_range": lo <= n <= hi,
            "true_positives_lower_bound": min(n, hi),
            "missed": max(0, lo - n),
            "false_positives": max(0, n - hi),
            "faces": [
                {
                    "index": f.index,
                    "box": f.box,
                    "size_px": round(f.size_px, 1),
                    "detector": f.detector,
                    "score": round(f.score, 3),
                    "angle": f.angle,
                    "restorable": f.restorable,
                }
                for f in faces
            ],
            "seconds": {
                "total": round(total, 3),
                "detection": sec.get("total"),
                "hog": sec.get("hog"),
                "cnn_pass": sec.get("cnn"),
                "cnn_verify": sec.get("verify"),
                "landmarks": sec.get("landmarks"),
                "align": sec.get("align"),
                "embedding": sec.get("embed"),
                "matting": sec.get("matte"),
                "paste": round(paste_s, 3),
            },
            "detection": record.result["detection"],
            "roundtrip_abs_error": {"mean": float(rt.mean()), "p99": float(np.percentile(rt, 99))},
        }
        if faces:
            row["seam_energy"] = seam_energies(image, faces)
            row["identity_self_degraded"] = [
                round(identity_distance(f.embedding, embed_aligned_crop(degrade(f.aligned.crop))), 4)
                for f in faces
            ]
        rows.append(row)
        all_faces.extend((name, f) for f in faces)
        images[name] = (image, faces)
        print(f"{name:26s} {n} in [{lo},{hi}]  {total:5.1f}s  {sec}", flush=True)
    expected_min = sum(r["expected"][0] for r in rows)

    # group4_a and group4_b show the same four people (the embeddings pair them one to one), so their
    # cross pairs are neither "different people" nor counted blindly as the same: reported apart.
    def group4(name: str) -> bool:
        return name.startswith("group4")

    others = [
        identity_distance(a.embedding, b.embedding)
        for i, (pa, a) in enumerate(all_faces)
        for pb, b in all_faces[i + 1 :]
        if pa == pb or not (group4(pa) and group4(pb))
    ]
    cross = [
        min(identity_distance(a.embedding, b.embedding) for pb, b in all_faces if pb == "group4_b.png")
        for pa, a in all_faces
        if pa == "group4_a.jpg"
    ]
    same_photo = [
        identity_distance(a.embedding, b.embedding)
        for i, (pa, a) in enumerate(all_faces)
        for pb, b in all_faces[i + 1 :]
        if pa == pb
    ]
    selfs = [d for r in rows for d in r.get("identity_self_degraded", [])]
    seams = [r["seam_energy"] for r in rows if "seam_energy" in r]
    summary = {
        "photos": len(rows),
        "all_within_range": all(r["within_range"] for r in rows),
        "recall": sum(min(r["found"], r["expected"][0]) for r in rows) / max(1, expected_min),
        "false_positives": sum(r["false_positives"] for r in rows),
        "missed": sum(r["missed"] for r in rows),
        "faces": len(all_faces),
        "seconds_per_photo": {
            k: round(float(np.mean([r["seconds"][k] or 0.0 for r in rows])), 3) for k in rows[0]["seconds"]
        },
        "seconds_per_photo_max": round(max(r["seconds"]["total"] for r in rows), 3),
        "identity": {
            "self_degraded_max": round(max(selfs), 4) if selfs else None,
            "self_degraded_mean": round(float(np.mean(selfs)), 4) if selfs else None,
            "different_people_min": round(min(others), 4) if others else None,
            "different_people_mean": round(float(np.mean(others)), 4) if others else None,
            "same_photo_pairs_min": round(min(same_photo), 4) if same_photo else None,
            "group4_a_to_b_nearest": [round(d, 4) for d in cross],
        },
        "seam_energy_increase_mean": {
            "ours": round(float(np.mean([s["ours_after"] / s["ours_before"] for s in seams])), 4),
            "feathered_box": round(float(np.mean([s["box_after"] / s["box_before"] for s in seams])), 4),
        },
        "seam_energy_of_change_mean": {
            "ours": float(np.mean([s["seam_ours"] for s in seams])),
            "ours_matte_only_no_colour_match": float(np.mean([s["seam_matte_only"] for s in seams])),
            "feathered_box": float(np.mean([s["seam_box"] for s in seams])),
        },
    }
    return {"summary": summary, "photos": rows, "_images": images}


def contact_sheet(images: dict[str, tuple[np.ndarray, list[Face]]], path: Path, tile_h: int = 240) -> None:
    """Per photo: detections (box, landmarks, index), the matte over the photo, and the aligned crops."""
    from albumd.pipeline.faces import photo_matte

    rows = []
    for name, (image, faces) in sorted(images.items()):
        s = tile_h / image.shape[0]
        w = max(1, round(image.shape[1] * s))
        base = cv2.resize(image, (w, tile_h), interpolation=cv2.INTER_AREA)
        det = (base * 255).astype(np.uint8).copy()
        for f in faces:
            colour = (40, 220, 40) if f.restorable else (255, 150, 0)
            x, y, _bw, _bh = (np.array(f.box) * s).round().astype(int)
            # the rotated face square
            t = np.deg2rad(f.angle)
            rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
            half = f.size_px / 2
            sq = np.array([[-half, -half], [half, -half], [half, half], [-half, half]]) @ rot.T
            c = np.array(f.box[:2]) + np.array(f.box[2:]) / 2
            cv2.polylines(det, [((sq + c) * s).round().astype(np.int32)], True, colour, 2)
            for px, py in f.landmarks5 * s:
                cv2.circle(det, (round(px), round(py)), 2, (255, 0, 0), -1)
            cv2.putText(det, str(f.index), (x, max(12, y - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 2)
        matte = photo_matte(image.shape, faces) if faces else np.zeros(image.shape[:2], np.float32)
        m = cv2.resize(matte, (w, tile_h), interpolation=cv2.INTER_AREA)[..., None]
        over = (
            np.clip(base * 0.55 + m * np.array([0.9, 0.1, 0.1]) * 0.6 + m * base * 0.3, 0, 1) * 255
        ).astype(np.uint8)
        crops = []
        for f in faces[:4]:
            cw = tile_h // 2
            crop = cv2.resize(f.aligned.crop, (cw, cw), interpolation=cv2.INTER_AREA)
            mt = cv2.resize(f.matte_crop, (cw, cw), interpolation=cv2.INTER_AREA)
            crops.append(
                np.vstack(
                    [(crop * 255).astype(np.uint8), (np.repeat(mt[..., None], 3, 2) * 255).astype(np.uint8)]
                )
            )
        strip = np.hstack(crops) if crops else np.full((tile_h, tile_h // 2, 3), 40, np.uint8)
        label = np.full((22, 1, 3), 255, np.uint8)
        row = np.hstack(
            [det, np.full((tile_h, 4, 3), 255, np.uint8), over, np.full((tile_h, 4, 3), 255, np.uint8), strip]
        )
        label = np.full((22, row.shape[1], 3), 255, np.uint8)
        n_ok = sum(f.restorable for f in faces)
        cv2.putText(
            label,
            f"{name}: {len(faces)} faces ({n_ok} restorable)",
            (4, 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 0),
            1,
        )
        rows.append(np.vstack([label, row]))
    # two columns (each as wide as its widest row) to keep the sheet viewable
    half = (len(rows) + 1) // 2
    columns = []
    for part in (rows[:half], rows[half:]):
        width = max(r.shape[1] for r in part)
        columns.append(
            np.vstack(
                [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in part]
            )
        )
    height = max(c.shape[0] for c in columns)
    columns = [np.pad(c, ((0, height - c.shape[0]), (0, 0), (0, 0)), constant_values=255) for c in columns]
    sheet = np.hstack([columns[0], np.full((height, 10, 3), 255, np.uint8), columns[1]])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--contact-sheet", type=Path, default=None)
    args = ap.parse_args()
    result = run(args.photos, FacesParams())
    images = result.pop("_images")
    result["machine"] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "processor": platform.processor() or platform.machine(),
    }
    out = args.out or ROOT / "bench" / "results" / f"faces-{time.strftime('%Y%m%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"written {out}")
    if args.contact_sheet:
        contact_sheet(images, args.contact_sheet)
        print(f"written {args.contact_sheet}")
    return 0 if result["summary"]["all_within_range"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
