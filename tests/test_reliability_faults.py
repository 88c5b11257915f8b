"""Faults around the real daemon: archive full / read-only / missing, the database locked or its connections
cut, a stage raising, a worker hung past its lease. Each ends in a clear state and error, recovers by
itself when the fault goes away, and loses nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from albumd.daemon.archive import TEMP_MARK
from reliability_helpers import (
    Album,
    albumd,
    audits,
    check_invariants,
    db_url_of,
    done_job_ids,
    jobs,
    log_lines,
    png_bytes,
    remount,
    run_once,
    sitecustomize,
    start_daemon,
    stop,
    tmpfs,
    wait_for,
    wait_ready,
    write_config,
)


def _workers(config: Path) -> list[dict]:
    r = albumd(config, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["workers"]


def test_archive_read_only_full_or_missing_pauses_then_resumes_by_itself(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "mnt", size="80m") as mnt:
        archive = mnt / "archive"
        archive.mkdir()
        folders = {**folders, "archive": archive}
        album = Album(folders)
        config = write_config(folders, watcher={"stable_s": 0.3})
        proc = start_daemon(config)
        try:
            wait_ready(config)
            faults = [
                ("read-only", lambda: remount(mnt, "ro"), lambda: remount(mnt, "rw"), "not writable"),
                (
                    "full",
                    lambda: (mnt / "filler").write_bytes(b"\0" * 30 * 1024 * 1024),
                    lambda: (mnt / "filler").unlink(),
                    "is full",
                ),
                (
                    "missing",
                    lambda: archive.rename(mnt / "away"),
                    lambda: (mnt / "away").rename(archive),
                    "does not exist",
                ),
            ]
            for n, (name, break_it, fix_it, message) in enumerate(faults):
                before = len(audits(archive)) if archive.is_dir() else 0
                break_it()
                album.add_small(3, album=f"During {name}", seed=20 + n)
                wait_for(
                    lambda message=message: any(
                        message in x for x in log_lines(config.parent, "unavailable")
                    ),
                    30,
                    what=f"the daemon to report the {name} archive",
                )
                wait_for(lambda: _workers(config)[0]["state"] == "paused", 20, what="worker paused")
                time.sleep(1.5)
                rows = jobs(db_url_of(folders))
                assert all(r["attempts"] == 0 for r in rows if r["state"] == "queued"), rows
                assert len([r for r in rows if r["state"] == "queued"]) == 3
                fix_it()
                wait_for(lambda before=before: len(audits(archive)) == before + 3, 60, what=f"after {name}")
            print(f"archive faults survived: {[f[0] for f in faults]}")
            assert stop(proc) == 0
        finally:
            stop(proc)
        check_invariants(album, db_url_of(folders))


def test_disk_full_mid_write_fails_clearly_leaves_no_partial_file_and_retries(
    folders: dict[str, Path], tmp_path: Path, photos_dir: Path
) -> None:
    """--once does not pause: a write that runs out of space mid-file is a transient error, retried, then
    reported; after space is made, `albumd retry --failed` brings it back."""
    with tmpfs(tmp_path / "mnt", size="600k") as mnt:
        folders = {**folders, "archive": mnt}
        album = Album(folders)
        album.add("big/bop_old_a.png", (photos_dir / "bop_old_a.png").read_bytes())
        before = album.snapshot()
        config = write_config(folders, max_attempts=2)
        r = run_once(config)
        assert r.returncode == 0, r.stdout + r.stderr
        (row,) = jobs(db_url_of(folders))
        assert row["state"] == "failed" and "No space left on device" in row["error"], row
        assert not audits(mnt)
        assert not [p for p in mnt.rglob("*") if TEMP_MARK in p.name], "partial temp files left"
        # the files written before space ran out were taken back: nothing lies there without an audit
        assert not [p for p in mnt.rglob("*") if p.is_file()], sorted(mnt.rglob("*"))
        remount(mnt, "size=80m")
        assert albumd(config, "retry", "--failed").returncode == 0
        assert run_once(config).returncode == 0
        check_invariants(album, db_url_of(folders), inbox_before=before)


def test_sqlite_locked_by_another_process_is_waited_for(folders: dict[str, Path]) -> None:
    album = Album(folders)
    album.add_small(4, album="Before")
    config = write_config(folders, watcher={"stable_s": 0.3})
    proc = start_daemon(config)
    try:
        wait_for(lambda: len(audits(folders["archive"])) == 4, 90, what="first photos")
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
                import sqlite3, time
                c = sqlite3.connect({str(folders["state"] / "albumd.db")!r}, isolation_level=None)
                c.execute("BEGIN EXCLUSIVE"); print("locked", flush=True); time.sleep(6); c.execute("COMMIT")
                """),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout and holder.stdout.readline().strip() == "locked"
        album.add_small(4, album="While locked", seed=5)
        assert holder.wait(timeout=30) == 0
        wait_for(lambda: len(audits(folders["archive"])) == 8, 90, what="photos queued while locked")
        assert proc.poll() is None, "the daemon died while the database was locked"
        assert stop(proc) == 0
    finally:
        stop(proc)
    check_invariants(album, db_url_of(folders))


def _kill_connections(pg_url: str) -> int:
    dbname = pg_url.rsplit("/", 1)[1]
    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return len(rows)


def test_postgres_connections_cut_mid_run_daemon_carries_on(folders: dict[str, Path], pg_url: str) -> None:
    """What the daemon sees of a PostgreSQL restart: every connection dropped, mid-claim, mid-heartbeat,
    mid-commit. (The server itself is not restarted: other test sessions share it.)"""
    album = Album(folders)
    config = write_config(folders, database_url=pg_url, batch_size=2, watcher={"stable_s": 0.3})
    proc = start_daemon(config)
    cuts = 0
    try:
        wait_ready(config)
        for n in range(4):
            album.add_small(6, album=f"Batch {n}", seed=30 + n)
            time.sleep(1.0 + 0.4 * n)
            cuts += _kill_connections(pg_url) > 0
        wait_for(
            lambda: len(audits(folders["archive"])) == 24, 180, what="every photo after the cuts", daemon=proc
        )
        assert proc.poll() is None, "the daemon exited when its PostgreSQL connections were cut"
        assert stop(proc) == 0
    finally:
        stop(proc)
    print(f"PostgreSQL connection cuts survived: {cuts}")
    assert cuts >= 3
    check_invariants(album, pg_url)


DB_CUTS = """
import albumd.daemon.jobstore as _js
from sqlalchemy.exc import OperationalError
_left = {"claim": 1, "processing": 1, "complete": 1}
def _cut(where):
    if _left[where]:
        _left[where] -= 1
        raise OperationalError(f"injected cut at {where}", {}, ConnectionError("connection cut by the test"))
_claim, _status, _complete = _js.JobStore.claim, _js.JobStore.worker_status, _js.JobStore.complete
def claim(self, limit, lease_s):
    claimed = _claim(self, limit, lease_s)
    if claimed:
        _cut("claim")  # committed, but the answer never reached the worker
    return claimed
def worker_status(self, state, *args, **kwargs):
    if state == "processing":
        _cut("processing")
    return _status(self, state, *args, **kwargs)
def complete(self, job_id, audit_path):
    _cut("complete")  # the archive is written, the database is gone before it hears of it
    return _complete(self, job_id, audit_path)
_js.JobStore.claim, _js.JobStore.worker_status, _js.JobStore.complete = claim, worker_status, complete
"""


def test_database_errors_mid_batch_give_the_jobs_back_at_once_without_charging_the_photos(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """A connection lost at three places of a batch (a claim that committed unheard, the batch start, the
    completion after the archive write). Each time the worker gives every job it holds back to the queue
    as soon as the database answers: not after the lease runs out (60 s here), not as a crash, and
    without using up one of the photo's attempts."""
    env = sitecustomize(tmp_path / "cuts", DB_CUTS)
    album = Album(folders)
    album.add_small(4, album="Cuts", seed=50)
    config = write_config(folders, batch_size=2, lease_s=60, watcher={"stable_s": 0.3})
    proc = start_daemon(config, env=env)
    try:
        wait_ready(config)
        wait_for(
            lambda: len(audits(folders["archive"])) == 4, 45, what="every photo despite the cuts", daemon=proc
        )
        assert proc.poll() is None
        assert stop(proc) == 0
    finally:
        stop(proc)
    assert len(log_lines(config.parent, r"worker\.db_error .*connection cut by the test")) == 3
    assert len(log_lines(config.parent, r"worker\.recovered released=[1-9]")) == 3
    rows = jobs(db_url_of(folders))
    assert [(r["state"], r["attempts"], r["crashes"]) for r in rows] == [("done", 0, 0)] * 4
    check_invariants(album, db_url_of(folders))


@pytest.mark.slow
def test_slow_postgres_server_restart_mid_run(folders: dict[str, Path], pg_url: str) -> None:
    """A real restart of the local cluster (CI only: it disturbs every other user of the server)."""
    album = Album(folders)
    config = write_config(folders, database_url=pg_url, batch_size=2, watcher={"stable_s": 0.3})
    proc = start_daemon(config)
    restart = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]
    try:
        wait_ready(config)
        album.add_small(20, album="Restart", seed=40)
        time.sleep(2)
        subprocess.run(restart, check=True, timeout=120)
        wait_for(lambda: len(audits(folders["archive"])) == 20, 300, what="every photo after the restart")
        assert proc.poll() is None
        assert stop(proc) == 0
    finally:
        stop(proc)
        if subprocess.run(["pg_isready", "-h", "127.0.0.1"], check=False).returncode != 0:
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"], check=False)
    check_invariants(album, pg_url)


INJECT = """
import albumd.pipeline.photo as _photo
_real = _photo.prepare_photo
def prepare_photo(source, settings):
    if source.width == 13:
        raise RuntimeError("injected stage failure")
    return _real(source, settings)
_photo.prepare_photo = prepare_photo
"""


def test_a_stage_raising_fails_that_photo_only_with_its_error(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    env = sitecustomize(tmp_path / "inject", INJECT)
    album = Album(folders)
    album.add_small(4, album="Good")
    bad = album.add("Good/bad.png", png_bytes(99, size=13), expect=False)
    config = write_config(folders, max_attempts=2, retry_backoff_s=0.1)
    r = run_once(config, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    failed = [j for j in jobs(db_url_of(folders)) if j["state"] == "failed"]
    assert [j["path"] for j in failed] == ["Good/bad.png"]
    assert "gave up after 2 attempts: RuntimeError: injected stage failure" in failed[0]["error"]
    check_invariants(album, db_url_of(folders))
    assert bad.exists()


HANG = """
import os, time
import albumd.pipeline.photo as _photo
import albumd.daemon.jobstore as _js
_real, _beat = _photo.prepare_photo, _js.JobStore.heartbeat
_marker = os.environ.get("INJECT_HANG_FILE", "")
def prepare_photo(source, settings):
    if source.width == 17 and _marker:
        open(_marker, "w").close()
        time.sleep(float(os.environ["INJECT_HANG"]))
        os.unlink(_marker)
    return _real(source, settings)
def heartbeat(self, ids, lease_s):
    while _marker and os.path.exists(_marker):  # lease renewal (its own process) stops too
        time.sleep(0.1)
    return _beat(self, ids, lease_s)
_photo.prepare_photo = prepare_photo
_js.JobStore.heartbeat = heartbeat
"""


def test_worker_hung_past_its_lease_is_taken_over_and_not_completed_twice(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """Daemon A hangs in the pipeline and its heartbeat stops; daemon B takes the job over once the lease
    expires; A, when it wakes up, must not complete it a second time."""
    env = sitecustomize(tmp_path / "hang", HANG)
    album = Album(folders)
    album.add("Hang/slow.png", png_bytes(5, size=17))
    config = write_config(folders, batch_size=1, lease_s=5, heartbeat_s=0.5, reaper_interval_s=1)
    a = start_daemon(
        config,
        env={**env, "INJECT_HANG": "12", "INJECT_HANG_FILE": str(tmp_path / "hung")},
    )
    b = None
    try:
        wait_for(lambda: log_lines(config.parent, r"batch\.claimed"), 60, what="A claims")
        b = start_daemon(config)
        wait_for(lambda: len(audits(folders["archive"])) == 1, 60, what="B archives A's job")
        wait_for(lambda: log_lines(config.parent, r"lease_lost"), 30, what="A notices it lost the lease")
        assert stop(a) == 0 and stop(b) == 0
    finally:
        stop(a)
        if b is not None:
            stop(b)
    check_invariants(album, db_url_of(folders))
    done = log_lines(config.parent, r"job\.done")
    assert len(done) == 1, f"the job was completed twice: {done}"


def test_clock_jumps_do_not_lose_or_double_photos(folders: dict[str, Path], tmp_path: Path) -> None:
    """The wall clock of one daemon jumps an hour forward, then back, mid-run (as NTP or a bad RTC can):
    leases are wall-clock times in the database, so this is the case that could reap live work."""
    env = sitecustomize(
        tmp_path / "clock",
        textwrap.dedent("""
        import datetime as _dt, os, threading, time as _time
        _real_time, _start = _time.time, _time.monotonic()
        def _offset():
            t = _time.monotonic() - _start
            return 3600.0 if 4.0 < t < 8.0 else (-3600.0 if 8.0 <= t < 12.0 else 0.0)
        _time.time = lambda: _real_time() + _offset()
        _orig_now = _dt.datetime.now
        class _DT(_dt.datetime):
            @classmethod
            def now(cls, tz=None):
                return _orig_now(tz) + _dt.timedelta(seconds=_offset())
        _dt.datetime = _DT
        """),
    )
    album = Album(folders)
    album.add_small(20, album="Clock")
    config = write_config(folders, batch_size=2, watcher={"stable_s": 0.3}, crash_limit=1000)
    proc = start_daemon(config, env=env)
    try:
        wait_for(lambda: len(audits(folders["archive"])) == 20, 120, what="every photo across the jumps")
        assert stop(proc) == 0
    finally:
        stop(proc)
    check_invariants(album, db_url_of(folders))
    done = done_job_ids(config.parent)
    assert len(done) == len(set(done)) == 20


def test_fault_tests_leave_no_mounts(tmp_path: Path) -> None:
    assert str(tmp_path.parent) not in Path("/proc/self/mounts").read_text()


def test_sigterm_while_the_main_loop_is_busy_is_a_clean_stop(folders: dict[str, Path]) -> None:
    """SIGTERM lands while the main loop is recording a large drop of files (the processing window is
    closed, so the worker is idle and leaves its loop at once): the worker's exit on the stop request is
    not a crash. Found by the PostgreSQL connection-cut test: the daemon then exited 1 with "worker
    thread died: None" instead of stopping cleanly."""
    start = datetime.now() + timedelta(hours=2)
    window = f"{start:%H:%M}-{start + timedelta(hours=1):%H:%M}"
    config = write_config(
        folders, processing_window=window, watcher={"stable_s": 0.3, "rescan_interval_s": 3600}
    )
    proc = start_daemon(config)
    try:
        wait_ready(config)
        Album(folders).add_small(3000, album="Drop", size=8)
        wait_for(lambda: len(log_lines(config.parent, r"job\.queued")) >= 50, 60, what="recording under way")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, "\n".join(log_lines(config.parent, r"."))[-3000:]
    finally:
        stop(proc)
    assert log_lines(config.parent, r"daemon\.stopped")
    assert not log_lines(config.parent, r"worker thread died|Traceback")
