"""Slow and odd producers: the ways scanners, copy tools and people put files into the inbox, against the
real daemon (watchdog events, no rescans to help). Nothing may be taken half-written, nothing missed,
nothing done twice, and every odd case ends in its documented state (docs/inbox.md, docs/reliability.md).

The stability rule: a file counts once its size and mtime stayed unchanged for ``watcher.stable_s``. A
writer that pauses *longer* than that between two chunks is indistinguishable from a finished file, so
the slow writers here pause at most half of ``stable_s`` (the slow variant: 90 % of the default 5 s).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import (
    Album,
    audits,
    check_invariants,
    db_url_of,
    jobs,
    log_lines,
    png_bytes,
    run_once,
    sha,
    start_daemon,
    stop,
    wait_for,
    wait_ready,
    write_config,
)


def _closed_window() -> str:
    """A processing window that is not open now (and not for the next hour and more)."""
    start = datetime.now() + timedelta(hours=2)
    end = start + timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}"


def _slow_write(path: Path, data: bytes, seconds: float, max_pause: float, rng: random.Random) -> int:
    """Write ``data`` in small chunks spread over about ``seconds``, never pausing more than ``max_pause``
    (a scanner streaming its scan). Returns the number of chunks."""
    pauses: list[float] = []
    while sum(pauses) < seconds:
        pauses.append(rng.uniform(0.2 * max_pause, max_pause))
    step = max(1, -(-len(data) // len(pauses)))
    with open(path, "wb") as f:
        for n, pause in enumerate(pauses):
            f.write(data[n * step : (n + 1) * step])
            f.flush()
            time.sleep(pause)
        f.write(data[len(pauses) * step :])
    return len(pauses)


def _preallocated_write(
    path: Path, data: bytes, seconds: float, max_pause: float, rng: random.Random
) -> None:
    """A copy tool that sets the final size first and fills the bytes in afterwards: the size never changes,
    only the mtime tells that the file is still being written."""
    with open(path, "wb") as f:
        f.truncate(len(data))
        f.flush()
        chunks = max(2, int(seconds / max_pause * 1.6))
        step = -(-len(data) // chunks)
        for n in range(chunks):
            time.sleep(rng.uniform(0.2 * max_pause, max_pause))
            f.seek(n * step)
            f.write(data[n * step : (n + 1) * step])
            f.flush()


def _rows_by_path(url: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in jobs(url):
        out.setdefault(row["path"], []).append(row)
    return out


def _audit_of(archive: Path, rel: str) -> list[dict[str, Any]]:
    return [rec for rec in audits(archive) if rec["input"]["path"] == rel]


def _run_all(*producers: Callable[[], None]) -> None:
    """Run the producers side by side, as several scanners and people would; re-raise the first error."""
    errors: list[BaseException] = []

    def guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(p,)) for p in producers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _producers_scenario(
    folders: dict[str, Path], tmp_path: Path, photos_dir: Path, stable_s: float, write_s: float
) -> None:
    rng = random.Random(5)
    album = Album(folders)
    inbox = folders["inbox"]
    url = db_url_of(folders)
    empty_stable_s = 3 * stable_s
    config = write_config(
        folders,
        batch_size=4,
        # only watcher events (and the scan of a folder that appears) may find these files
        watcher={"stable_s": stable_s, "empty_stable_s": empty_stable_s, "rescan_interval_s": 3600},
    )
    for d in ("Scans", "Copies", "Replace"):
        (inbox / d).mkdir()
    scan = (photos_dir / "bop_old_a.png").read_bytes()
    prealloc = png_bytes(301, 160)
    filled_later = png_bytes(302, 96)
    part, hidden = png_bytes(303, 96), png_bytes(304, 96)
    v1, v2, w1, w2 = (png_bytes(305 + i, 64) for i in range(4))
    trip = {f"p{i:02d}.png": png_bytes(400 + i) for i in range(12)}
    trip.update({f"Day 2/q{i}.png": png_bytes(420 + i) for i in range(4)})
    for data in (scan, prealloc, filled_later, part, hidden, v1, v2, w1, w2, *trip.values()):
        album.photos[sha(data)] = data
    max_pause = stable_s / 2
    counts: dict[str, int] = {}

    def slow_scanner() -> None:
        counts["chunks"] = _slow_write(inbox / "Scans" / "slow.png", scan, write_s, max_pause, rng)

    def preallocating_copy() -> None:
        _preallocated_write(inbox / "Copies" / "prealloc.png", prealloc, write_s / 2, max_pause, rng)

    def empty_then_filled() -> None:
        path = inbox / "Scans" / "empty first.png"
        path.write_bytes(b"")  # the scanner creates its file when the scan starts...
        (inbox / "Scans" / "left empty.jpg").write_bytes(b"")  # ...this one never gets its data
        time.sleep(stable_s * 1.75)  # longer than stable_s, shorter than empty_stable_s
        with open(path, "r+b") as f:
            f.write(filled_later)

    def renamed_into_place() -> None:
        tmp = inbox / "Copies" / "x.png.part"
        _slow_write(tmp, part, 3 * stable_s, max_pause, rng)
        os.rename(tmp, inbox / "Copies" / "x.png")
        tmp = inbox / "Copies" / ".y.png.Xa81Qz"  # rsync's hidden temp name
        tmp.write_bytes(hidden)
        time.sleep(stable_s * 1.5)  # long enough to be taken, if hidden names were taken
        os.rename(tmp, inbox / "Copies" / "y.png")

    def replaced_under_the_same_name() -> None:
        same, inplace = inbox / "Replace" / "same.png", inbox / "Replace" / "inplace.png"
        same.write_bytes(v1)
        inplace.write_bytes(w1)
        wait_for(lambda: len(_audit_of(folders["archive"], "Replace/same.png")) == 1, 120, what="v1 archived")
        wait_for(lambda: len(_audit_of(folders["archive"], "Replace/inplace.png")) == 1, 60, what="w1")
        tmp = inbox / "Replace" / ".same.png.new"
        tmp.write_bytes(v2)
        os.rename(tmp, same)  # replaced atomically (a new inode)
        with open(inplace, "wb") as f:  # rewritten in place (same inode, truncated first)
            f.write(w2)

    def album_moved_in() -> None:
        src = tmp_path / "outside" / "Trip 1999"
        for rel, data in trip.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        time.sleep(1)
        os.rename(src, inbox / "Trip 1999")  # one inotify event for the folder, none for its files

    proc = start_daemon(config)
    try:
        wait_ready(config)
        t0 = time.monotonic()
        _run_all(
            slow_scanner,
            preallocating_copy,
            empty_then_filled,
            renamed_into_place,
            replaced_under_the_same_name,
            album_moved_in,
        )
        written_s = time.monotonic() - t0
        wait_for(lambda: len(audits(folders["archive"])) == len(album.photos), 240, what="all archived")
        wait_for(
            lambda: [r for r in jobs(url) if r["path"] == "Scans/left empty.jpg" and r["state"] == "failed"],
            60,
            what="the empty file failed",
        )
        # The album folder renamed inside the inbox: the same photos under new paths are not redone.
        os.rename(inbox / "Trip 1999", inbox / "Trip 1999 (Italy)")
        wait_for(
            lambda: len(log_lines(config.parent, r"job\.duplicate .*Trip 1999 \(Italy\)")) == len(trip),
            60,
            what="renamed album recognised",
        )
        assert proc.poll() is None, "the daemon died"
        assert stop(proc) == 0
    finally:
        stop(proc)

    rows = _rows_by_path(url)
    # Exactly one job per file, holding the complete file: nothing was taken while it was being written.
    for rel, data in [
        ("Scans/slow.png", scan),
        ("Copies/prealloc.png", prealloc),
        ("Scans/empty first.png", filled_later),
        ("Copies/x.png", part),
        ("Copies/y.png", hidden),
    ]:
        assert [r["sha256"] for r in rows.get(rel, [])] == [sha(data)], (rel, rows.get(rel))
        assert rows[rel][0]["state"] == "done" and rows[rel][0]["attempts"] == 0, rows[rel]
    assert not [p for p in rows if p.endswith(".part") or "/." in p], sorted(rows)
    (empty,) = rows["Scans/left empty.jpg"]
    assert empty["state"] == "failed" and "empty" in empty["error"], empty
    # Replaced under the same name: both versions archived, the second beside the first as _1.
    for rel, first, second in (("Replace/same.png", v1, v2), ("Replace/inplace.png", w1, w2)):
        recs = sorted(_audit_of(folders["archive"], rel), key=lambda r: r["job_id"])
        assert [r["input"]["sha256"] for r in recs] == [sha(first), sha(second)], rel
        stem = rel[:-4]
        assert [next(o["path"] for o in r["outputs"] if o["role"] == "original") for r in recs] == [
            f"{stem}.original.png",
            f"{stem}_1.original.png",
        ]
    # The album moved in at once: every photo found, nested folder included.
    moved = {r["input"]["path"] for r in audits(folders["archive"]) if r["input"]["path"].startswith("Trip")}
    assert moved == {f"Trip 1999/{rel}" for rel in trip}
    check_invariants(album, url, allow_failed={sha(b"")})
    print(
        f"producers: slow scanner {counts['chunks']} chunks over {write_s:.0f}s (pauses <= {max_pause:.1f}s, "
        f"stable_s {stable_s}s), all producers done in {written_s:.0f}s; {len(album.photos)} photos "
        f"archived once, 1 empty file failed, lost 0, taken half-written 0"
    )


def test_slow_and_odd_producers_against_the_running_daemon(
    folders: dict[str, Path], tmp_path: Path, photos_dir: Path
) -> None:
    """A scanner streaming a real scan over 30 s, a preallocating copy, an empty file filled later and one
    left empty, a `.part` copy and an rsync temp renamed into place, a photo replaced under its name
    (atomically and in place), a whole album folder moved in and then renamed; all at once."""
    _producers_scenario(folders, tmp_path, photos_dir, stable_s=2.0, write_s=30.0)


@pytest.mark.slow
def test_slow_producers_at_the_default_stable_time(
    folders: dict[str, Path], tmp_path: Path, photos_dir: Path
) -> None:
    """The same at the default stable_s (5 s) with the scanner writing for two minutes."""
    _producers_scenario(folders, tmp_path, photos_dir, stable_s=5.0, write_s=120.0)


def test_files_deleted_replaced_or_moved_while_queued(folders: dict[str, Path]) -> None:
    """Outside the processing window photos wait in the queue; meanwhile one is deleted, one replaced by
    another photo, one renamed. Then the queue is worked off: each has its documented outcome."""
    album = Album(folders)
    url = db_url_of(folders)
    album.add_small(2, album="Q", seed=7)
    gone = album.add("Q/gone.png", png_bytes(500), expect=False)
    old, new = png_bytes(501), png_bytes(502)
    swapped = album.add("Q/swapped.png", old, expect=False)
    moved_data = png_bytes(503)
    moved = album.add("Q/moved.png", moved_data)
    config = write_config(folders, processing_window=_closed_window())
    proc = start_daemon(config)
    try:
        wait_ready(config)
        wait_for(lambda: len(jobs(url)) == 5, 60, what="all queued")
        gone.unlink()
        swapped.write_bytes(new)
        album.photos[sha(new)] = new
        os.rename(moved, moved.with_name("moved later.png"))
        wait_for(lambda: len(jobs(url)) == 6, 60, what="the replacement queued")
        wait_for(
            lambda: log_lines(config.parent, r'job\.duplicate .*path="Q/moved later\.png"'),
            30,
            what="rename",
        )
        assert {r["state"] for r in jobs(url)} == {"queued"}, "the window is closed: nothing may run"
        assert not audits(folders["archive"])
        assert stop(proc) == 0
    finally:
        stop(proc)
    r = run_once(config)  # --once works regardless of the window
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = {(row["path"], row["sha256"]): row for row in jobs(url)}
    for key in (("Q/gone.png", sha(png_bytes(500))), ("Q/swapped.png", sha(old))):
        assert rows[key]["state"] == "failed", rows[key]
        assert "no longer in the inbox as it was queued" in rows[key]["error"], rows[key]
    assert rows[("Q/swapped.png", sha(new))]["state"] == "done"
    assert rows[("Q/moved.png", sha(moved_data))]["state"] == "done"
    records = check_invariants(album, url, allow_failed={sha(png_bytes(500)), sha(old)})
    keys = {next(o["path"] for o in r["outputs"] if o["role"] == "original") for r in records}
    # the replacement is a new job: the old one reserved "swapped", so it is archived as swapped_1
    assert "Q/swapped_1.original.png" in keys and "Q/moved.original.png" in keys, keys
    print("queued then deleted/replaced: 2 jobs failed with 'no longer in the inbox', 4 archived, lost 0")


def _ten_thousand(folders: dict[str, Path], n: int, size: int, process: bool) -> None:
    album = Album(folders)
    inbox = folders["inbox"]
    url = db_url_of(folders)
    (inbox / "Existing").mkdir()
    window = None if process else _closed_window()
    config = write_config(
        folders, processing_window=window, batch_size=16, watcher={"stable_s": 1.0, "rescan_interval_s": 3600}
    )
    payloads = [png_bytes(10_000 + i, size) for i in range(n)]
    stopped_share = n * 6 // 10
    proc = start_daemon(config)
    try:
        wait_ready(config)
        t0 = time.monotonic()
        # 40 % into a new folder while the daemon watches...
        for i in range(stopped_share, n):
            album.add(f"New/p{i:05d}.png", payloads[i])
        # ...60 % into a folder it already watches while it is stalled (SIGSTOP): several events per file
        # overflow the kernel's inotify queue (16384 events), and the dropped events must not lose files.
        proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(stopped_share):
                album.add(f"Existing/p{i:05d}.png", payloads[i])
        finally:
            proc.send_signal(signal.SIGCONT)
        dropped_s = time.monotonic() - t0
        wait_for(lambda: len(jobs(url)) >= n, 240 if not process else 60 * 30, 2.0, what=f"{n} jobs recorded")
        recorded_s = time.monotonic() - t0
        if process:
            wait_for(lambda: len(audits(folders["archive"])) == n, 60 * 60, 5.0, what="all archived")
        assert proc.poll() is None, "the daemon died"
        assert stop(proc, timeout=120) == 0
    finally:
        stop(proc)
    rows = jobs(url)
    assert {r["sha256"] for r in rows} == set(album.photos) and len(rows) == n
    overflowed = bool(log_lines(config.parent, r"(?i)inotify queue overflow"))
    max_events = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if max_events * 2 < stopped_share * 3:
        assert overflowed, "the inotify queue should have overflowed"
    if process:
        check_invariants(album, url)
    else:
        assert {r["state"] for r in rows} == {"queued"}
    done = "processed" if process else "queued (window closed)"
    print(
        f"{n} files dropped in {dropped_s:.1f}s, all {n} recorded {recorded_s:.0f}s after the drop and "
        f"{done}; inotify overflow: {overflowed}; lost 0"
    )


def test_ten_thousand_files_at_once_are_all_recorded(folders: dict[str, Path]) -> None:
    _ten_thousand(folders, 10_000, 8, process=False)


@pytest.mark.slow
def test_slow_ten_thousand_files_processed_end_to_end(folders: dict[str, Path]) -> None:
    _ten_thousand(folders, 10_000, 16, process=True)
