"""The job store on real SQLite files and a real PostgreSQL database."""

from __future__ import annotations

import multiprocessing as mp
from datetime import timedelta
from typing import Any

import pytest
from albumd.daemon import db
from albumd.daemon.jobstore import JobStore, LeaseLost
from albumd.daemon.models import Base, JobState, utcnow
from sqlalchemy import inspect


def make_store(url: str, worker: str = "w1") -> JobStore:
    engine = db.make_engine(url)
    db.upgrade(engine)
    return JobStore(db.make_sessionmaker(engine), worker_id=worker)


def add(store: JobStore, n: int, prefix: str = "p") -> list[int]:
    return [
        store.enqueue(f"{i:064x}", "album", f"album/{prefix}{i}.jpg", 10, 1, f"album/{prefix}{i}").job_id
        for i in range(n)
    ]


def test_migrations_build_the_models_schema(db_url: str) -> None:
    engine = db.make_engine(db_url)
    before, after = db.upgrade(engine)
    assert before is None and after == db.head_revision(db_url)
    assert db.upgrade(engine) == (after, after)  # idempotent
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == [], f"models and migrations disagree: {diffs}"


def test_same_content_is_one_job(db_url: str) -> None:
    s = make_store(db_url)
    a = s.enqueue("a" * 64, "x", "x/one.jpg", 5, 1, "x/one")
    b = s.enqueue("a" * 64, "y", "y/other-name.jpg", 5, 2, "y/other-name")
    again = s.enqueue("a" * 64, "x", "x/one.jpg", 5, 1, "x/one")
    assert a.created and not b.created and not again.created
    assert a.job_id == b.job_id == again.job_id
    assert sorted(s.sources_of(a.job_id)) == ["x/one.jpg", "y/other-name.jpg"]
    assert s.counts()["queued"] == 1
    assert s.known_source("y/other-name.jpg", 5, 2) and not s.known_source("y/other-name.jpg", 6, 2)


def test_different_photo_same_name_gets_suffix(db_url: str) -> None:
    s = make_store(db_url)
    keys = []
    for i in range(3):
        job = s.enqueue(f"{i:064x}", "a", f"a/img{i}.jpg", 5, 1, "a/img")
        keys.append(s.get(job.job_id).archive_key)
    assert keys == ["a/img", "a/img_1", "a/img_2"]
    # a name used on disk by an archive the database does not know is skipped too
    job = s.enqueue("f" * 64, "b", "b/x.jpg", 5, 1, "b/x", key_in_use=lambda k: k == "b/x")
    assert s.get(job.job_id).archive_key == "b/x_1"


def test_claim_lease_heartbeat_complete(db_url: str) -> None:
    s = make_store(db_url)
    ids = add(s, 5)
    batch = s.claim(3, lease_s=30)
    assert [j.id for j in batch] == ids[:3]
    assert s.counts()["running"] == 3
    assert s.claim(10, 30)[0].id == ids[3]
    assert s.heartbeat([j.id for j in batch], 30) == set()
    s.complete(batch[0].id, "album/p0.audit.json")
    assert s.get(batch[0].id).state == JobState.DONE
    other = JobStore(s.sessions, worker_id="w2")
    with pytest.raises(LeaseLost):
        other.complete(batch[1].id, "x")
    assert other.heartbeat([batch[1].id], 30) == {batch[1].id}


def test_expired_leases_requeue_then_quarantine(db_url: str) -> None:
    s = make_store(db_url)
    (job_id,) = add(s, 1)
    s.claim(1, lease_s=30)
    later = utcnow() + timedelta(seconds=60)
    assert s.reap_expired(crash_limit=2, now=utcnow()) == (0, 0)  # lease still valid
    assert s.reap_expired(crash_limit=2, now=later) == (1, 0)
    job = s.get(job_id)
    assert job.state == JobState.QUEUED and job.crashes == 1 and "lease" in job.error
    s.claim(1, lease_s=30)
    assert s.reap_expired(crash_limit=2, now=later) == (0, 1)
    job = s.get(job_id)
    assert job.state == JobState.QUARANTINED and "died or hung 2 times" in job.error
    with pytest.raises(LeaseLost):
        s.complete(job_id, "x")
    assert s.retry([job_id]) == 1
    assert s.get(job_id).state == JobState.QUEUED and s.get(job_id).crashes == 0


def test_transient_errors_back_off_then_fail(db_url: str) -> None:
    s = make_store(db_url)
    (job_id,) = add(s, 1)
    s.claim(1, 30)
    assert (
        s.fail_transient(job_id, "disk full", max_attempts=3, backoff_s=100, backoff_max_s=1000) == "queued"
    )
    job = s.get(job_id)
    delay = (job.not_before - utcnow()).total_seconds()
    assert 90 < delay <= 100
    assert s.claim(1, 30) == []  # still backing off
    assert s.next_ready_at() == job.not_before
    for expected in ("queued", "failed"):
        with s.sessions.begin() as sess:
            from albumd.daemon.models import Job

            sess.get(Job, job_id).not_before = utcnow()
        assert s.claim(1, 30)[0].id == job_id
        assert s.fail_transient(job_id, "disk full", 3, 100, 1000) == expected
        if expected == "queued":
            assert 190 < (s.get(job_id).not_before - utcnow()).total_seconds() <= 200
    job = s.get(job_id)
    assert (
        job.state == JobState.FAILED
        and job.attempts == 3
        and "gave up after 3 attempts: disk full" in job.error
    )
    assert s.failures()[0]["error"] == job.error


def test_permanent_error_fails_at_once(db_url: str) -> None:
    s = make_store(db_url)
    (job_id,) = add(s, 1)
    s.claim(1, 30)
    s.fail_permanent(job_id, "not an image Pillow can identify")
    job = s.get(job_id)
    assert job.state == JobState.FAILED and job.error_kind == "permanent"
    assert s.retry(failed=True) == 1 and s.get(job_id).state == JobState.QUEUED


def test_release_returns_jobs_without_counting_an_attempt(db_url: str) -> None:
    s = make_store(db_url)
    ids = add(s, 3)
    s.claim(3, 30)
    assert s.release(ids[1:]) == 2
    assert s.counts() == {"queued": 2, "running": 1, "done": 0, "failed": 0, "quarantined": 0}
    assert all(s.get(i).attempts == 0 for i in ids)


def test_release_all_gives_back_only_this_workers_running_jobs(db_url: str) -> None:
    """After a database error a worker gives back every job leased to it, known to it or not; jobs of
    other workers and finished jobs stay as they are."""
    mine, other = make_store(db_url, worker="a"), make_store(db_url, worker="b")
    add(mine, 5)
    held = mine.claim(3, 30)
    theirs = other.claim(1, 30)
    mine.complete(held[0].id, "x.audit.json")
    assert mine.release(None) == 2
    assert [mine.get(j.id).state for j in held] == [JobState.DONE, JobState.QUEUED, JobState.QUEUED]
    assert mine.get(theirs[0].id).state == JobState.RUNNING
    assert all(mine.get(j.id).attempts == 0 and mine.get(j.id).crashes == 0 for j in held)


def _claimer(url: str, name: str, ready: mp.Queue, start: Any, out: mp.Queue) -> None:
    store = make_store(url, worker=name)
    store.counts()  # connected before the start
    ready.put(name)
    start.wait(120)
    mine = []
    while batch := store.claim(3, 60):
        for job in batch:
            store.complete(job.id, f"{job.archive_key}.audit.json")
            mine.append(job.id)
    out.put(mine)


def test_concurrent_workers_never_claim_the_same_job(db_url: str) -> None:
    s = make_store(db_url)
    ids = add(s, 120)
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    ready: mp.Queue = ctx.Queue()
    start = ctx.Event()
    procs = [ctx.Process(target=_claimer, args=(db_url, f"w{i}", ready, start, out)) for i in range(4)]
    for p in procs:
        p.start()
    # Start them together: a process spawns in seconds on a busy machine, and the first one up could
    # otherwise drain the whole queue (a few hundred ms) before the others have imported albumd.
    for _ in procs:
        ready.get(timeout=120)
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == ids, "every job processed exactly once"
    assert len(set(claimed)) == len(claimed)
    assert sum(1 for r in results if r) >= 2, "work was shared between workers"
    assert s.counts()["done"] == 120
