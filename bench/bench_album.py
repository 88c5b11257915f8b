"""End-to-end album throughput on the CPU: ``albumd run --once`` over an aged album, split into stages.

    python bench/bench_album.py [--quick] [--photos 40] [--long-side 1500]    # one album -> cpu-album.json
    python bench/bench_album.py --scaling [--quick]                           # -> cpu-album-scaling.json/.png
    python bench/bench_album.py --processes 1,2 [--photos 24]                 # -> cpu-album-processes.json

The album is made from scikit-image's sample photographs (astronaut, camera man, cat, coffee, rocket),
each aged once by ``albumd.pipeline.degrade.age_photo`` at 2000 px (cached in ``--cache``), then cut
into ``--photos`` distinct scans: a random 4:3 crop (landscape or portrait), mirrored every other photo,
a small exposure change, resized to ``--long-side`` and written as JPEG (quality 92; camera man as
greyscale) with an mtime an hour old (a pre-filled inbox). No model is configured, so the diffusion stage
is skipped as on a CPU-only install.

Timed: the wall time of the ``python -m albumd.daemon.cli run --once`` subprocess (interpreter start,
imports, migrations, ingest, processing, exit), and of the same command on an empty inbox (fixed cost).
From every ``<stem>.audit.json``: ``stages[].seconds`` (split, tone, faces.find, defects, denoise; skipped
stages count 0). Decode, the batch (GPU) stage -- skipped without a model -- and encode + archive write
(``process.write``: restored PNG, original copy, compare JPEG, artifacts, audit, fsyncs) are timed
in-process on a sample of up to 8 of the album's photos with the functions the worker calls. The audit's
``finished_at - started_at`` is not used for that: it spans the whole batch's CPU stages, not one photo.
Pipeline per photo = decode + stages + batch stage + encode/write; daemon overhead per photo = wall /
photos - pipeline per photo (target < 5 %), also given against the stage sum alone, and as the marginal
overhead once the fixed start/exit cost (the empty-inbox run) is taken out. ``--no-faces`` turns face
finding off (``pipeline.faces.enabled: false``).

``--scaling`` runs albums of 1, 4, 12, 24 photos at 1200 px, albums of 3 photos at 800..2400 px, and
albums of 3 photos at 1200 px with 0, 1, 2, 4, 8, 16 faces on each (``make_face_album``), and plots wall
time against photos and per-photo stage times against megapixels and against faces found.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from benchlib import RESULTS, config_dict, daemon_env, make_folders, pct, write_result

SAMPLES = ("astronaut", "camera", "chelsea", "coffee", "rocket")
BASE_LONG_SIDE = 2000
STAGES = ("split", "tone", "defects", "denoise")
# Audit stage records of the decode and the archive write (since the overhead fixes): reported on their
# own, not in the stage sum, which the in-process decode and encode/write timings are added to.
IO_STAGES = ("decode", "write")


def aged_bases(cache: Path) -> list[tuple[str, np.ndarray]]:
    """The five sample photos aged once at 2000 px long side (uint8 RGB), cached as .npy."""
    import cv2
    import skimage.data
    from albumd.pipeline.degrade import age_photo

    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(SAMPLES):
        path = cache / f"aged-{name}-{BASE_LONG_SIDE}.npy"
        if path.exists():
            out.append((name, np.load(path)))
            continue
        img = getattr(skimage.data, name)().astype(np.float32) / 255.0
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[:2]
        s = BASE_LONG_SIDE / max(h, w)
        img = cv2.resize(img[..., :3], (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
        aged = age_photo(np.clip(img, 0, 1), seed=i + 1)
        if name == "camera":
            aged = aged.mean(axis=2, keepdims=True).repeat(3, 2)
        u8 = (np.clip(aged, 0, 1) * 255 + 0.5).astype(np.uint8)
        np.save(path, u8)
        out.append((name, u8))
    return out


def make_album(
    inbox: Path, bases: list[tuple[str, np.ndarray]], n: int, long_side: int, seed: int = 0
) -> int:
    """n distinct aged scans in inbox/<album>/. Returns the bytes written."""
    import cv2
    from albumd.pipeline.imageio import encode_image

    album = inbox / "Family album 1958-1975"
    album.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    old = time.time() - 3600
    total = 0
    short = round(long_side * 3 / 4)
    for i in range(n):
        name, base = bases[i % len(bases)]
        portrait = i % 3 == 2
        ah, aw = (4, 3) if portrait else (3, 4)
        bh, bw = base.shape[:2]
        scale = rng.uniform(0.8, 1.0)
        cw = min(bw, int(bh * aw / ah)) * scale
        ch = cw * ah / aw
        x0 = int(rng.uniform(0, bw - cw))
        y0 = int(rng.uniform(0, bh - ch))
        crop = base[y0 : y0 + int(ch), x0 : x0 + int(cw)].astype(np.float32) / 255.0
        if i % 2:
            crop = crop[:, ::-1]
        size = (short, long_side) if portrait else (long_side, short)
        img = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if cw > size[0] else cv2.INTER_CUBIC)
        img = np.clip(img * rng.uniform(0.94, 1.06), 0, 1).astype(np.float32)
        grey = name == "camera"
        data = encode_image(img, "jpg", greyscale=grey, quality=92)
        path = album / f"IMG_{i:04d}.jpg"
        path.write_bytes(data)
        os.utime(path, (old, old))
        total += len(data)
    return total


# The astronaut's face in scikit-image's 512 px astronaut photo (x, y, w, h), as albumd's detector finds it.
ASTRONAUT_FACE_512 = (163, 68, 107, 106)


def make_face_album(inbox: Path, n: int, long_side: int, faces: int, seed: int = 0) -> int:
    """n landscape 4:3 scans with ``faces`` faces each, so that only the number of faces changes between
    albums, not the resolution or the kind of photo: tiles of the astronaut's head (mirrored every other
    tile) on a grid over a photo without people (coffee, rocket), the whole then aged by ``age_photo``
    (its own seed per scan). albumd finds every face up to 8 per scan at 1200 px. Returns the bytes."""
    import cv2
    import skimage.data
    from albumd.pipeline.degrade import age_photo
    from albumd.pipeline.imageio import encode_image

    astro = skimage.data.astronaut().astype(np.float32) / 255.0
    x, y, w, h = ASTRONAUT_FACE_512
    cx, cy, side = x + w / 2, y + h / 2, 2.2 * max(w, h)
    head = astro[int(cy - side / 2) : int(cy + side / 2), int(cx - side / 2) : int(cx + side / 2)]
    backs = [getattr(skimage.data, name)().astype(np.float32) / 255.0 for name in ("coffee", "rocket")]
    album = inbox / "Family album 1958-1975"
    album.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    old = time.time() - 3600
    W, H = long_side, round(long_side * 3 / 4)
    cols = max(1, int(np.ceil(np.sqrt(faces * 4 / 3))))
    rows = max(1, int(np.ceil(faces / cols)))
    cell_w, cell_h = W / cols, H / rows
    tile = int(0.9 * min(cell_w, cell_h))
    total = 0
    for i in range(n):
        back = backs[i % 2]
        bh, bw = back.shape[:2]
        cw = min(bw, bh * 4 / 3) * rng.uniform(0.8, 1.0)
        bx, by = int(rng.uniform(0, bw - cw)), int(rng.uniform(0, bh - cw * 3 / 4))
        crop = back[by : by + int(cw * 3 / 4), bx : bx + int(cw)]
        img = cv2.resize(crop, (W, H), interpolation=cv2.INTER_CUBIC)
        for f in range(faces):
            r, c = divmod(f, cols)
            src = np.ascontiguousarray(head[:, ::-1]) if (i + f) % 2 else head
            tx, ty = int(c * cell_w + (cell_w - tile) / 2), int(r * cell_h + (cell_h - tile) / 2)
            img[ty : ty + tile, tx : tx + tile] = cv2.resize(src, (tile, tile), interpolation=cv2.INTER_CUBIC)
        # clip first: cubic overshoot above 1.0 would make age_photo take the image for uint8 values
        aged = age_photo(np.clip(img, 0.0, 1.0), seed=seed * 1000 + i + 1)
        data = encode_image(aged, "jpg", quality=92)
        path = album / f"IMG_{i:04d}.jpg"
        path.write_bytes(data)
        os.utime(path, (old, old))
        total += len(data)
    return total


def run_once(
    base: Path,
    bases: list[tuple[str, np.ndarray]],
    n: int,
    long_side: int,
    faces: bool = True,
    faces_per_photo: int | None = None,
    config_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make the album, run the daemon once over it, and take its audit records apart. With
    ``faces_per_photo`` the album is :func:`make_face_album`'s (that many faces on every scan)."""

    folders = make_folders(base)
    if not n:
        nbytes = 0
    elif faces_per_photo is None:
        nbytes = make_album(folders["inbox"], bases, n, long_side)
    else:
        nbytes = make_face_album(folders["inbox"], n, long_side, faces_per_photo)
    config_path = base / "config.yaml"
    extra: dict[str, Any] = {} if faces else {"pipeline": {"faces": {"enabled": False}}}
    extra.update(config_extra or {})
    config_path.write_text(yaml.safe_dump(config_dict(folders, None, log_level="WARNING", **extra)))
    c0 = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "albumd.daemon.cli", "run", "--once"],
        env=daemon_env(config_path),
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    wall = time.perf_counter() - t0
    c1 = os.times()
    if proc.returncode != 0:
        raise RuntimeError(
            f"albumd run --once exited {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    audits = [json.loads(p.read_text()) for p in sorted(folders["archive"].rglob("*.audit.json"))]
    if len(audits) != n:
        raise RuntimeError(f"{len(audits)} audit records for {n} photos")
    stage_s: dict[str, list[float]] = defaultdict(list)
    io_s: dict[str, list[float]] = defaultdict(list)
    sums: list[float] = []
    span: list[float] = []
    for a in audits:
        per: dict[str, float] = defaultdict(float)
        for st in a["stages"]:
            if st["name"] in IO_STAGES:
                io_s[st["name"]].append(st["seconds"])
            elif st.get("skipped") is None:
                per[st["name"]] += st["seconds"]
        for name in set(STAGES) | set(per):
            stage_s[name].append(per.get(name, 0.0))
        sums.append(sum(per.values()))
        span.append(_ts(a["finished_at"]) - _ts(a["started_at"]))
    out: dict[str, Any] = {
        "photos": n,
        "faces_enabled": faces,
        "long_side": long_side,
        "inbox_mib": round(nbytes / 2**20, 1),
        "faces_per_photo_placed": faces_per_photo,
        "faces_found_per_photo": round(statistics.fmean(len(a.get("faces", [])) for a in audits), 3)
        if audits
        else 0.0,
        "wall_s": round(wall, 2),
        "daemon_cpu_s": round(
            (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system), 2
        ),
        "archive_mib": round(
            sum(f.stat().st_size for f in folders["archive"].rglob("*") if f.is_file()) / 2**20, 1
        ),
    }
    if n:
        decode_s, gpu_s, encode_write_s = _sample_io(folders, config_path, min(8, n))
        stages_mean = statistics.fmean(sums)
        span_mean = statistics.fmean(span)
        per_photo = wall / n
        pipe = decode_s + stages_mean + gpu_s + encode_write_s
        out.update(
            {
                "photos_per_min": round(60 * n / wall, 2),
                "wall_per_photo_s": round(per_photo, 3),
                "stages_per_photo_s": {k: round(statistics.fmean(v), 4) for k, v in sorted(stage_s.items())},
                "stage_sum_per_photo_s": round(stages_mean, 4),
                "stage_sum_p95_s": round(pct(sums, 0.95), 4),
                "decode_per_photo_s": round(decode_s, 4),
                "batch_stage_skipped_per_photo_s": round(gpu_s, 4),
                "encode_write_per_photo_s": round(encode_write_s, 4),
                "pipeline_per_photo_s": round(pipe, 4),
                "audit_started_to_finished_mean_s": round(span_mean, 3),
                "audit_io_stages_per_photo_s": {k: round(statistics.fmean(v), 4) for k, v in io_s.items()},
                "mpix": round(audits[0]["input"]["width"] * audits[0]["input"]["height"] / 1e6, 3),
                "diffusion": audits[0]["model"]["status"],
            }
        )
        out["overhead_vs_stages_per_photo_s"] = round(per_photo - stages_mean, 4)
        out["overhead_vs_stages_fraction"] = round((per_photo - stages_mean) / stages_mean, 4)
        out["daemon_overhead_per_photo_s"] = round(per_photo - pipe, 4)
        out["daemon_overhead_fraction"] = round((per_photo - pipe) / pipe, 4)
    return out


def _sample_io(folders: dict[str, Path], config_path: Path, k: int) -> tuple[float, float, float]:
    """Median decode, GPU-stage (skipped here) and encode+archive-write seconds of k photos, in-process.

    The same functions the worker calls: ``load_image``; ``prepare_photo``; the face stage (which only
    annotates the audit when no model is configured); ``process.write`` into a scratch archive with the
    real ``ArchiveWriter`` (restored PNG, original copy, compare JPEG, artifacts, audit, fsyncs).
    """
    from albumd.daemon.archive import ArchiveWriter
    from albumd.daemon.config import load_config
    from albumd.daemon.process import PhotoJob, Prepared, write
    from albumd.pipeline.imageio import load_image
    from albumd.pipeline.photo import prepare_photo

    config = load_config(config_path, environ={})
    scratch = folders["archive"].parent / "scratch-archive"
    scratch.mkdir(exist_ok=True)
    config = config.model_copy(update={"archive": scratch})
    writer = ArchiveWriter(scratch)
    gpu_stage, model_info = _gpu_stage(config)
    decode, gpu, enc = [], [], []
    for p in sorted(folders["inbox"].rglob("*.jpg"))[:k]:
        data = p.read_bytes()
        a = time.perf_counter()
        loaded = load_image(data, max_pixels=config.max_image_pixels)
        decode.append(time.perf_counter() - a)
        photo = prepare_photo(loaded, config.pipeline)
        prep = Prepared(PhotoJob(data, f"album/{p.name}", "album", f"album/{p.stem}"), photo)
        a = time.perf_counter()
        gpu_stage([prep])
        gpu.append(time.perf_counter() - a)
        a = time.perf_counter()
        write(prep, config, writer, model_info)
        enc.append(time.perf_counter() - a)
    shutil.rmtree(scratch, ignore_errors=True)
    return statistics.median(decode), statistics.median(gpu), statistics.median(enc)


def _gpu_stage(config: Any) -> tuple[Any, dict[str, Any]]:
    """The worker's batch (GPU) stage and model info, for the daemon version installed."""
    try:
        from albumd.daemon.face_stage import FaceStage

        faces = FaceStage.from_config(config)
        return faces.run, faces.model_info()
    except ImportError:  # the daemon before the face stage
        from albumd.daemon import worker

        return (
            lambda batch: worker.annotate_gpu_skipped(batch, config),  # type: ignore[attr-defined]
            worker.skipped_model_info(config),  # type: ignore[attr-defined]
        )


def _ts(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text).timestamp()


def main_album(args: argparse.Namespace, work: Path) -> None:
    n = args.photos or (6 if args.quick else 40)
    bases = aged_bases(args.cache)
    empty = run_once(work / "empty", bases, 0, args.long_side, not args.no_faces)
    print(f"empty inbox: run --once {empty['wall_s']} s (fixed cost)", flush=True)
    res = run_once(work / "album", bases, n, args.long_side, not args.no_faces)
    fixed = empty["wall_s"]
    res["fixed_cost_empty_inbox_s"] = fixed
    res["marginal_wall_per_photo_s"] = round((res["wall_s"] - fixed) / n, 4)
    res["marginal_daemon_overhead_fraction"] = round(
        ((res["wall_s"] - fixed) / n - res["pipeline_per_photo_s"]) / res["pipeline_per_photo_s"], 4
    )
    print(json.dumps(res, indent=1), flush=True)
    settings = {
        "quick": args.quick,
        "photos": n,
        "long_side": args.long_side,
        "format": "jpeg q92",
        "model": None,
    }
    path = write_result("album", settings, {"empty_inbox": empty, "album": res}, args.out, args.quick, work)
    print("wrote", path)
    _plot_album(res, args.out / f"cpu-album{'-quick' if args.quick else ''}.png")


def main_processes(args: argparse.Namespace, work: Path) -> None:
    """The same album with each ``prepare_processes`` value, in one run: speed-up against the first."""
    n = args.photos or (6 if args.quick else 24)
    bases = aged_bases(args.cache)
    values = [int(v) for v in args.processes.split(",")]
    runs = []
    for k in values:
        r = run_once(
            work / f"p{k}", bases, n, args.long_side, not args.no_faces, config_extra={"prepare_processes": k}
        )
        shutil.rmtree(work / f"p{k}", ignore_errors=True)
        r["prepare_processes"] = k
        r["speedup_vs_first"] = round(runs[0]["wall_s"] / r["wall_s"], 3) if runs else 1.0
        runs.append(r)
        speed = f"x{r['speedup_vs_first']} vs {values[0]}"
        print(f"prepare_processes {k}: {r['wall_s']} s wall, {r['photos_per_min']} photos/min, {speed}, "
              f"daemon CPU {r['daemon_cpu_s']} s", flush=True)  # fmt: skip
    settings = {"quick": args.quick, "photos": n, "long_side": args.long_side, "processes": values,
                "faces_enabled": not args.no_faces, "cpu_count": os.cpu_count()}  # fmt: skip
    path = write_result("album-processes", settings, {"runs": runs}, args.out, args.quick, work)
    print("wrote", path)


def _ordered(names: Any) -> list[str]:
    """Stage names in pipeline order, unknown ones last."""
    order = ["split", "tone", "faces.find", "defects", "denoise"]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def _plot_album(res: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = {"decode": res["decode_per_photo_s"]}
    parts.update({k: res["stages_per_photo_s"][k] for k in _ordered(res["stages_per_photo_s"])})
    parts["encode+write"] = max(0.0, res["encode_write_per_photo_s"])
    parts["daemon overhead"] = max(0.0, res["daemon_overhead_per_photo_s"])
    fig, ax = plt.subplots(figsize=(9, 2.8))
    left = 0.0
    for name, v in parts.items():
        ax.barh([0], [v], left=left, label=f"{name} {v:.2f} s")
        left += v
    ax.set_yticks([])
    ax.set_xlabel("seconds per photo")
    ax.set_title(
        f"{res['photos']} photos, {res['long_side']} px long side: {res['wall_per_photo_s']:.2f} s/photo wall"
    )
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    fig.subplots_adjust(left=0.03, right=0.97, top=0.85, bottom=0.5)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print("wrote", png)


def main_scaling(args: argparse.Namespace, work: Path) -> None:
    bases = aged_bases(args.cache)
    counts = [1, 3] if args.quick else [1, 4, 12, 24]
    sides = [600, 1000] if args.quick else [800, 1200, 1600, 2000, 2400]
    per_res = 2 if args.quick else 3
    count_side = 800 if args.quick else 1200
    face_counts = [0, 2] if args.quick else [0, 1, 2, 4, 8, 16]
    per_faces = 2 if args.quick else 3
    empty = run_once(work / "empty", bases, 0, count_side)
    by_count = []
    for n in counts:
        r = run_once(work / f"n{n}", bases, n, count_side)
        by_count.append(r)
        print(
            f"{n:3d} photos @ {count_side}px: {r['wall_s']} s wall, {r['wall_per_photo_s']} s/photo",
            flush=True,
        )
        shutil.rmtree(work / f"n{n}", ignore_errors=True)
    by_side = []
    for side in sides:
        r = run_once(work / f"s{side}", bases, per_res, side)
        by_side.append(r)
        print(f"{per_res} photos @ {side}px ({r['mpix']} MP): {r['wall_per_photo_s']} s/photo wall, "
              f"stages {r['stage_sum_per_photo_s']} s", flush=True)  # fmt: skip
        shutil.rmtree(work / f"s{side}", ignore_errors=True)
    by_faces = []
    for k in face_counts:
        r = run_once(work / f"f{k}", bases, per_faces, count_side, faces_per_photo=k)
        by_faces.append(r)
        found, wall, stages = r["faces_found_per_photo"], r["wall_per_photo_s"], r["stage_sum_per_photo_s"]
        print(f"{per_faces} photos @ {count_side}px, {k} faces ({found} found): {wall} s/photo wall, "
              f"stages {stages} s", flush=True)  # fmt: skip
        shutil.rmtree(work / f"f{k}", ignore_errors=True)
    fit = scaling_fit(by_count, by_side, by_faces)
    results = {"empty_inbox": empty, "by_photos": by_count, "by_resolution": by_side, "by_faces": by_faces,
               "fit": fit}  # fmt: skip
    settings = {"quick": args.quick, "photo_counts": counts, "count_long_side": count_side,
                "long_sides": sides, "photos_per_resolution": per_res, "faces_per_photo": face_counts,
                "photos_per_face_count": per_faces}  # fmt: skip
    path = write_result("album-scaling", settings, results, args.out, args.quick, work)
    print("wrote", path, json.dumps(fit))
    _plot_scaling(results, count_side, args.out / f"cpu-album-scaling{'-quick' if args.quick else ''}.png")


def scaling_fit(
    by_count: list[dict[str, Any]], by_side: list[dict[str, Any]], by_faces: list[dict[str, Any]]
) -> dict[str, Any]:
    """Straight lines through the three axes. Wall time, and the daemon's CPU seconds, which the other
    jobs on a shared machine do not inflate."""

    def line(xs: list[float], ys: list[float]) -> tuple[float, float]:
        if len(set(xs)) < 2:
            return (ys[0] / xs[0] if xs and xs[0] else 0.0), 0.0
        slope, icpt = np.polyfit(np.array(xs, float), np.array(ys, float), 1)
        return round(float(slope), 3), round(float(icpt), 3)

    n = [r["photos"] for r in by_count]
    fit: dict[str, Any] = {}
    slope, icpt = line(n, [r["wall_s"] for r in by_count])
    fit["wall_s_vs_photos"] = {"per_photo_s": slope, "fixed_s": icpt}
    slope, icpt = line(n, [r["daemon_cpu_s"] for r in by_count])
    fit["cpu_s_vs_photos"] = {"per_photo_s": slope, "fixed_s": icpt}
    mp = [r["mpix"] for r in by_side]
    slope, icpt = line(mp, [r["stage_sum_per_photo_s"] for r in by_side])
    fit["stage_s_per_photo_vs_mpix"] = {"s_per_mpix": slope, "fixed_s": icpt}
    slope, icpt = line(mp, [r["daemon_cpu_s"] / r["photos"] for r in by_side])
    fit["cpu_s_per_photo_vs_mpix"] = {"s_per_mpix": slope, "fixed_s": icpt}
    # Faces: fitted over the scans that have faces; a scan without any pays for the search in the other
    # three orientations (a print scanned sideways), so it is not the intercept of the line.
    with_faces = [r for r in by_faces if r["faces_found_per_photo"] > 0]
    fx = [r["faces_found_per_photo"] for r in with_faces]
    f_fit: dict[str, Any] = {}
    if len(set(fx)) > 1:
        for key, ys in (
            ("stage_sum", [r["stage_sum_per_photo_s"] for r in with_faces]),
            ("faces.find", [r["stages_per_photo_s"].get("faces.find", 0.0) for r in with_faces]),
            ("wall", [r["wall_per_photo_s"] for r in with_faces]),
            ("cpu", [r["daemon_cpu_s"] / r["photos"] for r in with_faces]),
        ):
            slope, icpt = line(fx, ys)
            f_fit[key] = {"s_per_face": slope, "fixed_s": icpt}
    fit["per_photo_s_vs_faces_found"] = f_fit
    return fit


def _plot_scaling(res: dict[str, Any], count_side: int, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if res.get("by_faces") else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.4))
    a1, a2 = axes[0], axes[1]
    bc = res["by_photos"]
    x = [r["photos"] for r in bc]
    a1.plot(x, [r["wall_s"] for r in bc], "o-", label="wall time of run --once")
    a1.plot(
        x,
        [r["photos"] * r["pipeline_per_photo_s"] for r in bc],
        "s--",
        label="sum of per-photo pipeline time",
    )
    if "daemon_cpu_s" in bc[0]:
        a1.plot(x, [r["daemon_cpu_s"] for r in bc], "^:", label="CPU seconds of the daemon")
    f = res["fit"]["wall_s_vs_photos"]
    a1.set_title(f"album size @ {count_side} px: {f['fixed_s']:.1f} s + {f['per_photo_s']:.2f} s/photo")
    a1.set_xlabel("photos in the album")
    a1.set_ylabel("seconds")
    a1.grid(alpha=0.3)
    a1.legend()
    bs = res["by_resolution"]
    _stacked(a2, bs, [r["mpix"] for r in bs])
    a2.set_xlabel("megapixels per scan (long side " + ", ".join(str(r["long_side"]) for r in bs) + " px)")
    a2.set_title("scan resolution (stacked: where the time goes)")
    if panels == 3:
        bf = res["by_faces"]
        _stacked(axes[2], bf, [r["faces_found_per_photo"] for r in bf])
        axes[2].set_xlabel(f"faces found per scan ({count_side} px; placed: "
                           + ", ".join(str(r["faces_per_photo_placed"]) for r in bf) + ")")  # fmt: skip
        axes[2].set_title("faces per photo (no model: CPU stages only)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print("wrote", png)


def _stacked(ax: Any, rows: list[dict[str, Any]], xs: list[float]) -> None:
    """Per-photo seconds by stage, stacked, against ``xs``, with the wall time per photo on top."""
    bottom = np.zeros(len(rows))
    names = _ordered({k for r in rows for k in r["stages_per_photo_s"]})
    for name in ("decode", *names, "encode+write", "daemon overhead"):
        if name in names:
            v = np.array([r["stages_per_photo_s"].get(name, 0.0) for r in rows])
        elif name == "decode":
            v = np.array([r["decode_per_photo_s"] for r in rows])
        elif name == "encode+write":
            v = np.array([max(0.0, r["encode_write_per_photo_s"]) for r in rows])
        else:
            v = np.array([max(0.0, r["daemon_overhead_per_photo_s"]) for r in rows])
        ax.fill_between(xs, bottom, bottom + v, label=name, alpha=0.8)
        bottom = bottom + v
    ax.plot(xs, [r["wall_per_photo_s"] for r in rows], "k.-", label="wall / photo")
    ax.set_ylabel("seconds per photo")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="6 photos (or a tiny scaling sweep)")
    ap.add_argument(
        "--no-faces",
        action="store_true",
        help="pipeline.faces.enabled: false (the pipeline without face finding)",
    )
    ap.add_argument("--scaling", action="store_true", help="sweep album size and scan resolution instead")
    ap.add_argument(
        "--photos",
        type=int,
        default=None,
        help="photos in the album (default 40; --quick 6; the full album: 200)",
    )
    ap.add_argument("--long-side", type=int, default=1500, help="scan size, long side in px")
    ap.add_argument(
        "--processes",
        default=None,
        help="e.g. 1,2: the album once per prepare_processes value instead (-> cpu-album-processes.json)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "albumd-bench-cache")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="albumd-bench-album-"))
    try:
        if args.processes:
            main_processes(args, work)
        else:
            (main_scaling if args.scaling else main_album)(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
