"""The daemon's overheads found by the CPU benchmarks stay fixed (docs/performance.md, "Overheads found and
fixed"): an idle daemon leaves the database alone, a queued job wakes the idle worker, rescans and claims
cost a constant number of queries, ingest is one commit per file, archive names come from the index, the
PNG level is a lossless setting, and the audit times the decode and the write.

Real SQLite files and the real PostgreSQL server; real daemons as subprocesses where the behaviour is the
daemon's.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import sqlalchemy as sa
from albumd.daemon import db
from albumd.daemon.archive import ArchiveWriter
from albumd.daemon.config import Config
from albumd.daemon.inbox import Inbox, StabilityTracker
from albumd.daemon.jobstore import IDLE_REFRESH_S, JobStore
from albumd.daemon.models import Job, JobSource, Worker, utcnow
from albumd.daemon.process import PhotoJob, prepare, write
from albumd.daemon.service import Ingestor
from albumd.pipeline.imageio import encode_image, to_uint
from conftest import REPO, start_daemon, wait_for, write_config
from PIL import Image

SCHEMA = json.loads((REPO / "daemon" / "audit.schema.json").read_text())


def make_store(url: str, worker: str = "w1") -> JobStore:
    engine = db.make_engine(url)
    db.upgrade(engine)
    return JobStore(db.make_sessionmaker(engine), worker_id=worker)


def engine_of(store: JobStore) -> sa.Engine:
    return store.sessions.kw["bind"]  # type: ignore[no-any-return]


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every SQL statement the engine sends while the block runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)


@contextmanager
def commits(engine: sa.Engine) -> Iterator[list[int]]:
    seen: list[int] = []

    def on_commit(_conn: Any) -> None:
        seen.append(1)

    sa.event.listen(engine, "commit", on_commit)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "commit", on_commit)


def selects(seen: list[tuple[str, Any]]) -> list[str]:
    return [s for s, _ in seen if s.lstrip().upper().startswith("SELECT")]


def old_file(path: Path, data: bytes) -> None:
    """A file written a while ago: the stability tracker takes it on its second look."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - 600
    os.utime(path, (t, t))


def ingest_all(ingestor: Ingestor, tracker: StabilityTracker) -> None:
    for _ in range(5):
        for path in tracker.due():
            ingestor.ingest(path)
        if not len(tracker):
            return
    raise AssertionError("files did not become due")


def ingestor_for(folders: dict[str, Path], url: str) -> tuple[Ingestor, StabilityTracker, list[Path]]:
    config = Config(
        inbox=folders["inbox"], archive=folders["archive"], state_dir=folders["state"], database_url=url
    )
    store = make_store(url)
    inbox = Inbox(config)
    hashed: list[Path] = []
    real_hash = inbox.hash_file

    def counting_hash(path: Path) -> tuple[str, int]:
        hashed.append(path)
        return real_hash(path)

    inbox.hash_file = counting_hash  # type: ignore[method-assign]
    tracker = StabilityTracker(config.watcher.stable_s)
    return Ingestor(config, store, inbox, tracker), tracker, hashed


# -- 1. and 2.: the idle daemon ----------------------------------------------------------------------


def test_idle_worker_status_is_written_on_change_not_every_poll(db_url: str) -> None:
    store = make_store(db_url)
    store.register_worker("starting")
    engine = engine_of(store)

    def updates(seen: list[tuple[str, Any]]) -> int:
        return sum(1 for s, _ in seen if s.lstrip().upper().startswith("UPDATE WORKERS"))

    with statements(engine) as seen:
        wrote = [store.worker_status("idle", refresh_s=IDLE_REFRESH_S) for _ in range(30)]
    assert wrote == [True] + [False] * 29 and updates(seen) == 1, "an idle loop writes once, not every poll"
    with statements(engine) as seen:
        assert store.worker_status("paused", refresh_s=IDLE_REFRESH_S)  # a change is written at once
        assert not store.worker_status("paused", refresh_s=IDLE_REFRESH_S)
        assert store.worker_status("idle", refresh_s=IDLE_REFRESH_S)
        assert store.worker_status("idle", refresh_s=0.0)  # due for a refresh
    assert updates(seen) == 3
    assert store.workers(stale_after_s=60)[0]["state"] == "idle"

    # `albumd status` allows for the rare refresh of an idle worker, but not of a busy one.
    half_an_hour_ago = utcnow() - timedelta(minutes=30)
    with store.sessions.begin() as s:
        s.execute(sa.update(Worker).values(heartbeat_at=half_an_hour_ago))
    assert store.workers(stale_after_s=60)[0]["state"] == "idle"
    with store.sessions.begin() as s:
        s.execute(sa.update(Worker).values(state="processing"))
    assert store.workers(stale_after_s=60)[0]["state"] == "unresponsive"
    # a worker of this host whose process is gone is unresponsive whatever its last state
    with store.sessions.begin() as s:
        s.execute(sa.update(Worker).values(state="idle", heartbeat_at=utcnow(), pid=_dead_pid()))
    assert store.workers(stale_after_s=60)[0]["state"] == "unresponsive"


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _open_reader(db_path: Path) -> sqlite3.Connection:
    wait_for(lambda: db_path.exists(), 60, what="the database")
    reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)

    def worker_state() -> str | None:
        try:
            row = reader.execute("SELECT state FROM workers").fetchone()
        except sqlite3.OperationalError:  # tables not created yet
            return None
        return row[0] if row else None

    wait_for(lambda: worker_state() == "idle", 60, what="the worker to go idle")
    return reader


def _processed(reader: sqlite3.Connection, rel: str) -> Any:
    r = reader.execute("SELECT created_at, started_at, state FROM jobs WHERE path = ?", (rel,)).fetchone()
    return r if r and r[2] in ("done", "failed") else None


def test_idle_daemon_leaves_the_database_alone(folders: dict[str, Path], photos_dir: Path) -> None:
    # A short poll, so that a write per poll (the old idle loop) would show many times in the window.
    config = write_config(folders, idle_poll_s=0.25, watcher={"stable_s": 0.3})
    db_path = folders["state"] / "albumd.db"
    wal = db_path.with_name(db_path.name + "-wal")
    proc = start_daemon(config)
    try:
        reader = _open_reader(db_path)
        for round_ in range(2):
            time.sleep(1.0)
            before = _data_version(reader)
            wal_before = wal.stat().st_size, wal.stat().st_mtime_ns
            # ~20 idle polls, and the test config's reaper runs every second: none may commit anything.
            time.sleep(5.0)
            assert _data_version(reader) == before, f"the idle daemon committed changes (round {round_})"
            assert (wal.stat().st_size, wal.stat().st_mtime_ns) == wal_before, "the idle daemon wrote"
            if round_ == 0:
                # after some work, the worker is back to idle and quiet again
                (folders["inbox"] / "one.png").write_bytes((photos_dir / "bop_old_a.png").read_bytes())
                assert wait_for(lambda: _processed(reader, "one.png"), 120, what="the photo")[2] == "done"
                wait_for(
                    lambda: reader.execute("SELECT state FROM workers").fetchone()[0] == "idle",
                    30,
                    what="idle",
                )
        reader.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_queued_photo_wakes_the_idle_worker(folders: dict[str, Path], photos_dir: Path) -> None:
    # A 30 s poll: a photo claimed within seconds of being queued was woken by the event, not the poll.
    config = write_config(folders, idle_poll_s=30, watcher={"stable_s": 0.3})
    proc = start_daemon(config)
    try:
        reader = _open_reader(folders["state"] / "albumd.db")
        (folders["inbox"] / "Album").mkdir()
        waits = []
        for i, name in enumerate(["bop_old_a.png", "bop_old_b.png", "bop_old_c.png"]):
            rel = f"Album/{i}-{name}"
            (folders["inbox"] / rel).write_bytes((photos_dir / name).read_bytes())
            created, started, state = wait_for(
                lambda rel=rel: _processed(reader, rel), 120, interval=0.05, what=f"{rel} processed"
            )
            assert state == "done"
            waits.append(_ts(started) - _ts(created))
        # Woken at once (milliseconds; seconds on a very busy machine), where the poll alone would have
        # left each photo queued for up to 30 s after the previous one finished.
        assert max(waits) < 5.0, f"queued -> claimed {waits}"
        reader.close()
        proc.send_signal(signal.SIGTERM)
        # The stop wakes the worker too: no waiting out the 30 s poll.
        t0 = time.monotonic()
        assert proc.wait(timeout=60) == 0
        assert time.monotonic() - t0 < 20
    finally:
        if proc.poll() is None:
            proc.kill()


def _ts(text: str) -> float:
    import datetime as dt

    value = dt.datetime.fromisoformat(text)
    return value.replace(tzinfo=value.tzinfo or dt.UTC).timestamp()


@pytest.mark.postgres
def test_idle_worker_still_polls_for_jobs_queued_by_other_hosts(
    folders: dict[str, Path], pg_url: str
) -> None:
    config = write_config(folders, database_url=pg_url, idle_poll_s=0.5)
    proc = start_daemon(config)
    try:
        engine = sa.create_engine(pg_url)

        def worker_state() -> str | None:
            try:
                with engine.connect() as conn:
                    return conn.execute(sa.text("SELECT state FROM workers")).scalar()
            except sa.exc.ProgrammingError:  # the daemon has not created the tables yet
                return None

        wait_for(lambda: worker_state() == "idle", 60, what="the worker to go idle")
        # Another host queues a photo: nothing in this daemon's process is told, only the poll finds it.
        other = make_store(pg_url, worker="otherhost:1")
        job_id = other.enqueue("e" * 64, "far", "far/away.png", 10, 1, "far/away").job_id

        def taken() -> Job | None:
            job = other.get(job_id)
            return job if job is not None and job.started_at is not None else None

        job = wait_for(taken, 30, what="the idle worker to claim a job queued by another host")
        assert job.lease_owner != "otherhost:1"
        engine.dispose()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


# -- 3. and 4.: ingest and rescans --------------------------------------------------------------------


def test_rescan_is_one_query_whatever_the_inbox_size(db_url: str, folders: dict[str, Path]) -> None:
    ingestor, tracker, hashed = ingestor_for(folders, db_url)
    engine = engine_of(ingestor.store)
    counts = {}
    start = 0
    for n in (4, 40):
        for i in range(start, n):
            old_file(folders["inbox"] / f"album {i % 3}" / f"scan {i}.jpg", b"photo %d" % i)
        start = n
        ingestor.scan()
        ingest_all(ingestor, tracker)
        hashed.clear()
        with statements(engine) as seen:
            assert ingestor.scan() == 0, "a rescan of a recorded inbox notes nothing"
        counts[n] = len(selects(seen))
        assert not hashed and not len(tracker)
    assert counts[4] == counts[40] == 1, f"SELECTs per rescan by inbox size: {counts}"

    # Correctness of the set lookup: a changed file is taken again, an unchanged one is not.
    changed = folders["inbox"] / "album 1" / "scan 7.jpg"
    old_file(changed, b"a new scan under the old name")
    assert ingestor.scan() == 1
    ingest_all(ingestor, tracker)
    assert hashed == [changed] and ingestor.queued == 41
    rel = "album 1/scan 7.jpg"
    recorded = ingestor.store.known_sources()
    assert {p for p in recorded if p[0] == rel} == {(rel, changed.stat().st_size, changed.stat().st_mtime_ns)}
    assert len(recorded) == 40, "one record per inbox file"
    # a folder scan looks only below its folder, even for names LIKE would treat as patterns
    sub = folders["inbox"] / "album 1"
    below = ingestor.store.known_sources("album 1")
    assert below and all(p.startswith("album 1/") for p, _, _ in below)
    assert ingestor.scan(sub) == 0
    old_file(folders["inbox"] / "album 1x" / "scan.jpg", b"next door")
    old_file(folders["inbox"] / "album_1" / "scan.jpg", b"a wildcard away")
    assert ingestor.scan(sub) == 0, "files of neighbouring folders are not below album 1"
    assert ingestor.scan() == 2


def test_ingest_is_one_commit_per_new_file_and_keeps_the_content_rules(
    db_url: str, folders: dict[str, Path]
) -> None:
    ingestor, tracker, _hashed = ingestor_for(folders, db_url)
    store = ingestor.store
    engine = engine_of(store)
    old_file(folders["inbox"] / "a" / "one.jpg", b"first photo")
    assert ingestor.scan() == 1
    with commits(engine) as seen:
        ingest_all(ingestor, tracker)
    assert len(seen) == 1, f"{len(seen)} commits to ingest one new file"
    first = store.get(_job_id(store, "a/one.jpg"))
    assert first is not None

    # the same bytes under a second name: one job, two sources
    old_file(folders["inbox"] / "b" / "same.jpg", b"first photo")
    ingestor.scan()
    ingest_all(ingestor, tracker)
    assert store.counts()["queued"] == 1
    assert sorted(store.sources_of(first.id)) == ["a/one.jpg", "b/same.jpg"]

    # a file replaced under the same name by other bytes: a new job; the old job keeps its other name
    old_file(folders["inbox"] / "a" / "one.jpg", b"another photo entirely")
    ingestor.scan()
    with commits(engine) as seen:
        ingest_all(ingestor, tracker)
    assert len(seen) == 1
    assert store.counts()["queued"] == 2
    second = _job_id(store, "a/one.jpg")
    assert second != first.id
    assert store.sources_of(first.id) == ["b/same.jpg"]
    assert store.sources_of(second) == ["a/one.jpg"]
    assert store.get(second).archive_key == "a/one_1"  # the first photo keeps its archive name
    assert ingestor.queued == 2


def _job_id(store: JobStore, path: str) -> int:
    with store.sessions() as s:
        return int(s.execute(sa.select(JobSource.job_id).where(JobSource.path == path)).scalar_one())


def test_a_watcher_noted_file_already_recorded_is_not_hashed_again(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'state' / 'albumd.db'}"
    ingestor, tracker, hashed = ingestor_for(folders, url)
    path = folders["inbox"] / "a" / "x.jpg"
    old_file(path, b"photo")
    ingestor.scan()
    ingest_all(ingestor, tracker)
    assert hashed == [path]
    hashed.clear()
    tracker.observe(path)  # e.g. a chmod or a touch with the same mtime seen by inotify
    ingest_all(ingestor, tracker)
    assert hashed == [], "a recorded, unchanged file was hashed again"


# -- 5. and 6.: the job store's queries ---------------------------------------------------------------


def test_archive_names_are_reserved_through_the_unique_index(tmp_path: Path) -> None:
    store = make_store(f"sqlite:///{tmp_path / 'albumd.db'}")
    engine = engine_of(store)
    for i in range(300):
        store.enqueue(f"{i:064x}", "a", f"a/p{i}.jpg", 5, 1, f"a/p{i}")
    with statements(engine) as seen:
        store.enqueue("f" * 64, "a", "a/p7.jpg", 5, 2, "a/p7")
    queries = [(s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT")]
    assert any("archive_key IN" in s for s, _ in queries)
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        for sql, params in queries:
            plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]
            assert all(step.startswith("SEARCH") for step in plan), f"{sql}\n{plan}"
            assert not any(step.startswith("SCAN") for step in plan)
    assert store.get(_job_id(store, "a/p7.jpg")).archive_key == "a/p7_1"


@pytest.mark.parametrize(
    "key", ["a/100%_x\\y", "a/under_score", "a/back\\slash", "a/per%cent", "a/p", "a/[brackets]"]
)
def test_archive_name_suffixes_are_exact_for_any_characters(db_url: str, key: str) -> None:
    store = make_store(db_url)
    # Decoys a pattern match would take for the key's own names: they must neither block nor be reused.
    decoys = [key + "z", key + "_x", key + "_01"]
    lookalike = key.replace("%", "X").replace("_", "Y").replace("\\", "Q")
    if lookalike != key:
        decoys.append(lookalike + "_1")
    for i, d in enumerate(decoys):
        store.enqueue(f"{i + 1000:064x}", "a", f"decoy{i}.jpg", 5, 1, d)
    keys = [
        store.get(store.enqueue(f"{i:064x}", "a", f"p{i}.jpg", 5, 1, key).job_id).archive_key
        for i in range(20)
    ]
    # past the first probe of 16 names the next batch is probed
    assert keys == [key] + [f"{key}_{n}" for n in range(1, 20)]
    # names the database does not know but the disk holds are skipped too
    on_disk = {f"{key}_20", f"{key}_21"}
    job = store.enqueue("d" * 64, "a", "q.jpg", 5, 1, key, key_in_use=lambda k: k in on_disk)
    assert store.get(job.job_id).archive_key == f"{key}_22"


def test_claim_reads_every_jobs_sources_in_one_query(db_url: str) -> None:
    store = make_store(db_url)
    for i in range(16):
        store.enqueue(f"{i:064x}", "a", f"a/p{i}.jpg", 5, 1, f"a/p{i}")
        store.enqueue(f"{i:064x}", "b", f"b/copy of p{i}.jpg", 5, 1, f"b/copy of p{i}")
    engine = engine_of(store)
    with statements(engine) as one:
        (single,) = store.claim(1, 60)
    with statements(engine) as eight:
        batch = store.claim(8, 60)
    assert len(batch) == 8
    assert len(selects(eight)) == len(selects(one)), "claim's queries grow with the batch"
    assert single.sources == ["a/p0.jpg", "b/copy of p0.jpg"]
    for n, job in enumerate(batch, start=1):
        assert job.sources == [f"a/p{n}.jpg", f"b/copy of p{n}.jpg"], "sources in the order first seen"


# -- 7. and 8.: the PNG level and the audit's timings -------------------------------------------------


def _decoded(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    return np.asarray(im)


@pytest.mark.parametrize(("bit_depth", "grey"), [(8, False), (16, False), (8, True), (16, True)])
def test_every_png_level_is_lossless(bit_depth: int, grey: bool) -> None:
    rng = np.random.default_rng(bit_depth + grey)
    # grain on a gradient, like a scan: compressible, but not trivially
    y, x = np.mgrid[0:96, 0:128] / 128.0
    img = np.clip(np.stack([x, y, (x + y) / 2], axis=2) + rng.normal(0, 0.05, (96, 128, 3)), 0, 1)
    img = img.astype(np.float32)
    expected = to_uint(img.mean(axis=2) if grey else img, bit_depth)
    sizes = {}
    for level in range(10):
        data = encode_image(img, "png", bit_depth=bit_depth, greyscale=grey, png_compress_level=level)
        got = _decoded(data)
        if bit_depth == 16 and not grey:
            got = _decoded_16bit_rgb(data)
        assert got.shape == expected.shape and np.array_equal(got.astype(expected.dtype), expected), level
        sizes[level] = len(data)
    assert sizes[0] > sizes[3] > sizes[9], f"the level has no effect: {sizes}"


def _decoded_16bit_rgb(data: bytes) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return arr[..., ::-1]


def test_png_level_setting_reaches_the_archive_and_the_audit_times_decode_and_write(
    folders: dict[str, Path], photos_dir: Path
) -> None:
    with pytest.raises(ValueError):
        Config(
            inbox=folders["inbox"],
            archive=folders["archive"],
            state_dir=folders["state"],
            png_compress_level=10,
        )
    data = (photos_dir / "bop_old_a.png").read_bytes()
    outputs = {}
    for level in (0, 9):
        archive = folders["archive"] / f"level{level}"
        config = Config(
            inbox=folders["inbox"], archive=archive, state_dir=folders["state"], png_compress_level=level
        )
        before = utcnow()
        prep = prepare(PhotoJob(data, "Album/bop_old_a.png", "Album", "Album/bop_old_a"), config)
        audit_rel = write(
            prep,
            config,
            ArchiveWriter(archive),
            {
                "path": None,
                "sha256": None,
                "dtype": None,
                "device": None,
                "status": "skipped",
                "reason": "no model configured",
            },
        )
        audit = json.loads((archive / audit_rel).read_text())
        jsonschema.validate(audit, SCHEMA)
        names = [s["name"] for s in audit["stages"]]
        assert names[0] == "decode" and names[-1] == "write", names
        decode, written = audit["stages"][0], audit["stages"][-1]
        assert decode["seconds"] > 0 and decode["result"]["width"] == audit["input"]["width"]
        assert written["seconds"] > 0 and written["parameters"]["png_compress_level"] == level
        assert written["result"]["outputs"] == len(audit["outputs"])
        assert written["result"]["bytes"] == sum(o["bytes"] for o in audit["outputs"])
        # started_at is this photo's start, finished_at its outputs written: both within this call
        started, finished = (_ts(audit[k]) for k in ("started_at", "finished_at"))
        assert before.timestamp() - 1 <= started <= finished <= time.time() + 1
        assert finished - started >= decode["seconds"]
        outputs[level] = (archive / "Album" / "bop_old_a.restored.png").read_bytes()
    assert len(outputs[0]) > 1.2 * len(outputs[9]), "png_compress_level did not reach the restored PNG"
    assert np.array_equal(_decoded(outputs[0]), _decoded(outputs[9])), "the level changed the pixels"


@pytest.mark.timeout(150)
def test_bench_idle_quick(tmp_path: Path) -> None:
    """The idle benchmark's harness keeps working, and what it measures stays at zero."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBUMD_")}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_idle.py"),
            "--quick",
            "--seconds",
            "3",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "cpu-idle-quick.json").read_text())
    assert doc["settings"]["quick"] is True and doc["machine"]["cpu_count"] >= 1
    per = doc["results"]["per_30s"]
    assert per["db_commits_seen"] == 0 and per["wal_growth_bytes"] == 0, per
    assert doc["results"]["processes"] >= 2  # the daemon and its lease keeper were both watched
