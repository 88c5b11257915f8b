"""Ingest throughput: small files hashed and queued per second, through the daemon's own code path.

    python bench/bench_ingest.py [--quick] [--out DIR] [--backends sqlite,postgres]

For each backend (SQLite file, fresh PostgreSQL database) and inbox size (1k and 10k files; --quick:
100 and 300), real files are written into a temporary inbox (albums of 100 files, 4-16 KiB of random
bytes named ``*.jpg``; content is never decoded at ingest) with an mtime older than ``stable_s``, then
timed exactly as ``Daemon.run`` does it: ``Ingestor.scan()`` (walk, classify, skip known sources, note
for the stability wait), ``StabilityTracker.due()`` until every file is due (the first look records
size+mtime, the second confirms), and ``Ingestor.ingest(path)`` per due file (re-check, sha256,
``enqueue``: one transaction). Then a rescan of the already-ingested inbox with a fresh Ingestor
(what a restart or the 5-minute periodic rescan does) is timed and the number of files hashed counted
(expected 0). Writes ``cpu-ingest.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import RESULTS, config_dict, database, make_folders, rate, write_result

ALBUM_SIZE = 100


def make_inbox(inbox: Path, n: int, seed: int = 0) -> int:
    """n small files in albums of 100, mtime 10 minutes ago. Returns the bytes written."""
    rnd = __import__("random").Random(seed)
    old = time.time() - 600
    total = 0
    for i in range(n):
        album = inbox / f"album {i // ALBUM_SIZE:03d}"
        if i % ALBUM_SIZE == 0:
            album.mkdir(parents=True, exist_ok=True)
        size = rnd.randint(4096, 16384)
        data = i.to_bytes(8, "little") + os.urandom(size - 8)
        path = album / f"scan {i:05d}.jpg"
        path.write_bytes(data)
        os.utime(path, (old, old))
        total += size
    return total


def run_case(backend: str, n: int, base: Path) -> dict[str, Any]:
    from albumd.daemon import db
    from albumd.daemon.config import Config
    from albumd.daemon.inbox import Inbox, StabilityTracker
    from albumd.daemon.jobstore import JobStore
    from albumd.daemon.service import Ingestor

    folders = make_folders(base)
    t = time.perf_counter()
    nbytes = make_inbox(folders["inbox"], n)
    make_s = time.perf_counter() - t
    with database(backend, folders["state"]) as url:
        config = Config.model_validate(config_dict(folders, url))
        engine = db.make_engine(config.db_url)
        db.upgrade(engine)
        store = JobStore(db.make_sessionmaker(engine))
        inbox = Inbox(config)

        hashed = [0]
        real_hash = inbox.hash_file

        def counting_hash(path: Path) -> tuple[str, int]:
            hashed[0] += 1
            return real_hash(path)

        inbox.hash_file = counting_hash  # type: ignore[method-assign]
        tracker = StabilityTracker(config.watcher.stable_s)
        ingestor = Ingestor(config, store, inbox, tracker)

        c0 = time.process_time()
        t0 = time.perf_counter()
        noted = ingestor.scan()
        t1 = time.perf_counter()
        looks = 0
        due_s = ingest_s = 0.0
        while len(tracker):
            a = time.perf_counter()
            ready = tracker.due()
            b = time.perf_counter()
            looks += 1
            for path in ready:
                ingestor.ingest(path)
            due_s += b - a
            ingest_s += time.perf_counter() - b
            if looks > 10:
                raise RuntimeError("files did not become due")
        t2 = time.perf_counter()
        cpu_s = time.process_time() - c0
        total_s = t2 - t0
        first = {
            "files": n,
            "bytes": nbytes,
            "queued": ingestor.queued,
            "hashed": hashed[0],
            "seconds": round(total_s, 3),
            "process_cpu_s": round(cpu_s, 3),
            "files_per_s": rate(n, total_s),
            "files_per_cpu_s": rate(n, cpu_s),
            "mib_per_s": round(nbytes / 2**20 / total_s, 2),
            "phases_s": {
                "scan": round(t1 - t0, 3),
                "stability_due": round(due_s, 3),
                "hash_and_enqueue": round(ingest_s, 3),
            },
            "stability_looks": looks,
            "us_per_file_hash_and_enqueue": round(ingest_s / max(1, n) * 1e6, 1),
        }
        if ingestor.queued != n:
            raise RuntimeError(f"{backend}: queued {ingestor.queued} of {n} files")

        # Rescan of the already-ingested inbox: a restart or the periodic rescan.
        hashed[0] = 0
        tracker2 = StabilityTracker(config.watcher.stable_s)
        ingestor2 = Ingestor(config, store, inbox, tracker2)
        c0 = time.process_time()
        t0 = time.perf_counter()
        noted2 = ingestor2.scan()
        for path in tracker2.due() + tracker2.due():
            ingestor2.ingest(path)
        rescan_s = time.perf_counter() - t0
        rescan_cpu_s = time.process_time() - c0
        rescan = {
            "files": n,
            "noted_for_stability": noted2,
            "hashed": hashed[0],
            "queued": ingestor2.queued,
            "seconds": round(rescan_s, 3),
            "process_cpu_s": round(rescan_cpu_s, 3),
            "files_per_s": rate(n, rescan_s),
        }
        engine.dispose()
    return {"make_inbox_s": round(make_s, 2), "noted": noted, "ingest": first, "rescan": rescan}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 and 300 files (under a minute)")
    ap.add_argument("--sizes", default=None, help="comma-separated inbox sizes (default 1000,10000)")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--tmp", type=Path, default=None, help="where the temporary inboxes go")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or ("100,300" if args.quick else "1000,10000")).split(",")]
    backends = args.backends.split(",")
    work = Path(tempfile.mkdtemp(prefix="albumd-bench-ingest-", dir=args.tmp))
    results: dict[str, Any] = {}
    try:
        for backend in backends:
            for n in sizes:
                load0 = load_average()
                case = run_case(backend, n, work / f"{backend}-{n}")
                case["load_average_1m"] = [load0, load_average()]
                results[f"{backend}/{n}"] = case
                ing, res = case["ingest"], case["rescan"]
                print(
                    f"{backend:8s} {n:6d} files: ingest {ing['files_per_s']:8.1f} files/s "
                    f"({ing['seconds']:.2f} s, {ing['files_per_cpu_s']:.0f}/cpu-s; "
                    f"scan {ing['phases_s']['scan']:.2f}, "
                    f"hash+enqueue {ing['phases_s']['hash_and_enqueue']:.2f}) | rescan "
                    f"{res['files_per_s']:8.1f} files/s, {res['hashed']} hashed",
                    flush=True,
                )
                shutil.rmtree(work / f"{backend}-{n}", ignore_errors=True)
        settings = {
            "quick": args.quick,
            "sizes": sizes,
            "backends": backends,
            "file_bytes": [4096, 16384],
            "album_size": ALBUM_SIZE,
            "stable_s": 5.0,
            "sqlite_synchronous": "FULL (albumd default)",
        }
        path = write_result("ingest", settings, results, args.out, args.quick, work)
        print("wrote", path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
