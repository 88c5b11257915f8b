"""The job queue: enqueue by content hash, claim with a lease, heartbeat, complete, fail, retry, reap.

Every state change is one short write transaction. A claim takes rows with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL (so two daemons never take the same photo) and under SQLite's ``BEGIN IMMEDIATE`` write lock;
finishing a job checks that its lease is still ours, so a worker whose lease was reaped cannot mark a
job that another worker now owns.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .archive import crash_point
from .models import Job, JobSource, JobState, Worker, utcnow

ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
IDLE_WORKER_STATES = ("idle", "paused")
# How often a worker that stays idle (or paused) re-confirms its row: rarely, so that an idle daemon
# leaves the disk alone; `albumd status` allows for it (see JobStore.workers).
IDLE_REFRESH_S = 3600.0


@dataclass(frozen=True)
class EnqueueResult:
    job_id: int
    created: bool
    """False when the same content was already known (another name, or dropped again)."""


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    sha256: str
    album: str
    path: str
    archive_key: str
    attempts: int
    sources: list[str]


class LeaseLost(Exception):
    """The job's lease expired and was taken back; this worker must not finish it."""


class JobStore:
    def __init__(self, sessions: sessionmaker[Session], worker_id: str | None = None) -> None:
        self.sessions = sessions
        self.worker_id = worker_id or f"{socket.gethostname()}:{_pid()}"
        # (state, batch JSON) of this store's last worker_status write, and when (monotonic).
        self._last_status: tuple[tuple[str, str | None], float] | None = None

    # -- ingest -----------------------------------------------------------------------------------

    def known_source(self, path: str, size: int, mtime_ns: int) -> bool:
        """Is this exact file (path, size, mtime) already recorded? Lets a rescan skip re-hashing."""
        with self.sessions() as s:
            row = s.execute(
                select(JobSource.id).where(
                    JobSource.path == path, JobSource.size == size, JobSource.mtime_ns == mtime_ns
                )
            ).first()
            return row is not None

    def _dialect(self) -> str:
        bind = self.sessions.kw.get("bind")
        return bind.dialect.name if bind is not None else ""

    def known_sources(self, under: str | None = None) -> set[tuple[str, int, int]]:
        """Every recorded ``(path, size, mtime_ns)``, or those below the inbox folder ``under``.

        One SELECT for a whole scan instead of one ``known_source`` per file: a rescan of a large,
        already ingested inbox costs one query plus a set lookup per file (about 150 bytes of memory per
        recorded file while the scan runs).
        """
        stmt = select(JobSource.path, JobSource.size, JobSource.mtime_ns)
        if under:
            # A range, not LIKE: the path index answers it on both backends and no character of the
            # folder name needs escaping. "0" is the character after "/", so this is "under/..." exactly
            # under byte-order comparison (SQLite; PostgreSQL compares COLLATE "C" here on purpose).
            lo, hi = under.rstrip("/") + "/", under.rstrip("/") + "0"
            col = JobSource.path.collate("C") if self._dialect() == "postgresql" else JobSource.path
            stmt = stmt.where(col >= lo, col < hi)
        with self.sessions() as s:
            return {(path, size, mtime_ns) for path, size, mtime_ns in s.execute(stmt)}

    def enqueue(
        self,
        sha256: str,
        album: str,
        path: str,
        size: int,
        mtime_ns: int,
        archive_key: str,
        key_in_use: Callable[[str], bool] = lambda _key: False,
    ) -> EnqueueResult:
        """Record a stable inbox file. The same sha256 is one job, whatever its name.

        ``key_in_use`` tells whether an archive name is already used on disk by something the database
        does not know (an archive kept from an earlier installation).
        """
        for _ in range(20):
            try:
                return self._enqueue_once(sha256, album, path, size, mtime_ns, archive_key, key_in_use)
            except IntegrityError:
                # Another daemon inserted the same photo or reserved the same archive name between our
                # read and our insert; the next round sees its row.
                continue
        raise RuntimeError(f"could not enqueue {path}: conflicting inserts did not settle")

    def _enqueue_once(
        self,
        sha256: str,
        album: str,
        path: str,
        size: int,
        mtime_ns: int,
        archive_key: str,
        key_in_use: Callable[[str], bool],
    ) -> EnqueueResult:
        now = utcnow()
        with self.sessions.begin() as s:
            job = s.execute(select(Job).where(Job.sha256 == sha256)).scalar_one_or_none()
            created = job is None
            if job is None:
                job = Job(
                    sha256=sha256,
                    album=album,
                    path=path,
                    bytes=size,
                    archive_key=_free_key(s, archive_key, key_in_use),
                    state=JobState.QUEUED,
                    attempts=0,
                    crashes=0,
                    created_at=now,
                    updated_at=now,
                )
                s.add(job)
                s.flush()
            # The path now holds these bytes: a record of it holding other content before (a file
            # replaced under the same name) goes in the same transaction, so a crash cannot leave the
            # path forgotten but not re-recorded, and a new file costs one commit, not two.
            s.execute(delete(JobSource).where(JobSource.path == path, JobSource.job_id != job.id))
            source = (
                None
                if created
                else s.execute(
                    select(JobSource).where(JobSource.job_id == job.id, JobSource.path == path)
                ).scalar_one_or_none()
            )
            if source is None:
                s.add(JobSource(job_id=job.id, path=path, size=size, mtime_ns=mtime_ns, seen_at=now))
            else:
                source.size, source.mtime_ns, source.seen_at = size, mtime_ns, now
            s.flush()
            crash_point("db.enqueue")  # inserted, not committed
            result = EnqueueResult(job_id=job.id, created=created)
        crash_point("db.enqueued")
        return result

    def forget_source(self, path: str) -> int:
        """The inbox file is gone (deleted after archiving): drop the path record (the job stays).

        A path that now holds other content needs no call: ``enqueue`` replaces its record.
        """
        with self.sessions.begin() as s:
            return s.execute(delete(JobSource).where(JobSource.path == path)).rowcount or 0

    # -- claiming -------------------------------------------------------------------------------

    def claim(self, limit: int, lease_s: float) -> list[ClaimedJob]:
        now = utcnow()
        with self.sessions.begin() as s:
            rows = (
                s.execute(
                    select(Job)
                    .where(
                        Job.state == JobState.QUEUED,
                        or_(Job.not_before.is_(None), Job.not_before <= now),
                    )
                    .order_by(Job.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            # Every claimed job's inbox paths in one query (not one per job), oldest record first.
            sources: dict[int, list[str]] = {job.id: [] for job in rows}
            if rows:
                for job_id, src in s.execute(
                    select(JobSource.job_id, JobSource.path)
                    .where(JobSource.job_id.in_(list(sources)))
                    .order_by(JobSource.id)
                ):
                    sources[job_id].append(src)
            claimed: list[ClaimedJob] = []
            for job in rows:
                job.state = JobState.RUNNING
                job.lease_owner = self.worker_id
                job.lease_expires_at = now + timedelta(seconds=lease_s)
                job.started_at = now
                job.updated_at = now
                job.progress = "claimed"
                paths = sources[job.id]
                claimed.append(
                    ClaimedJob(job.id, job.sha256, job.album, job.path, job.archive_key, job.attempts, paths)
                )
            if claimed:
                s.flush()
                crash_point("db.claim")  # rows locked and updated, not committed
        if claimed:
            crash_point("db.claimed")
        return claimed

    def heartbeat(self, job_ids: list[int], lease_s: float) -> set[int]:
        """Extend our leases; returns the ids whose lease we no longer hold."""
        if not job_ids:
            return set()
        now = utcnow()
        with self.sessions.begin() as s:
            held = set(
                s.execute(
                    select(Job.id).where(
                        Job.id.in_(job_ids), Job.lease_owner == self.worker_id, Job.state == JobState.RUNNING
                    )
                ).scalars()
            )
            if held:
                s.execute(
                    update(Job)
                    .where(Job.id.in_(held))
                    .values(lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
                )
        return set(job_ids) - held

    def set_progress(self, job_id: int, progress: str) -> None:
        with self.sessions.begin() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == self.worker_id)
                .values(progress=progress[:255])
            )

    # -- outcomes -------------------------------------------------------------------------------

    def _owned(self, s: Session, job_id: int) -> Job:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.state != JobState.RUNNING or job.lease_owner != self.worker_id:
            raise LeaseLost(f"job {job_id} is no longer leased to {self.worker_id}")
        return job

    def complete(self, job_id: int, audit_path: str) -> None:
        now = utcnow()
        with self.sessions.begin() as s:
            job = self._owned(s, job_id)
            job.state = JobState.DONE
            job.audit_path = audit_path
            job.error = job.error_kind = None
            job.lease_owner = job.lease_expires_at = None
            job.progress = None
            job.finished_at = job.updated_at = now
            s.flush()
            crash_point("db.complete")  # archive written, DONE not committed
        crash_point("db.completed")

    def fail_permanent(self, job_id: int, error: str) -> None:
        now = utcnow()
        with self.sessions.begin() as s:
            job = self._owned(s, job_id)
            job.state = JobState.FAILED
            job.error, job.error_kind = error, "permanent"
            job.attempts += 1
            job.lease_owner = job.lease_expires_at = None
            job.progress = None
            job.finished_at = job.updated_at = now

    def fail_transient(
        self, job_id: int, error: str, max_attempts: int, backoff_s: float, backoff_max_s: float
    ) -> str:
        """Count a failed try; requeue with exponential backoff, or fail after max_attempts."""
        now = utcnow()
        with self.sessions.begin() as s:
            job = self._owned(s, job_id)
            job.attempts += 1
            job.error, job.error_kind = error, "transient"
            job.lease_owner = job.lease_expires_at = None
            job.progress = None
            job.updated_at = now
            if job.attempts >= max_attempts:
                job.state = JobState.FAILED
                job.error = f"gave up after {job.attempts} attempts: {error}"
                job.finished_at = now
            else:
                delay = min(backoff_max_s, backoff_s * 2 ** (job.attempts - 1))
                job.state = JobState.QUEUED
                job.not_before = now + timedelta(seconds=delay)
            return job.state

    def release(self, job_ids: list[int] | None) -> int:
        """Give back jobs we claimed but did not start (shutdown): no attempt is counted.

        ``None``: every job this worker holds a lease on, known to it or not (after a database error a
        claim's commit may have gone through without the worker hearing of it).
        """
        if job_ids is not None and not job_ids:
            return 0
        now = utcnow()
        mine = [Job.lease_owner == self.worker_id, Job.state == JobState.RUNNING]
        if job_ids is not None:
            mine.append(Job.id.in_(job_ids))
        with self.sessions.begin() as s:
            return (
                s.execute(
                    update(Job)
                    .where(*mine)
                    .values(
                        state=JobState.QUEUED,
                        lease_owner=None,
                        lease_expires_at=None,
                        progress=None,
                        updated_at=now,
                    )
                ).rowcount
                or 0
            )

    def dead_local_owners(self) -> list[str]:
        """Lease owners that were processes on this host which no longer exist (killed, crashed).

        Their leases can be reaped at once instead of after ``lease_s``: a restart after a crash resumes
        right away. A live process with a reused pid only means waiting for the lease as usual.
        """
        prefix = f"{socket.gethostname()}:"
        with self.sessions() as s:
            owners = s.execute(
                select(Job.lease_owner)
                .where(Job.state == JobState.RUNNING, Job.lease_owner.like(prefix + "%"))
                .distinct()
            ).scalars()
            dead = []
            for owner in owners:
                pid = owner[len(prefix) :]
                if owner != self.worker_id and pid.isdigit() and not _alive(int(pid)):
                    dead.append(owner)
            return dead

    def reap_expired(
        self, crash_limit: int, now: datetime | None = None, owners: list[str] | None = None
    ) -> tuple[int, int]:
        """Return jobs whose worker stopped heartbeating to the queue; quarantine repeat offenders.

        ``owners``: reap the leases of these (dead) workers whether or not they have expired.
        Returns (requeued, quarantined).
        """
        now = now or utcnow()
        requeued = quarantined = 0
        if owners is not None and not owners:
            return 0, 0
        stale = Job.lease_expires_at < now if owners is None else Job.lease_owner.in_(owners)
        with self.sessions.begin() as s:
            expired = (
                s.execute(
                    select(Job).where(Job.state == JobState.RUNNING, stale).with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            for job in expired:
                owner = job.lease_owner
                job.crashes += 1
                job.lease_owner = job.lease_expires_at = None
                job.progress = None
                job.updated_at = now
                if job.crashes >= crash_limit:
                    job.state = JobState.QUARANTINED
                    job.error_kind = "crash"
                    job.error = (
                        f"quarantined: the worker processing it died or hung {job.crashes} times "
                        f"(last lease held by {owner}); `albumd retry {job.id}` to try again"
                    )
                    job.finished_at = now
                    quarantined += 1
                else:
                    job.state = JobState.QUEUED
                    job.error = f"worker {owner} stopped renewing its lease; requeued"
                    job.error_kind = "crash"
                    requeued += 1
        return requeued, quarantined

    def retry(self, job_ids: list[int] | None = None, failed: bool = False) -> int:
        """Put failed or quarantined jobs back in the queue with a fresh attempt count."""
        now = utcnow()
        with self.sessions.begin() as s:
            cond = Job.state.in_([JobState.FAILED, JobState.QUARANTINED])
            stmt = update(Job).where(cond)
            if job_ids:
                stmt = stmt.where(Job.id.in_(job_ids))
            elif not failed:
                return 0
            return (
                s.execute(
                    stmt.values(
                        state=JobState.QUEUED,
                        attempts=0,
                        crashes=0,
                        not_before=None,
                        error=None,
                        error_kind=None,
                        finished_at=None,
                        updated_at=now,
                    )
                ).rowcount
                or 0
            )

    # -- reporting ------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.sessions() as s:
            rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        counts: Counter[str] = Counter({state.value: 0 for state in JobState})
        counts.update({state: n for state, n in rows})
        return dict(counts)

    def pending(self) -> int:
        """Jobs not finished yet (queued, waiting for a retry, or running)."""
        with self.sessions() as s:
            return s.execute(select(func.count()).where(Job.state.in_(ACTIVE_STATES))).scalar_one()

    def next_ready_at(self) -> datetime | None:
        with self.sessions() as s:
            return s.execute(
                select(func.min(Job.not_before)).where(Job.state == JobState.QUEUED)
            ).scalar_one()

    def failures(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.sessions() as s:
            jobs = s.execute(
                select(Job)
                .where(Job.state.in_([JobState.FAILED, JobState.QUARANTINED]))
                .order_by(Job.id)
                .limit(limit)
            ).scalars()
            return [
                {"job_id": j.id, "path": j.path, "album": j.album, "state": j.state, "error": j.error or ""}
                for j in jobs
            ]

    def get(self, job_id: int) -> Job | None:
        with self.sessions() as s:
            return s.get(Job, job_id)

    def sources_of(self, job_id: int) -> list[str]:
        with self.sessions() as s:
            return list(s.execute(select(JobSource.path).where(JobSource.job_id == job_id)).scalars())

    # -- workers --------------------------------------------------------------------------------

    def register_worker(self, state: str = "starting") -> None:
        now = utcnow()
        with self.sessions.begin() as s:
            w = s.get(Worker, self.worker_id)
            if w is None:
                w = Worker(
                    id=self.worker_id,
                    hostname=socket.gethostname(),
                    pid=_pid(),
                    started_at=now,
                    heartbeat_at=now,
                    state=state,
                )
                s.add(w)
            w.state, w.heartbeat_at, w.current_batch = state, now, None
        self._last_status = ((state, None), time.monotonic())

    def worker_status(
        self, state: str, batch: dict[str, Any] | None = None, refresh_s: float | None = None
    ) -> bool:
        """Record this worker's state (what `albumd status` shows). Returns whether it wrote.

        With ``refresh_s``, a call that would write the same state and batch as this store's last write,
        made less than ``refresh_s`` ago, writes nothing: the idle loop asks every second, and a write
        each time would keep a NAS disk from ever spinning down.
        """
        current = (state, json.dumps(batch) if batch else None)
        now = time.monotonic()
        if refresh_s is not None and self._last_status is not None:
            last, at = self._last_status
            if last == current and now - at < refresh_s:
                return False
        with self.sessions.begin() as s:
            s.execute(
                update(Worker)
                .where(Worker.id == self.worker_id)
                .values(state=current[0], heartbeat_at=utcnow(), current_batch=current[1])
            )
        self._last_status = (current, now)
        return True

    def unregister_worker(self) -> None:
        with self.sessions.begin() as s:
            s.execute(delete(Worker).where(Worker.id == self.worker_id))

    def workers(self, stale_after_s: float) -> list[dict[str, Any]]:
        """Registered workers; one that stopped reporting is shown as ``unresponsive``.

        An idle or paused worker only re-confirms its row every ``IDLE_REFRESH_S``, so it is judged
        against that; a worker on this host whose process is gone is unresponsive at once.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=stale_after_s)
        idle_cutoff = now - timedelta(seconds=max(stale_after_s, 2 * IDLE_REFRESH_S))
        host = socket.gethostname()

        def state(w: Worker) -> str:
            if w.hostname == host and not _alive(w.pid):
                return "unresponsive"
            fresh = w.heartbeat_at >= (idle_cutoff if w.state in IDLE_WORKER_STATES else cutoff)
            return w.state if fresh else "unresponsive"

        with self.sessions() as s:
            rows = s.execute(select(Worker).order_by(Worker.started_at)).scalars().all()
            return [
                {
                    "id": w.id,
                    "state": state(w),
                    "heartbeat_at": w.heartbeat_at.isoformat(),
                    "current_batch": json.loads(w.current_batch) if w.current_batch else None,
                }
                for w in rows
            ]


# Archive names probed per query when reserving one: the name and its first _1.._15 variants.
KEY_PROBE = 16


def _free_key(s: Session, key: str, key_in_use: Callable[[str], bool]) -> str:
    """``next_free_key`` against the jobs table: ``key``, else the first free ``key_1``, ``key_2``...

    The candidates are probed by equality (``IN``), which the unique index on ``archive_key`` answers on
    both backends whatever the database's collation, instead of reading every key with the prefix
    (``LIKE ... ESCAPE`` cannot use the index, and a ``>= / <`` range is only right under byte order,
    which a PostgreSQL database in e.g. en_US.UTF-8 does not use).
    """
    start = 0
    while True:
        batch = [key if n == 0 else f"{key}_{n}" for n in range(start, start + KEY_PROBE)]
        taken = set(s.execute(select(Job.archive_key).where(Job.archive_key.in_(batch))).scalars())
        for candidate in batch:
            if candidate not in taken and not key_in_use(candidate):
                return candidate
        start += KEY_PROBE


def _pid() -> int:
    import os

    return os.getpid()


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
