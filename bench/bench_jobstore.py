"""Job store throughput: claims and completions per second, SQLite and PostgreSQL, 1 and 4 worker processes.

    python bench/bench_jobstore.py [--quick] [--out DIR] [--jobs 2000] [--batch 8]

Each case gets a fresh database with ``--jobs`` queued jobs (bulk-inserted in one transaction, not
timed). Then W worker processes (``multiprocessing``, spawn), each with its own engine and ``JobStore``
(its own worker id), start together and loop ``claim(batch)`` -> ``complete(id)`` for every claimed job
until a claim comes back empty. Two modes:

* ``bare``: only claim + complete (the queue's own cost);
* ``worker``: the database writes the real ``Worker.run_batch`` makes around each batch (``worker_status``
  processing/idle, and ``set_progress`` three times per job: decode, cpu stages, writing archive), no
  pipeline -- the daemon's per-photo database overhead.

Every job must be completed exactly once (checked: no job claimed twice). Writes ``cpu-jobstore.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import RESULTS, database, pct, rate, write_result


def _fill(url: str, n: int) -> None:
    """n queued jobs with one source each, inserted in one transaction (setup, not timed)."""
    from albumd.daemon import db
    from albumd.daemon.models import Job, JobSource, JobState, utcnow
    from sqlalchemy import insert

    engine = db.make_engine(url)
    db.upgrade(engine)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(Job),
            [
                {
                    "id": i + 1,
                    "sha256": f"{i:064x}",
                    "album": "bench",
                    "path": f"bench/p{i:05d}.jpg",
                    "bytes": 1000,
                    "archive_key": f"bench/p{i:05d}",
                    "state": JobState.QUEUED,
                    "attempts": 0,
                    "crashes": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n)
            ],
        )
        conn.execute(
            insert(JobSource),
            [
                {"job_id": i + 1, "path": f"bench/p{i:05d}.jpg", "size": 1000, "mtime_ns": i, "seen_at": now}
                for i in range(n)
            ],
        )
    engine.dispose()


def _worker(url: str, wid: int, batch: int, mode: str, start: Any, ready: Any, out: Any) -> None:
    from albumd.daemon import db
    from albumd.daemon.jobstore import JobStore

    engine = db.make_engine(url)
    store = JobStore(db.make_sessionmaker(engine), worker_id=f"bench-{wid}")
    store.register_worker("idle")
    store.counts()  # open a pooled connection before the clock starts
    ready.put(wid)
    ids: list[int] = []
    claim_ms: list[float] = []
    complete_ms: list[float] = []
    start.wait()
    c0 = time.process_time()
    t0 = time.perf_counter()
    claims = 0
    while True:
        a = time.perf_counter()
        jobs = store.claim(batch, 600)
        claim_ms.append((time.perf_counter() - a) * 1e3)
        if not jobs:
            break
        claims += 1
        if mode == "worker":
            store.worker_status(
                "processing", {"job_ids": [j.id for j in jobs], "done": 0, "total": len(jobs)}
            )
            for j in jobs:
                store.set_progress(j.id, "decode")
                store.set_progress(j.id, "cpu stages")
            for j in jobs:
                store.set_progress(j.id, "writing archive")
                a = time.perf_counter()
                store.complete(j.id, f"{j.archive_key}.audit.json")
                complete_ms.append((time.perf_counter() - a) * 1e3)
                ids.append(j.id)
            store.worker_status("idle")
        else:
            for j in jobs:
                a = time.perf_counter()
                store.complete(j.id, f"{j.archive_key}.audit.json")
                complete_ms.append((time.perf_counter() - a) * 1e3)
                ids.append(j.id)
    t1 = time.perf_counter()
    out.put(
        {
            "wid": wid,
            "ids": ids,
            "claims": claims,
            "claim_ms": claim_ms,
            "complete_ms": complete_ms,
            "t0": t0,
            "t1": t1,
            "cpu_s": time.process_time() - c0,
        }
    )
    store.unregister_worker()
    engine.dispose()


def run_case(url: str, n: int, workers: int, batch: int, mode: str) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    _fill(url, n)
    start = ctx.Event()
    out = ctx.Queue()
    ready = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, w, batch, mode, start, ready, out)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every process has imported and connected
        ready.get(timeout=120)
    start.set()
    reports = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    ids = [i for r in reports for i in r["ids"]]
    if len(ids) != len(set(ids)):
        raise RuntimeError(f"{len(ids) - len(set(ids))} jobs completed twice")
    if len(set(ids)) != n:
        raise RuntimeError(f"completed {len(set(ids))} of {n} jobs")
    wall = max(r["t1"] for r in reports) - min(r["t0"] for r in reports)
    claims = sum(r["claims"] for r in reports)
    claim_ms = [x for r in reports for x in r["claim_ms"]]
    complete_ms = [x for r in reports for x in r["complete_ms"]]
    return {
        "jobs": n,
        "workers": workers,
        "batch": batch,
        "mode": mode,
        "seconds": round(wall, 3),
        "jobs_per_s": rate(n, wall),
        "claim_transactions_per_s": rate(claims, wall),
        "jobs_claimed_per_s": rate(n, wall),
        "completions_per_s": rate(n, wall),
        "claim_ms": {"p50": round(pct(claim_ms, 0.5), 2), "p95": round(pct(claim_ms, 0.95), 2)},
        "complete_ms": {"p50": round(pct(complete_ms, 0.5), 2), "p95": round(pct(complete_ms, 0.95), 2)},
        "jobs_per_worker": sorted(len(r["ids"]) for r in reports),
        "client_cpu_s": round(sum(r["cpu_s"] for r in reports), 3),
        "client_cpu_ms_per_job": round(sum(r["cpu_s"] for r in reports) / n * 1e3, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 jobs, bare mode only (under a minute)")
    ap.add_argument("--jobs", type=int, default=None, help="jobs per case (default 2000; --quick 100)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", default="1,4")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    n = args.jobs or (100 if args.quick else 2000)
    modes = ["bare"] if args.quick else ["bare", "worker"]
    worker_counts = [int(w) for w in args.workers.split(",")]
    backends = args.backends.split(",")
    work = Path(tempfile.mkdtemp(prefix="albumd-bench-jobstore-"))
    results: dict[str, Any] = {}
    try:
        for backend in backends:
            for mode in modes:
                for w in worker_counts:
                    state = work / f"{backend}-{mode}-{w}"
                    with database(backend, state) as url:
                        case = run_case(url, n, w, args.batch, mode)
                    shutil.rmtree(state, ignore_errors=True)
                    results[f"{backend}/{mode}/{w}"] = case
                    print(
                        f"{backend:8s} {mode:6s} workers={w}: {case['jobs_per_s']:8.1f} jobs/s "
                        f"claimed+completed "
                        f"({case['claim_transactions_per_s']:.1f} claims/s of {args.batch}; claim p50 "
                        f"{case['claim_ms']['p50']} ms, complete p50 {case['complete_ms']['p50']} ms; "
                        f"{case['client_cpu_ms_per_job']} client CPU ms/job)",
                        flush=True,
                    )
        settings = {
            "quick": args.quick,
            "jobs": n,
            "batch": args.batch,
            "workers": worker_counts,
            "backends": backends,
            "modes": modes,
            "lease_s": 600,
        }
        path = write_result("jobstore", settings, results, args.out, args.quick, work)
        print("wrote", path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
