"""Shared pieces of the reliability suites (tests/test_reliability_*.py).

Every suite runs the real daemon as a subprocess (``albumd run`` / ``run --once``) on real folders and then
checks the promise with :func:`check_invariants`: every photo archived exactly once, every archive file
complete and matching its audit hash, no temp file, no job left running or queued, the inbox untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from albumd.daemon.archive import CRASH_ENV, TEMP_MARK, sha256_file
from conftest import albumd, audits, start_daemon, wait_for, write_config
from PIL import Image

__all__ = [
    "CRASH_ENV",
    "Album",
    "albumd",
    "audits",
    "check_invariants",
    "db_url_of",
    "done_job_ids",
    "jobs",
    "log_lines",
    "png_bytes",
    "remount",
    "run_once",
    "sha",
    "sitecustomize",
    "start_daemon",
    "stop",
    "tmpfs",
    "wait_for",
    "wait_ready",
    "write_config",
]


def png_bytes(seed: int, size: int = 64) -> bytes:
    """A small, distinct PNG (noise from ``seed``), cheap to restore."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Album:
    """The inbox of one test, with what was put into it (sha256 -> bytes) and a snapshot to compare."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders
        self.inbox = folders["inbox"]
        self.archive = folders["archive"]
        self.photos: dict[str, bytes] = {}
        self.names: dict[str, str] = {}
        """sha256 -> the inbox path it was put at (last one), so a failure can name the photo."""

    def add(self, rel: str, data: bytes, expect: bool = True) -> Path:
        path = self.inbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if expect:
            self.photos[sha(data)] = data
            self.names[sha(data)] = rel
        return path

    def add_small(self, n: int, album: str = "Album", seed: int = 0, size: int = 64) -> None:
        for i in range(n):
            self.add(f"{album}/p{i:05d}.png", png_bytes(seed * 100_000 + i, size))

    def snapshot(self) -> dict[str, str]:
        out = {}
        for p in sorted(self.inbox.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(self.inbox))] = sha256_file(p)
        return out


def db_url_of(folders: dict[str, Path], database_url: str | None = None) -> str:
    return database_url or f"sqlite:///{folders['state'] / 'albumd.db'}"


JOB_COLUMNS = ("id", "sha256", "state", "attempts", "crashes", "error", "path", "archive_key", "lease_owner")


def jobs(url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs")).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def check_invariants(
    album: Album,
    url: str,
    inbox_before: dict[str, str] | None = None,
    allow_failed: set[str] | None = None,
) -> list[dict[str, Any]]:
    """The promise, checked on disk and in the database. Returns the audit records.

    ``allow_failed``: sha256s expected to end ``failed`` (hostile input) rather than archived.
    """
    archive = album.archive
    allow_failed = allow_failed or set()
    records = audits(archive)
    by_sha: dict[str, list[dict[str, Any]]] = {}
    referenced: set[Path] = set()
    for rec in records:
        by_sha.setdefault(rec["input"]["sha256"], []).append(rec)
        for out in rec["outputs"]:
            path = archive / out["path"]
            assert path.is_file(), f"{out['path']} named by an audit is missing"
            assert sha256_file(path) == out["sha256"], f"{out['path']} does not match its audit hash"
            referenced.add(path.resolve())
        original = next(o for o in rec["outputs"] if o["role"] == "original")
        if rec["input"]["sha256"] in album.photos:
            assert (archive / original["path"]).read_bytes() == album.photos[rec["input"]["sha256"]]
    dupes = {s: len(r) for s, r in by_sha.items() if len(r) > 1}
    assert not dupes, f"photos archived more than once: {dupes}"
    expected = set(album.photos) - allow_failed
    missing = expected - set(by_sha)
    lost = sorted(album.names.get(s, s[:16]) for s in missing)
    assert not missing, f"{len(missing)} photos lost (not archived): {lost[:10]}"
    temps = [p for p in archive.rglob("*") if TEMP_MARK in p.name]
    assert not temps, f"temp files left in the archive: {temps[:5]}"
    files = {p.resolve() for p in archive.rglob("*") if p.is_file()}
    audit_files = {p.resolve() for p in archive.rglob("*.audit.json")}
    orphans = files - referenced - audit_files
    assert not orphans, f"archive files no audit names (half-written jobs): {sorted(orphans)[:5]}"
    rows = jobs(url)
    states = Counter(r["state"] for r in rows)
    assert states["running"] == 0, f"jobs stuck running: {states}"
    assert states["queued"] == 0, f"jobs still queued: {states}"
    done = {r["sha256"] for r in rows if r["state"] == "done"}
    assert expected <= done, "a photo is archived but its job is not done"
    assert done == set(by_sha), "done jobs and audit records disagree"
    if inbox_before is not None:
        assert album.snapshot() == inbox_before, "the inbox was modified"
    return records


def log_lines(folder: Path, pattern: str) -> list[str]:
    """Lines matching ``pattern`` across every daemon log of a test (start_daemon writes daemon-*.log)."""
    rx = re.compile(pattern)
    out = []
    for log in sorted(folder.glob("daemon-*.log")):
        out.extend(line for line in log.read_text(errors="replace").splitlines() if rx.search(line))
    return out


def done_job_ids(folder: Path) -> list[str]:
    """The job id of every ``job.done`` line in the daemon logs of ``folder``, one per completion logged
    (a job completed twice appears twice)."""
    return [m.group(1) for line in log_lines(folder, r"job\.done") if (m := re.search(r"job_id=(\d+)", line))]


def wait_ready(config: Path, timeout: float = 60) -> None:
    """Until a daemon started on ``config`` has logged that it is ready (watcher and worker running)."""
    wait_for(lambda: log_lines(config.parent, r"daemon\.ready"), timeout, what="daemon ready")


def sitecustomize(folder: Path, code: str) -> dict[str, str]:
    """The environment that makes a daemon subprocess run ``code`` at start (a ``sitecustomize.py`` in
    ``folder``, put on PYTHONPATH): how the suites inject a failing stage, a hang or a clock jump."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": str(folder)}


def run_once(
    config: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``albumd run --once`` with its output kept beside the config (so log_lines sees it)."""
    r = albumd(config, "run", "--once", env=env or {}, timeout=timeout)
    (config.parent / f"daemon-{time.time_ns()}.log").write_text(r.stdout + r.stderr)
    return r


def stop(proc: subprocess.Popen, sig: int = 15, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (the tests run as root, on CI too); always unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], check=False, capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)
