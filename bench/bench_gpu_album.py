"""Is the GPU kept busy? The real daemon over an album with a model configured, the GPU stage timed.

    python bench/bench_gpu_album.py                          # CUDA: full-size random SD 1.5 folder, fp16
    python bench/bench_gpu_album.py --tiny --device cpu      # the harness on a CPU (tiny model)
    python bench/bench_gpu_album.py --model /path/to/sd15    # real weights

Runs ``Daemon(config, once=True).run()`` -- watcher-less ingest, the worker thread with its prepare-ahead
pool (the next batch's claim and CPU stages run while the GPU restores this batch's faces), archive writes
-- in this process, on an album of ``--photos`` scans with ``--faces-per-photo`` faces each
(``bench_album.make_face_album``), with ``model.path`` set: the tiny random-weight model folder, or on CUDA
the full-size SD 1.5 with random weights saved as a diffusers folder (same FLOPs as real weights).

Timed without touching the daemon's code: every face-restore call (``restore_batch`` as the identity
guard calls it) with CUDA events on CUDA and the wall clock on the CPU, and the worker's batch steps
(claim + CPU stages of a batch, its GPU stage, its archive writes) with the wall clock.
**busy fraction** = time inside the restore calls / wall time, over the window after warm-up: from the
end of the first batch's GPU stage (that batch has nothing to overlap with, and pays for cuDNN choices and
compilation) to the end of the last batch's GPU stage; also given up to the daemon's exit. On a CPU with
the tiny model this proves the harness only: the "GPU" is the CPU the stages also run on.
Writes ``bench/results/<date>-gpu-album-<device>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from bench_album import make_face_album
from bench_gpu_faces import _device_slug
from benchlib import config_dict, machine_info, make_folders

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Span:
    what: str
    start: float
    end: float = 0.0
    thread: str = ""
    items: int = 0
    gpu_s: float | None = None  # from CUDA events (restore calls on CUDA)
    events: Any = None


@dataclass
class Timeline:
    cuda: bool
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, span: Span) -> None:
        with self.lock:
            self.spans.append(span)

    def of(self, what: str) -> list[Span]:
        return sorted((s for s in self.spans if s.what == what), key=lambda s: s.start)


@contextmanager
def instrumented(timeline: Timeline) -> Iterator[None]:
    """Wrap the face-restore calls and the worker's batch steps with timers; undone on exit."""
    import albumd.pipeline.diffusion.guard as guard
    from albumd.daemon.worker import Worker

    Counter = Callable[[tuple[Any, ...], Any], int]

    def timed(what: str, fn: Callable[..., Any], count: Counter) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            span = Span(what, time.perf_counter(), thread=threading.current_thread().name)
            if timeline.cuda and what == "restore":
                import torch

                ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                ev[0].record()
                span.events = ev
            result = None
            try:
                result = fn(*args, **kwargs)
                return result
            finally:
                if span.events is not None:
                    span.events[1].record()
                span.end = time.perf_counter()
                span.items = count(args, result)
                timeline.add(span)

        return wrapper

    originals = {
        "restore": (guard, "restore_batch"),
        "run_batch": (Worker, "run_batch"),
        "prepare": (Worker, "_claim_and_prepare"),
        "gpu_stage": (Worker, "_gpu_stage"),
        "write": (Worker, "_write"),
    }
    counters: dict[str, Counter] = {
        "restore": lambda a, r: len(a[1]),
        "run_batch": lambda a, r: int(r or 0),
        "prepare": lambda a, r: len(r[0]) if r else 0,
        "gpu_stage": lambda a, r: len(a[1]),
        "write": lambda a, r: 1,
    }
    saved = {k: getattr(obj, name) for k, (obj, name) in originals.items()}
    try:
        for k, (obj, name) in originals.items():
            setattr(obj, name, timed(k, saved[k], counters[k]))
        yield
    finally:
        for k, (obj, name) in originals.items():
            setattr(obj, name, saved[k])


def busy(timeline: Timeline, window: tuple[float, float]) -> float:
    """Seconds of restore calls inside ``window`` (CUDA-event time where there is one, clipped)."""
    lo, hi = window
    total = 0.0
    for s in timeline.of("restore"):
        a, b = max(s.start, lo), min(s.end, hi)
        if b <= a:
            continue
        dur = s.gpu_s if s.gpu_s is not None else s.end - s.start
        total += dur * (b - a) / (s.end - s.start)
    return total


def analyse(timeline: Timeline, t_start: float, t_end: float) -> dict[str, Any]:
    if timeline.cuda:
        import torch

        torch.cuda.synchronize()
        for s in timeline.of("restore"):
            s.gpu_s = s.events[0].elapsed_time(s.events[1]) / 1000.0
    batches = [b for b in timeline.of("run_batch") if b.items > 0]
    stages = timeline.of("gpu_stage")
    preps = [p for p in timeline.of("prepare") if p.items > 0]
    writes = timeline.of("write")
    restores = timeline.of("restore")
    rows = []
    for i, b in enumerate(batches):
        g = next((s for s in stages if b.start <= s.start <= b.end), None)
        mine = [r for r in restores if b.start <= r.start <= b.end]
        rows.append(
            {
                "batch": i,
                "photos": b.items,
                "prepare_s": round(preps[i].end - preps[i].start, 3) if i < len(preps) else None,
                "prepare_thread": preps[i].thread if i < len(preps) else None,
                "wait_before_gpu_s": round((g.start if g else b.end) - b.start, 3),
                "gpu_stage_s": round(g.end - g.start, 3) if g else 0.0,
                "restore_calls": len(mine),
                "face_restores": sum(r.items for r in mine),
                "restore_s": round(sum(r.gpu_s if r.gpu_s is not None else r.end - r.start for r in mine), 3),
                "write_s": round(sum(w.end - w.start for w in writes if b.start <= w.start <= b.end), 3),
                "batch_s": round(b.end - b.start, 3),
            }
        )
    out: dict[str, Any] = {"batches": rows, "wall_s": round(t_end - t_start, 3)}
    if len(stages) >= 2:
        warm_end, last_end = stages[0].end, stages[-1].end
        win = last_end - warm_end
        win_busy = busy(timeline, (warm_end, last_end))
        exit_busy = busy(timeline, (warm_end, t_end))
        out.update(
            {
                "window": "end of the first batch's GPU stage .. end of the last batch's GPU stage",
                "window_s": round(win, 3),
                "busy_s": round(win_busy, 3),
                "busy_fraction": round(win_busy / win, 4) if win > 0 else None,
                "busy_fraction_to_exit": round(exit_busy / (t_end - warm_end), 4),
            }
        )
    else:
        out.update({"window": None, "busy_fraction": None, "busy_fraction_to_exit": None,
                    "note": "fewer than two batches ran: no window after warm-up"})  # fmt: skip
    whole = busy(timeline, (t_start, t_end))
    out["busy_fraction_whole_run"] = round(whole / (t_end - t_start), 4)
    out["restore_s_total"] = round(whole, 3)
    out["face_restores"] = sum(r.items for r in restores)  # guard retries included
    steady = rows[1:]
    if steady:
        # Where a steady batch's GPU idle time goes: the writes run on the worker thread after the GPU
        # stage, and the GPU stage of batch k+1 cannot start before batch k+1's CPU stages are done.
        gpu = statistics.fmean(r["restore_s"] for r in steady)
        out["steady_state"] = {
            "prepare_s_per_batch": round(statistics.fmean(r["prepare_s"] or 0.0 for r in steady), 3),
            "restore_s_per_batch": round(gpu, 3),
            "gpu_stage_s_per_batch": round(statistics.fmean(r["gpu_stage_s"] for r in steady), 3),
            "write_s_per_batch": round(statistics.fmean(r["write_s"] for r in steady), 3),
            "wait_before_gpu_s_per_batch": round(statistics.fmean(r["wait_before_gpu_s"] for r in steady), 3),
        }
    return out


def _model_folder(args: argparse.Namespace, work: Path) -> Path:
    if args.model is not None:
        return args.model
    if args.tiny:
        from albumd.pipeline.diffusion.tiny import save_tiny_model

        return save_tiny_model(work / "tiny", seed=1234).folder
    import torch
    from albumd.pipeline.diffusion.tiny import build_sd15_random

    # built on the GPU (fast random init), saved in fp16 as a diffusers folder (safetensors, ~2 GB)
    pipe = build_sd15_random(seed=0, device=args.device, dtype=torch.float16)
    folder = work / "sd15-random"
    pipe.save_pretrained(str(folder), safe_serialization=True)
    del pipe
    torch.cuda.empty_cache()
    return folder


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny random-weight model (CPU harness check)")
    ap.add_argument("--model", type=Path, default=None, help="real SD 1.5 weights instead of random ones")
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--faces-per-photo", type=int, default=2)
    ap.add_argument("--long-side", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=8, help="photos claimed per batch (config batch_size)")
    ap.add_argument(
        "--crop",
        type=int,
        default=0,
        help="face crop size, faces.align and diffusion (default 512; 160 with --tiny, whose UNet is far "
        "slower per pixel on a CPU than it is worth for a harness check)",
    )
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--strength", type=float, default=0.35)
    ap.add_argument("--compile", action="store_true", help="model.compile: true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument(
        "--quick", action="store_true", help="4 photos, 1 face each, 800 px, 160 px crops, 6 steps"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.photos, args.faces_per_photo, args.long_side, args.batch_size = 4, 1, 800, 2
        args.crop, args.steps, args.strength = 160, 6, 0.5
    args.crop = args.crop or (160 if args.tiny else 512)
    device = torch.device(args.device)
    if device.type != "cuda" and not args.tiny and args.model is None:
        ap.error("the full-size model on a CPU would take hours: use --tiny (or --model) off CUDA")
    if args.threads:
        torch.set_num_threads(args.threads)

    from albumd.daemon.config import load_config
    from albumd.daemon.service import Daemon

    work = Path(tempfile.mkdtemp(prefix="albumd-bench-gpu-album-"))
    try:
        folders = make_folders(work / "run")
        t0 = time.perf_counter()
        inbox_bytes = make_face_album(folders["inbox"], args.photos, args.long_side, args.faces_per_photo)
        model_path = _model_folder(args, work)
        setup_s = time.perf_counter() - t0
        cfg = config_dict(
            folders,
            None,
            batch_size=args.batch_size,
            model={"path": str(model_path), "device": device.type, "compile": args.compile},
            pipeline={
                "faces": {"align": {"crop_size": args.crop}},
                "diffusion": {"steps": args.steps, "strength": args.strength, "crop_size": args.crop},
            },
        )
        config_path = work / "config.yaml"
        config_path.write_text(yaml.safe_dump(cfg))
        config = load_config(config_path, environ={})
        timeline = Timeline(cuda=device.type == "cuda")
        with instrumented(timeline):
            t_start = time.perf_counter()
            rc = Daemon(config, once=True).run()
            t_end = time.perf_counter()
        if rc != 0:
            raise SystemExit(f"the daemon exited {rc}")
        audits = [json.loads(p.read_text()) for p in sorted(folders["archive"].rglob("*.audit.json"))]
        if len(audits) != args.photos:
            raise SystemExit(f"{len(audits)} audit records for {args.photos} photos")
        res = analyse(timeline, t_start, t_end)
        res["faces_found_per_photo"] = round(statistics.fmean(len(a.get("faces", [])) for a in audits), 3)
        res["diffusion_status"] = sorted({a["model"]["status"] for a in audits})
        res["photos_per_min"] = round(60 * args.photos / res["wall_s"], 2)
        if res["face_restores"] == 0:
            raise SystemExit("no face went through the restore: nothing measured")
        import diffusers

        result = {
            "benchmark": "bench_gpu_album",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": "python bench/bench_gpu_album.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "device": args.device,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "model": str(args.model)
            if args.model
            else ("tiny random-weight SD1.5" if args.tiny else "SD1.5 random weights, fp16 diffusers folder"),
            "timing": "CUDA events around each restore call" if device.type == "cuda" else "wall clock",
            "settings": {
                "photos": args.photos,
                "faces_per_photo": args.faces_per_photo,
                "long_side": args.long_side,
                "batch_size": args.batch_size,
                "crop": args.crop,
                "steps": args.steps,
                "strength": args.strength,
                "compile": args.compile,
                "threads": torch.get_num_threads(),
                "quick": args.quick,
            },
            "inbox_mib": round(inbox_bytes / 2**20, 2),
            "setup_s": round(setup_s, 2),
            "target_busy_fraction": 0.9,
            **res,
            "machine": machine_info(work),
            "versions": {
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "cuda": torch.version.cuda,
            },
        }
        if device.type != "cuda":
            result["note"] = (
                "CPU run with the tiny model: proves the harness only. The 'GPU' stage runs on the same "
                "cores as the CPU stages it should overlap with, so the busy fraction says nothing of a GPU"
            )
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"{dt.date.today().isoformat()}-gpu-album-{_device_slug(device, result['device_name'] or '')}"
        out = args.out / f"{name}{'-quick' if args.quick else ''}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"{args.photos} photos, {res['face_restores']} face restores in {res['wall_s']} s; busy fraction "
            f"{res['busy_fraction']} (to exit {res['busy_fraction_to_exit']}, whole run "
            f"{res['busy_fraction_whole_run']})"
        )
        print(f"wrote {out}")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
