"""The worker: claim a batch, keep its leases alive, run the pipeline, write the archive, mark done.

A batch is prepared photo by photo on the CPU, then its GPU stage runs over the faces of all its photos
at once, then each photo is written. Errors are per photo: one bad file never fails its batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import Any

from albumd.pipeline.imageio import ImageDecodeError

from .archive import ArchiveError, ArchiveWriter, sha256_file
from .config import Config
from .inbox import Inbox, InboxReadError
from .jobstore import ClaimedJob, JobStore, LeaseLost
from .logs import event
from .process import PhotoJob, Prepared, diffusion_skipped_record, prepare, short_error, write

log = logging.getLogger("albumd.worker")


class Heartbeat(threading.Thread):
    """Renews the batch's leases from its own thread, so a long pipeline call cannot let them lapse."""

    def __init__(self, store: JobStore, job_ids: list[int], interval_s: float, lease_s: float) -> None:
        super().__init__(name="albumd-heartbeat", daemon=True)
        self.store = store
        self.job_ids = list(job_ids)
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.lost: set[int] = set()
        self._stop_event = threading.Event()
        self.last_beat = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                active = [j for j in self.job_ids if j not in self.lost]
                self.lost |= self.store.heartbeat(active, self.lease_s)
                self.last_beat = time.monotonic()
            except Exception as exc:  # the DB may be briefly unavailable; the next beat retries
                event(log, "heartbeat.failed", logging.WARNING, error=str(exc))

    def done(self, job_id: int) -> None:
        if job_id in self.job_ids:
            self.job_ids.remove(job_id)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


class Worker:
    def __init__(self, config: Config, store: JobStore, inbox: Inbox, stop: threading.Event) -> None:
        self.config = config
        self.store = store
        self.inbox = inbox
        self.stop = stop
        self.writer = ArchiveWriter(config.archive, int(config.umask, 8))
        self.last_progress = time.monotonic()
        self.current: dict[str, Any] | None = None
        self.model_info = skipped_model_info(config)

    def run_batch(self) -> int:
        """Claim and process one batch. Returns how many jobs were claimed (0: the queue is empty)."""
        self.last_progress = time.monotonic()
        jobs = self.store.claim(self.config.batch_size, self.config.lease_s)
        if not jobs:
            return 0
        self.current = {"job_ids": [j.id for j in jobs], "done": 0, "total": len(jobs)}
        self.store.worker_status("processing", self.current)
        event(log, "batch.claimed", jobs=len(jobs), ids=",".join(str(j.id) for j in jobs))
        beat = Heartbeat(self.store, [j.id for j in jobs], self.config.heartbeat_s, self.config.lease_s)
        beat.start()
        try:
            prepared: list[tuple[ClaimedJob, Prepared]] = []
            for n, job in enumerate(jobs):
                if self.stop.is_set():
                    released = self.store.release([j.id for j in jobs[n:]])
                    for j in jobs[n:]:
                        beat.done(j.id)
                    event(log, "batch.released", jobs=released, reason="shutting down")
                    break
                prep = self._prepare(job, beat)
                if prep is not None:
                    prepared.append((job, prep))
                self.last_progress = time.monotonic()
            self._gpu_stage([p for _, p in prepared])
            for job, prep in prepared:
                self._write(job, prep, beat)
                self.last_progress = time.monotonic()
        finally:
            beat.stop()
            self.current = None
            self.store.worker_status("idle")
        return len(jobs)

    def _prepare(self, job: ClaimedJob, beat: Heartbeat) -> Prepared | None:
        self._progress(job, "decode")
        try:
            data, rel = self._read(job)
            photo_job = PhotoJob(data, rel, job.album, job.archive_key, job.id, job.sha256)
            self._progress(job, "cpu stages")
            return prepare(photo_job, self.config)
        except (ImageDecodeError, SourceGone) as exc:
            self._fail(job, beat, str(exc), permanent=True)
        except Exception as exc:
            self._fail(job, beat, short_error(exc), permanent=False)
        return None

    def _gpu_stage(self, batch: list[Prepared]) -> None:
        annotate_gpu_skipped(batch, self.config)

    def _write(self, job: ClaimedJob, prep: Prepared, beat: Heartbeat) -> None:
        if job.id in beat.lost:
            event(log, "job.lease_lost", logging.WARNING, job_id=job.id)
            return
        self._progress(job, "writing archive")
        try:
            self.writer.ensure_root()
            audit_path = write(prep, self.config, self.writer, self.model_info)
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
            self._fail(job, beat, short_error(exc), permanent=False)
            return
        if self.config.inbox_after == "delete":
            self._delete_sources(job, prep)

    def _read(self, job: ClaimedJob) -> tuple[bytes, str]:
        """The job's bytes from any inbox path that still holds exactly them."""
        problems = []
        for rel in job.sources or [job.path]:
            try:
                data = self.inbox.read(rel)
            except InboxReadError as exc:
                problems.append(str(exc))
                continue
            if hashlib.sha256(data).hexdigest() == job.sha256:
                return data, rel
            problems.append(f"{rel}: content changed since it was queued")
        raise SourceGone(
            "the photo is no longer in the inbox as it was queued (" + "; ".join(problems) + "); "
            "if it was replaced, the new file is queued as its own job"
        )

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
            path = self.inbox.root / rel
            try:
                if self.inbox.hash_file(path)[0] == job.sha256:
                    path.unlink()
                    self.store.forget_source(rel)
                    event(log, "inbox.deleted", job_id=job.id, path=rel)
            except (OSError, InboxReadError) as exc:
                event(log, "inbox.keep", logging.WARNING, job_id=job.id, path=rel, reason=str(exc))

    def _fail(self, job: ClaimedJob, beat: Heartbeat, error: str, permanent: bool) -> None:
        beat.done(job.id)
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

    def _progress(self, job: ClaimedJob, what: str) -> None:
        try:
            self.store.set_progress(job.id, what)
        except Exception as exc:
            event(log, "progress.failed", logging.DEBUG, error=str(exc))


def skipped_model_info(config: Config) -> dict[str, Any]:
    return {
        "path": str(config.model.path) if config.model.path else None,
        "sha256": None,
        "dtype": None,
        "device": None,
        "status": "skipped",
        "reason": diffusion_skipped_record(config).skipped,
    }


def annotate_gpu_skipped(batch: list[Prepared], config: Config) -> None:
    record = diffusion_skipped_record(config)
    for prep in batch:
        for p in prep.photo.prints:
            p.stages.append(record)


class SourceGone(Exception):
    """No inbox path holds the job's bytes any more (deleted or replaced before processing)."""
