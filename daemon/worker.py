"""The worker: claim a batch, keep its leases alive, run the pipeline, write the archive, mark done.

A batch is prepared photo by photo on the CPU, then its GPU stage runs over the faces of all its photos
at once, then each photo is written. Errors are per photo: one bad file never fails its batch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from albumd.pipeline.imageio import ImageDecodeError
from sqlalchemy.exc import SQLAlchemyError

from .archive import ArchiveError, ArchiveWriter, sha256_file
from .config import Config
from .db import unavailable
from .face_stage import FaceStage
from .inbox import Inbox, InboxReadError
from .jobstore import ClaimedJob, JobStore, LeaseLost
from .leases import LeaseKeeper
from .logs import event, first_line
from .people import PeopleStore
from .prepare_pool import Cancelled, PrepareCrashed, PreparePool, SourceGone
from .process import Prepared, short_error, write

log = logging.getLogger("albumd.worker")


class Worker:
    def __init__(
        self, config: Config, store: JobStore, inbox: Inbox, stop: threading.Event, faces: FaceStage
    ) -> None:
        self.config = config
        self.faces = faces
        self.people = PeopleStore(store.sessions, config.state_dir / "people")
        self.store = store
        self.inbox = inbox
        self.stop = stop
        self.writer = ArchiveWriter(config.archive, int(config.umask, 8))
        self.last_progress = time.monotonic()
        self.current: dict[str, Any] | None = None
        self._keeper: LeaseKeeper | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="albumd-prepare")
        self.preparer = PreparePool(config)
        self._ahead: Future[tuple[list[ClaimedJob], list[tuple[ClaimedJob, Prepared]]]] | None = None
        # Set when a database error may have left jobs leased to this worker that it is not working on.
        self.needs_recovery = False

    @property
    def keeper(self) -> LeaseKeeper:
        if self._keeper is None or not self._keeper.alive():
            c = self.config
            self._keeper = LeaseKeeper(c.db_url, self.store.worker_id, c.heartbeat_s, c.lease_s)
        return self._keeper

    def close(self) -> None:
        try:
            self.release_ahead()
            if self.needs_recovery:
                self.recover()
        except SQLAlchemyError as exc:
            # Stopping while the database is away: the leases run out and the reaper requeues the jobs.
            event(log, "batch.release_failed", logging.WARNING, error=first_line(exc))
        self._pool.shutdown(wait=True)
        self.preparer.close()
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None

    def recover(self) -> int:
        """After a database error: give back every job this worker holds a lease on.

        The error may have left jobs claimed but unknown to the worker (a claim whose commit went through
        without an answer), or known but abandoned mid-batch. Until they are given back the lease keeper
        goes on renewing them, so they are neither lost nor counted as a crash; released, they go back to
        the queue without using up an attempt, since the database, not the photo, was at fault.
        """
        self.release_ahead()
        released = self.store.release(None)
        self.keeper.clear()
        self.needs_recovery = False
        return released

    def run_batch(self) -> int:
        """Process one batch. Returns how many jobs it held (0: the queue is empty).

        With a model loaded, the next batch is claimed and its CPU stages run while the GPU works on
        this one, so the GPU does not wait for decoding, splitting and face detection.
        """
        self.last_progress = time.monotonic()
        jobs, prepared = self._take_ahead() if self._ahead is not None else self._claim_and_prepare()
        if not jobs:
            return 0
        beat = self.keeper
        self.current = {"job_ids": [j.id for j in jobs], "done": 0, "total": len(jobs)}
        try:
            self.store.worker_status("processing", self.current)
            if self.faces.model is not None and not self.stop.is_set():
                self._ahead = self._pool.submit(self._claim_and_prepare)
            try:
                self._gpu_stage([p for _, p in prepared])
            except Exception as exc:
                if unavailable(exc):
                    raise
                for job, _ in prepared:
                    self._fail(job, beat, f"face restoration failed: {short_error(exc)}", permanent=False)
                prepared = []
            for job, prep in prepared:
                self._write(job, prep, beat)
                self.last_progress = time.monotonic()
        except BaseException:
            # The batch's leases stay renewed until recover() gives its unfinished jobs back.
            self.needs_recovery = True
            raise
        finally:
            self.current = None
        for job in jobs:
            beat.done(job.id)
        self.store.worker_status("idle")
        return len(jobs)

    def _take_ahead(self) -> tuple[list[ClaimedJob], list[tuple[ClaimedJob, Prepared]]]:
        ahead, self._ahead = self._ahead, None  # taken even if it raised: its claims are recovered
        return ([], []) if ahead is None else ahead.result()

    def _claim_and_prepare(self) -> tuple[list[ClaimedJob], list[tuple[ClaimedJob, Prepared]]]:
        """Claim a batch and run its CPU stages (jobs that fail here are recorded and dropped)."""
        try:
            jobs = self.store.claim(self.config.batch_size, self.config.lease_s)
            if not jobs:
                return [], []
            event(log, "batch.claimed", jobs=len(jobs), ids=",".join(str(j.id) for j in jobs))
            beat = self.keeper
            beat.hold([j.id for j in jobs])
            return jobs, self._prepare_all(jobs, beat)
        except BaseException:
            # Even a claim that raised may have committed without our hearing of it.
            self.needs_recovery = True
            raise

    def _prepare_all(self, jobs: list[ClaimedJob], beat: LeaseKeeper) -> list[tuple[ClaimedJob, Prepared]]:
        """Read each photo and run the CPU stages of all of them (in parallel with prepare_processes)."""
        for job in jobs:
            self._progress(job, "cpu stages")

        def finished(_i: int) -> None:
            self.last_progress = time.monotonic()

        results = self.preparer.run(jobs, self.stop, on_done=finished)
        prepared: list[tuple[ClaimedJob, Prepared]] = []
        cancelled: list[ClaimedJob] = []
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, Prepared):
                prepared.append((job, result))
            elif isinstance(result, Cancelled):
                cancelled.append(job)
            elif isinstance(result, (ImageDecodeError, SourceGone)):
                self._fail(job, beat, str(result), permanent=True)
            elif isinstance(result, PrepareCrashed):
                # Transient: a process can also die of memory the other photos took at the time.
                self._fail(job, beat, str(result), permanent=False)
            else:
                self._fail(job, beat, short_error(result), permanent=False)
        self._give_back(cancelled)
        return prepared

    def release_ahead(self) -> None:
        """Shutdown: give back the batch prepared ahead, unprocessed (no attempt is counted)."""
        if self._ahead is None:
            return
        jobs, _prepared = self._take_ahead()
        self._give_back(jobs)

    def _give_back(self, jobs: list[ClaimedJob]) -> None:
        """Return claimed jobs to the queue unprocessed (shutting down); those this worker already
        finished or failed, or no longer holds, are left as they are."""
        if not jobs:
            return
        released = self.store.release([j.id for j in jobs])
        for job in jobs:
            self.keeper.done(job.id)
        if released:
            event(log, "batch.released", jobs=released, reason="shutting down")

    def _gpu_stage(self, batch: list[Prepared]) -> list[Prepared]:
        """Restore the faces of the whole batch together; a failure here retries the batch's jobs."""
        if not batch:
            return batch
        for prep in batch:
            if prep.job.job_id is not None:
                self._progress_of(prep.job.job_id, "restoring faces (GPU)")
        self.faces.run(batch, person_prompt=self.people.prompt_for())
        return batch

    def _write(self, job: ClaimedJob, prep: Prepared, beat: LeaseKeeper) -> None:
        if job.id in beat.lost:
            event(log, "job.lease_lost", logging.WARNING, job_id=job.id)
            return
        self._progress(job, "writing archive")
        written: list[str] = []
        try:
            self.writer.ensure_root()
            self._record_people(job, prep)
            try:
                audit_path = write(prep, self.config, self.writer, self.faces.model_info(), written)
            except Exception:
                self._take_back(job, prep, written)
                raise
            self.store.complete(job.id, audit_path)
            beat.done(job.id)
            event(log, "job.done", job_id=job.id, path=job.path, audit=audit_path)
            if self.current is not None:
                self.current["done"] += 1
        except LeaseLost:
            event(log, "job.lease_lost", logging.WARNING, job_id=job.id)
            return
        except ArchiveError as exc:
            self._fail(job, beat, str(exc), permanent=False)
            return
        except Exception as exc:
            if unavailable(exc):
                raise  # not the photo's fault: the job goes back to the queue without using an attempt
            self._fail(job, beat, short_error(exc), permanent=False)
            return
        if self.config.inbox_after == "delete":
            self._delete_sources(job, prep)

    def _take_back(self, job: ClaimedJob, prep: Prepared, written: list[str]) -> None:
        """A write failed halfway (disk full, an encoder raising): remove what this job has in the archive,
        so that no file lies there which no audit record vouches for, whether the job is retried or ends
        failed. That includes an audit record an earlier, interrupted attempt left (with the files it
        names): it would now vouch for files that are gone or rewritten. Only while the job is still
        ours: after a takeover, another worker is writing the same names."""
        if not written:
            return  # nothing was replaced: an earlier attempt's files, if any, are still consistent
        try:
            if self.store.heartbeat([job.id], self.config.lease_s):
                return
        except Exception as exc:
            event(log, "archive.keep", logging.WARNING, job_id=job.id, reason=str(exc))
            return
        audit = f"{prep.job.archive_key}.audit.json"
        paths = [audit]
        try:
            paths += [o["path"] for o in json.loads(self.writer.target(audit).read_bytes())["outputs"]]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            event(log, "archive.stale_audit", logging.WARNING, job_id=job.id, reason=str(exc))
        # The audit goes first: at no moment does a record vouch for a file that is already gone.
        for rel in dict.fromkeys([*paths, *written]):
            try:
                self.writer.target(rel).unlink(missing_ok=True)
            except OSError as exc:
                event(log, "archive.keep", logging.WARNING, job_id=job.id, path=rel, reason=str(exc))
        event(log, "archive.taken_back", job_id=job.id, files=len(written))

    def _record_people(self, job: ClaimedJob, prep: Prepared) -> None:
        prints = prep.photo.prints
        assigned = self.people.record(job.id, [(p.index, p.found_faces) for p in prints])
        for p in prints:
            for face in p.faces:
                face["person_id"] = assigned.get((p.index, face["index"]))

    def _delete_sources(self, job: ClaimedJob, prep: Prepared) -> None:
        key = prep.job.archive_key
        ext = os.path.splitext(prep.job.rel_path)[1].lower() or ".bin"
        archived = self.writer.target(f"{key}.original{ext}")
        try:
            if sha256_file(archived) != job.sha256:
                event(
                    log, "inbox.keep", logging.WARNING, job_id=job.id, reason="archived copy does not verify"
                )
                return
        except OSError as exc:
            event(log, "inbox.keep", logging.WARNING, job_id=job.id, reason=str(exc))
            return
        for rel in self.store.sources_of(job.id):
            path = self.inbox.path_of(rel)
            try:
                if self.inbox.hash_file(path)[0] == job.sha256:
                    path.unlink()
                    self.store.forget_source(rel)
                    event(log, "inbox.deleted", job_id=job.id, path=rel)
            except (OSError, InboxReadError) as exc:
                event(log, "inbox.keep", logging.WARNING, job_id=job.id, path=rel, reason=str(exc))

    def _fail(self, job: ClaimedJob, beat: LeaseKeeper, error: str, permanent: bool) -> None:
        # The lease is dropped only once the failure is recorded: if the database is away, the job stays
        # renewed until recover() gives it back.
        try:
            if permanent:
                self.store.fail_permanent(job.id, error)
                event(log, "job.failed", logging.WARNING, job_id=job.id, path=job.path, error=error)
            else:
                state = self.store.fail_transient(
                    job.id,
                    error,
                    self.config.max_attempts,
                    self.config.retry_backoff_s,
                    self.config.retry_backoff_max_s,
                )
                event(log, "job.error", logging.WARNING, job_id=job.id, path=job.path, error=error, now=state)
        except LeaseLost:
            event(log, "job.lease_lost", logging.WARNING, job_id=job.id)
        beat.done(job.id)

    def _progress(self, job: ClaimedJob, what: str) -> None:
        self._progress_of(job.id, what)

    def _progress_of(self, job_id: int, what: str) -> None:
        # Progress is for `albumd status` only: a failed write must not stop the photo.
        try:
            self.store.set_progress(job_id, what)
        except Exception as exc:
            event(log, "progress.failed", logging.DEBUG, error=str(exc))
