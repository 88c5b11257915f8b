"""Scheduling latency: from a file becoming stable in the inbox to a worker claiming its job.

    python bench/bench_latency.py [--quick] [--out DIR] [--files 20] [--stable-s 0.5]

Runs the real daemon as a subprocess (``python -m albumd.daemon.cli run``, ``ALBUMD_CONFIG`` pointing at a
generated config; ``watcher.stable_s`` small, native inotify watcher, no processing window) on SQLite and
on PostgreSQL. With the daemon idle, it drops one small real photo (256x192 PNG, unique content) at a
time into an existing album folder, waits until its job is finished, pauses a random 0.2-1.0 s, and
repeats. Per file, from the file's mtime (the last write) and the job row's ``created_at`` and
``started_at``:

* ``stable_to_queued`` = created_at - (mtime + stable_s): detection, the stability re-check, sha256, enqueue;
* ``queued_to_claimed`` = started_at - created_at: how long the queued job waits for the idle worker;
* ``stable_to_claimed`` = started_at - (mtime + stable_s): the scheduling latency (total minus stable_s);
* ``write_to_claimed`` = started_at - mtime.

Writes ``cpu-latency.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from benchlib import RESULTS, config_dict, daemon_env, database, make_folders, pct, write_result


def _photo(i: int) -> bytes:
    from albumd.pipeline.imageio import encode_image

    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:192, 0:256] / 256.0
    img = np.stack([x, y, 0.5 + 0.0 * x], axis=2) * 0.7 + rng.uniform(0, 0.3, (192, 256, 3))
    return encode_image(img.astype(np.float32), "png")


def _wait(pred: Any, timeout: float, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError("timed out")


def run_backend(backend: str, files: int, stable_s: float, base: Path) -> dict[str, Any]:
    import sqlalchemy as sa

    folders = make_folders(base)
    album = folders["inbox"] / "album"
    album.mkdir()
    with database(backend, folders["state"]) as url:
        cfg = config_dict(
            folders,
            url if backend == "postgres" else None,
            log_level="INFO",
            log_format="json",
            watcher={"stable_s": stable_s, "mode": "native"},
        )
        config_path = base / "config.yaml"
        config_path.write_text(yaml.safe_dump(cfg))
        log_path = base / "daemon.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed below
        t_start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "albumd.daemon.cli", "run"],
            env=daemon_env(config_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait(lambda: "daemon.ready" in log_path.read_text() or proc.poll() is not None, 120, 0.05)
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {log_path.read_text()[-2000:]}")
            startup_s = time.perf_counter() - t_start
            time.sleep(1.5)  # let the worker thread reach its idle poll
            read_url = url if backend == "postgres" else f"sqlite:///{folders['state'] / 'albumd.db'}"
            engine = sa.create_engine(read_url)
            rows: list[dict[str, Any]] = []
            q = sa.text("SELECT created_at, started_at, state FROM jobs WHERE path = :p")
            rnd = random.Random(0)
            for i in range(files):
                rel = f"album/drop {i:03d}.png"
                path = folders["inbox"] / rel
                path.write_bytes(_photo(i))
                mtime = path.stat().st_mtime_ns / 1e9

                def row(rel: str = rel) -> Any:
                    with engine.connect() as conn:
                        r = conn.execute(q, {"p": rel}).first()
                    return r if r is not None and r.state in ("done", "failed") else None

                r = _wait(row, 60)
                created, started = _ts(r.created_at), _ts(r.started_at)
                rows.append(
                    {
                        "write_to_queued": created - mtime,
                        "stable_to_queued": created - mtime - stable_s,
                        "queued_to_claimed": started - created,
                        "stable_to_claimed": started - mtime - stable_s,
                        "write_to_claimed": started - mtime,
                        "state": r.state,
                    }
                )
                time.sleep(rnd.uniform(0.2, 1.0))
            engine.dispose()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        events = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    summary: dict[str, Any] = {
        "files": files,
        "stable_s": stable_s,
        "daemon_startup_to_ready_s": round(startup_s, 2),
        "exit_code": proc.returncode,
        "states": sorted({r["state"] for r in rows}),
        "warnings": [e for e in events if e.get("level") in ("warning", "error")][:5],
    }
    for key in (
        "write_to_queued",
        "stable_to_queued",
        "queued_to_claimed",
        "stable_to_claimed",
        "write_to_claimed",
    ):
        vals = [r[key] for r in rows]
        summary[key] = {
            "mean": round(statistics.fmean(vals), 3),
            "p50": round(pct(vals, 0.5), 3),
            "p95": round(pct(vals, 0.95), 3),
            "min": round(min(vals), 3),
            "max": round(max(vals), 3),
        }
    summary["samples"] = [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows
    ]
    return summary


def _ts(value: Any) -> float:
    """A DB timestamp (datetime, or SQLite text without zone, always UTC) as epoch seconds."""
    import datetime as dt

    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return float(value.timestamp())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 files per backend")
    ap.add_argument("--files", type=int, default=None, help="files per backend (default 20)")
    ap.add_argument("--stable-s", type=float, default=0.5)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    files = args.files or (5 if args.quick else 20)
    backends = args.backends.split(",")
    work = Path(tempfile.mkdtemp(prefix="albumd-bench-latency-"))
    results: dict[str, Any] = {}
    try:
        for backend in backends:
            res = run_backend(backend, files, args.stable_s, work / backend)
            results[backend] = res
            print(
                f"{backend:8s}: stable->claimed p50 {res['stable_to_claimed']['p50']:.3f} s "
                f"p95 {res['stable_to_claimed']['p95']:.3f} s (stable->queued p50 "
                f"{res['stable_to_queued']['p50']:.3f} s, "
                f"queued->claimed p50 {res['queued_to_claimed']['p50']:.3f} s; "
                f"write->claimed p50 {res['write_to_claimed']['p50']:.3f} s with stable_s={args.stable_s})",
                flush=True,
            )
        settings = {
            "quick": args.quick,
            "files": files,
            "stable_s": args.stable_s,
            "backends": backends,
            "watcher_mode": "native",
            "daemon_tick_s": 0.25,
            "worker_idle_poll_s": 1.0,
            # since the overhead fixes (docs/performance.md) the daemon wakes its idle worker on enqueue
            "worker_woken_on_enqueue": True,
        }
        path = write_result("latency", settings, results, args.out, args.quick, work)
        print("wrote", path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
