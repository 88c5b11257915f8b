"""PNG encoding of the restored photo: seconds and bytes per ``png_compress_level``.

    python bench/bench_png.py [--quick] [--out DIR] [--long-side 1500] [--levels 0,1,3,6,9]

The five aged sample scans of ``bench_album.py`` (astronaut, camera man greyscale, cat, coffee, rocket,
aged once at 2000 px and cached) are cut to 4:3 at ``--long-side`` (1500x1125 by default, as in the album
benchmark), written as JPEG quality 92, decoded and restored by the CPU pipeline (face finding off: it
does not change the pixels much and takes most of the time), and the restored image is then encoded as
the worker encodes it (``encode_image(..., "png", png_compress_level=L)``, 8-bit) at every level, three
times each (median). Every level's PNG is decoded and compared with level 0's pixels: lossless at every
level is checked, not assumed. Writes ``cpu-png.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_album import aged_bases
from benchlib import RESULTS, write_result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two photos, levels 1, 3, 6")
    ap.add_argument("--long-side", type=int, default=1500)
    ap.add_argument("--levels", default=None, help="comma-separated zlib levels (default 0,1,2,3,4,6,9)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "albumd-aged-cache")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    import cv2
    from albumd.pipeline.imageio import encode_image, load_image
    from albumd.pipeline.photo import PipelineSettings, prepare_photo

    levels = [int(v) for v in (args.levels or ("1,3,6" if args.quick else "0,1,2,3,4,6,9")).split(",")]
    settings = PipelineSettings.model_validate({"faces": {"enabled": False}})
    bases = aged_bases(args.cache)[: 2 if args.quick else None]
    w, h = args.long_side, round(args.long_side * 3 / 4)
    per_level: dict[int, list[tuple[float, int]]] = {lvl: [] for lvl in levels}
    photos = []
    for name, u8 in bases:
        bh, bw = u8.shape[:2]
        cw = min(bw, bh * 4 // 3)
        crop = u8[: cw * 3 // 4, :cw]
        img = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        grey = name == "camera"
        loaded = load_image(encode_image(img, "jpg", quality=92, greyscale=grey))
        restored = prepare_photo(loaded, settings).prints[0].image
        reference = load_image(encode_image(restored, "png", greyscale=grey, png_compress_level=0)).pixels
        for lvl in levels:
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                data = encode_image(restored, "png", greyscale=grey, png_compress_level=lvl)
                times.append(time.perf_counter() - t0)
            if not np.array_equal(load_image(data).pixels, reference):
                raise RuntimeError(f"{name}: level {lvl} did not decode to the same pixels")
            per_level[lvl].append((statistics.median(times), len(data)))
        photos.append({"name": name, "width": w, "height": h, "greyscale": grey})
        print(f"{name}: " + ", ".join(f"L{lvl} {per_level[lvl][-1][0]:.3f} s" for lvl in levels), flush=True)
    base = 6 if 6 in levels else levels[-1]
    base_s = statistics.fmean(s for s, _ in per_level[base])
    base_b = statistics.fmean(b for _, b in per_level[base])
    results: dict[str, Any] = {"photos": photos, "levels": {}}
    for lvl in levels:
        secs = statistics.fmean(s for s, _ in per_level[lvl])
        size = statistics.fmean(b for _, b in per_level[lvl])
        results["levels"][str(lvl)] = {
            "seconds_mean": round(secs, 4),
            "bytes_mean": round(size),
            f"seconds_vs_level_{base}": round(secs / base_s, 3),
            f"bytes_vs_level_{base}": round(size / base_b, 4),
            "lossless": True,
        }
        change = size / base_b - 1
        print(f"level {lvl}: {secs:.3f} s, {size / 2**20:.2f} MiB ({change:+.1%} vs {base})", flush=True)
    settings_doc = {"quick": args.quick, "long_side": args.long_side, "levels": levels, "bit_depth": 8}
    path = write_result("png", settings_doc, results, args.out, args.quick, args.cache)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
