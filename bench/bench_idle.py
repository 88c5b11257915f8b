"""What an idle daemon costs: database commits, write syscalls, bytes written and CPU while nothing happens.

    python bench/bench_idle.py [--quick] [--out DIR] [--seconds 60]

Starts the real daemon (``python -m albumd.daemon.cli run``, SQLite in its state folder, default settings
but for the folders) on an empty inbox, waits for ``daemon.ready`` and 5 s more, then watches it for
``--seconds`` (``--quick``: 20): the daemon process and its children (the lease keeper) from
``/proc/<pid>/io`` (``syscw``: write syscalls; ``write_bytes``: bytes sent to the block layer) and
``/proc/<pid>/stat`` (CPU), and the database from another connection (``PRAGMA data_version`` polled every
0.1 s: how often a commit changed the file; the WAL's size). Figures are given per 30 s. A NAS disk can
only spin down if this is all zero. Writes ``cpu-idle.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from benchlib import RESULTS, config_dict, daemon_env, make_folders, write_result


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for p in pids:
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return pids


def _io(pids: list[int]) -> dict[str, int]:
    total = {"syscw": 0, "write_bytes": 0, "cpu_ticks": 0}
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/io").read_text().splitlines():
                key, value = line.split(":")
                if key in ("syscw", "write_bytes"):
                    total[key] += int(value)
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total["cpu_ticks"] += int(stat[11]) + int(stat[12])  # utime + stime
        except OSError:
            continue
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="watch for 20 s")
    ap.add_argument("--seconds", type=float, default=None, help="how long to watch (default 60)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    seconds = args.seconds or (20.0 if args.quick else 60.0)
    work = Path(tempfile.mkdtemp(prefix="albumd-bench-idle-"))
    try:
        folders = make_folders(work)
        config_path = work / "config.yaml"
        config_path.write_text(yaml.safe_dump(config_dict(folders, None, log_level="INFO")))
        log_path = work / "daemon.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "albumd.daemon.cli", "run"],
                env=daemon_env(config_path),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 120
                while "daemon.ready" not in log_path.read_text():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"daemon did not start: {log_path.read_text()[-2000:]}")
                    time.sleep(0.1)
                time.sleep(5.0)  # past start-up: the first idle status and the lease keeper's start
                db_path = folders["state"] / "albumd.db"
                wal = db_path.with_name(db_path.name + "-wal")
                reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
                pids = _tree(proc.pid)
                io0, wal0 = _io(pids), wal.stat().st_size
                version = reader.execute("PRAGMA data_version").fetchone()[0]
                changes = 0
                t0 = time.monotonic()
                while time.monotonic() - t0 < seconds:
                    time.sleep(0.1)
                    v = reader.execute("PRAGMA data_version").fetchone()[0]
                    changes += v != version
                    version = v
                elapsed = time.monotonic() - t0
                io1, wal1 = _io(pids), wal.stat().st_size
                reader.close()
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        per = 30.0 / elapsed
        hz = os.sysconf("SC_CLK_TCK")
        results: dict[str, Any] = {
            "watched_s": round(elapsed, 1),
            "processes": len(pids),
            "per_30s": {
                "db_commits_seen": round(changes * per, 1),
                "write_syscalls": round((io1["syscw"] - io0["syscw"]) * per, 1),
                "write_bytes": round((io1["write_bytes"] - io0["write_bytes"]) * per),
                "wal_growth_bytes": round((wal1 - wal0) * per),
                "cpu_s": round((io1["cpu_ticks"] - io0["cpu_ticks"]) / hz * per, 3),
            },
            "exit_code": proc.returncode,
        }
        print(f"idle daemon, per 30 s: {results['per_30s']}", flush=True)
        settings = {"quick": args.quick, "seconds": seconds, "backend": "sqlite", "config": "defaults"}
        path = write_result("idle", settings, results, args.out, args.quick, work)
        print("wrote", path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
