"""Time the old-photo CPU stages on a 3000x2000 scan: split -> per print tone -> defects -> denoise.

Run: ``python bench/bench_oldphoto_stages.py`` (writes bench/results/oldphoto-stages.json).
The scan is a synthetic flatbed (2 aged prints on scanner white) and, separately, one aged photo filling
the whole 3000x2000 frame (the no-split case); each is timed over ``--repeats`` runs (median reported).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from albumd.pipeline.defects import DefectParams, repair_defects
from albumd.pipeline.degrade import age_photo, make_flatbed_scan
from albumd.pipeline.denoise import DenoiseParams, denoise_sharpen
from albumd.pipeline.split import SplitParams, split_prints
from albumd.pipeline.tone import ToneParams, correct_tone


def _photo(name: str, size: tuple[int, int]) -> np.ndarray:
    img = getattr(skimage.data, name)().astype(np.float32) / 255.0
    return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)


def run_once(scan: np.ndarray) -> dict[str, float]:
    times: dict[str, float] = {"split": 0.0, "tone": 0.0, "defects": 0.0, "denoise": 0.0}
    t0 = time.perf_counter()
    cuts, rec = split_prints(scan, SplitParams())
    times["split"] = rec.seconds
    for cut in cuts:
        img, r = correct_tone(cut.image, ToneParams())
        times["tone"] += r.seconds
        img, r = repair_defects(img, DefectParams())
        times["defects"] += r.seconds
        img, r = denoise_sharpen(img, DenoiseParams())
        times["denoise"] += r.seconds
    times["total"] = time.perf_counter() - t0
    times["prints"] = len(cuts)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    prints = [age_photo(_photo("astronaut", (1100, 1100)), 1), age_photo(_photo("coffee", (1300, 870)), 2)]
    flatbed, _ = make_flatbed_scan(prints, [4.0, -7.0], rng, size=(3000, 2000))
    full = age_photo(_photo("chelsea", (3000, 2000)), 3)
    cases = {"flatbed_2_prints_3000x2000": flatbed, "single_photo_3000x2000": full}
    result: dict[str, object] = {
        "machine": {
            "host": socket.gethostname(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "opencv_threads": cv2.getNumThreads(),
        },
        "repeats": args.repeats,
        "cases": {},
    }
    for name, scan in cases.items():
        runs = [run_once(scan) for _ in range(args.repeats)]
        med = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
        result["cases"][name] = med  # type: ignore[index]
        print(name, med)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "oldphoto-stages.json"
    path.write_text(json.dumps(result, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
