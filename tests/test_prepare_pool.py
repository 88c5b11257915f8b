"""The CPU stages of a batch in several processes: the same results as in the worker itself, a photo that
kills its process fails alone, and no pool process outlives a killed daemon."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from albumd.daemon.config import Config
from albumd.daemon.jobstore import ClaimedJob
from albumd.daemon.prepare_pool import Cancelled, PrepareCrashed, PreparePool, default_processes
from albumd.daemon.process import Prepared
from reliability_helpers import (
    Album,
    check_invariants,
    db_url_of,
    jobs,
    png_bytes,
    sitecustomize,
    start_daemon,
    stop,
    wait_for,
    wait_ready,
    write_config,
)

# Kills the pool process preparing any photo whose name holds "crash", as a decoder crashing would;
# holds one whose name holds "slow" for two minutes.
CRASH = """
import os, signal, time
import albumd.daemon.prepare_pool as _pool
_real = _pool.prepare
def prepare(job, config):
    if "crash" in job.rel_path:
        os.kill(os.getpid(), signal.SIGKILL)
    if "slow" in job.rel_path:
        time.sleep(120)
    return _real(job, config)
_pool.prepare = prepare
"""


def _config(tmp_path: Path, processes: int) -> Config:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    return Config(
        inbox=tmp_path / "inbox",
        archive=tmp_path / "archive",
        state_dir=tmp_path / "state",
        prepare_processes=processes,
    )


def _claimed(inbox: Path, name: str, data: bytes) -> ClaimedJob:
    """A job as the worker claims it, its photo in the inbox."""
    (inbox / "A").mkdir(exist_ok=True)
    (inbox / "A" / name).write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    return ClaimedJob(0, sha, "A", f"A/{name}", f"A/{Path(name).stem}", 0, [f"A/{name}"])


def _photo_jobs(inbox: Path, photos_dir: Path, n: int) -> list[ClaimedJob]:
    return [_claimed(inbox, f.name, f.read_bytes()) for f in sorted(photos_dir.glob("*.png"))[:n]]


def _pixels(prep: Prepared) -> list[np.ndarray]:
    return [p.image for p in prep.photo.prints]


def test_default_leaves_a_core_and_stays_at_four() -> None:
    assert [default_processes(n) for n in (1, 2, 3, 4, 8, 64)] == [1, 1, 2, 3, 4, 4]


def test_processes_give_the_same_results_as_the_worker_itself(tmp_path: Path, photos_dir: Path) -> None:
    config = _config(tmp_path, 2)
    gone = _claimed(config.inbox, "gone.png", b"deleted before its turn")
    (config.inbox / gone.path).unlink()
    bad = _claimed(config.inbox, "bad.png", b"not an image")
    batch = [*_photo_jobs(config.inbox, photos_dir, 3), bad, gone]
    here = PreparePool(_config(tmp_path, 1)).run(batch, threading.Event())
    pool = PreparePool(config)
    finished: list[int] = []
    try:
        there = pool.run(batch, threading.Event(), on_done=finished.append)
    finally:
        pool.close()
    assert sorted(finished) == [0, 1, 2, 3, 4]
    for a, b in zip(here[:3], there[:3], strict=True):
        assert isinstance(a, Prepared) and isinstance(b, Prepared)
        assert [f["box"] for p in a.photo.prints for f in p.faces] == [
            f["box"] for p in b.photo.prints for f in p.faces
        ]
        for x, y in zip(_pixels(a), _pixels(b), strict=True):
            np.testing.assert_array_equal(x, y)
    # A decode error and a vanished source cross the process boundary as themselves, not as crashes.
    assert [type(r).__name__ for r in there[3:]] == ["ImageDecodeError", "SourceGone"]
    assert [str(r) for r in there[3:]] == [str(r) for r in here[3:]]


def test_a_stop_request_cancels_what_has_not_started(tmp_path: Path, photos_dir: Path) -> None:
    stopping = threading.Event()
    stopping.set()
    for processes in (1, 2):
        pool = PreparePool(_config(tmp_path, processes))
        try:
            out = pool.run(_photo_jobs(pool.config.inbox, photos_dir, 2), stopping)
        finally:
            pool.close()
        assert all(isinstance(r, Cancelled) for r in out), processes


def test_a_photo_that_kills_its_process_fails_alone(
    tmp_path: Path, photos_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sitecustomize(tmp_path / "crash", CRASH)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [env["PYTHONPATH"], os.environ.get("PYTHONPATH")]))
    )
    config = _config(tmp_path, 2)
    good = _photo_jobs(config.inbox, photos_dir, 3)
    crash = _claimed(config.inbox, "crash.png", (photos_dir / Path(good[1].path).name).read_bytes())
    batch = [good[0], crash, *good[1:]]
    pool = PreparePool(config)
    try:
        out = pool.run(batch, threading.Event())
        again = pool.run(good[:1], threading.Event())  # the pool works again afterwards
    finally:
        pool.close()
    assert isinstance(out[1], PrepareCrashed)
    assert "the process preparing this photo died" in str(out[1])
    assert [isinstance(r, Prepared) for r in out] == [True, False, True, True]
    assert isinstance(again[0], Prepared)


def _stat(path: Path) -> list[str]:
    """The fields of a /proc/<pid>/stat after the command name (state is [0], parent pid [1])."""
    return path.read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(_stat(stat)[1]) == pid:
                out.add(int(stat.parent.name))
        except OSError:
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        return _stat(Path(f"/proc/{pid}/stat"))[0] != "Z"
    except OSError:
        return False


def test_daemon_with_a_process_pool_archives_the_album_and_leaves_no_process_behind(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """The real daemon with 2 prepare processes: every photo archived once, the photo that crashes its
    process failed after its attempts with that reason; the pool ended once the queue is empty; SIGKILLed
    in the middle of a batch, its pool processes leave too."""
    env = sitecustomize(tmp_path / "crash", CRASH)
    album = Album(folders)
    config = write_config(folders, prepare_processes=2, batch_size=4, max_attempts=2, retry_backoff_s=0.1)
    url = db_url_of(folders)
    proc = start_daemon(config, env=env)
    try:
        wait_ready(config)
        baseline = _children(proc.pid)  # the lease keeper (and multiprocessing's resource tracker)
        album.add_small(6, album="Pool", seed=60)
        crash = album.add("Pool/crash.png", png_bytes(61), expect=False)
        wait_for(
            lambda: sorted(j["state"] for j in jobs(url)) == ["done"] * 6 + ["failed"],
            120,
            what="6 photos done and the crashing one failed",
            daemon=proc,
        )
        wait_for(lambda: _children(proc.pid) == baseline, 15, what="the pool to end once the queue is empty")
        check_invariants(album, url)
        slow = album.add("Pool/slow.png", png_bytes(62), expect=False)
        # One photo: the executor starts one process for it.
        wait_for(lambda: len(_children(proc.pid) - baseline) == 1, 60, what="the pool to start again")
        wait_for(lambda: any(j["state"] == "running" for j in jobs(url)), 30, what="the slow photo's claim")
        children = _children(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        wait_for(lambda: not any(_alive(c) for c in children), 15, what="every child process to exit")
    finally:
        stop(proc)
    failed = [j for j in jobs(url) if j["state"] == "failed"]
    assert [j["path"] for j in failed] == ["Pool/crash.png"]
    assert "the process preparing this photo died" in failed[0]["error"]
    assert crash.exists() and slow.exists()
