"""The CPU stages of several photos at once, in worker processes.

Decoding, splitting, tone, defects and above all face detection take seconds of CPU per photo and hold
the GIL for long stretches (dlib), so threads would not help and one process cannot keep a GPU fed. With
``prepare_processes`` above 1 a batch's photos are prepared in that many processes; with 1 they are
prepared one after another in the worker itself, as before.

A process that dies (a decoder crashing on a hostile file, the kernel's OOM killer) breaks the whole
executor and every photo in it. The photos it held are then tried again one at a time in a fresh pool:
only the one that kills its process on its own fails, with that reason; the others are prepared.

The processes are ended whenever the worker finds the queue empty: with the face models loaded each
holds about 240 MB, which an idle NAS should not keep; starting them again costs about a second.

Each process reads its photo from the inbox itself. Only the job's few fields cross the pipe to it: on
Python 3.11 an executor whose process died while megabytes of a photo were being sent to another one
deadlocks when it shuts down.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from .config import Config
from .inbox import Inbox, InboxReadError
from .jobstore import ClaimedJob
from .logs import event
from .process import PhotoJob, Prepared, prepare

log = logging.getLogger("albumd.prepare")
# How often a pool process checks that the daemon which started it still exists.
PARENT_CHECK_S = 1.0


class PrepareCrashed(Exception):
    """The process preparing this photo died (the photo alone kills it): a fault of the photo."""


class Cancelled(Exception):
    """Not prepared: the daemon is stopping."""


class SourceGone(Exception):
    """No inbox path holds the job's bytes any more (deleted or replaced before processing)."""


def read_and_prepare(job: ClaimedJob, config: Config) -> Prepared:
    """The job's photo from the inbox, decoded and through the CPU stages."""
    data, rel = read_source(job, Inbox(config))
    return prepare(PhotoJob(data, rel, job.album, job.archive_key, job.id, job.sha256), config)


def read_source(job: ClaimedJob, inbox: Inbox) -> tuple[bytes, str]:
    """The job's bytes from any inbox path that still holds exactly them."""
    problems = []
    for rel in job.sources or [job.path]:
        try:
            data = inbox.read(rel)
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


def default_processes(cpu_count: int | None = None) -> int:
    """One per core but one (the worker, the GPU and the main loop need a core), at most 4: each process
    holds a decoded scan and its intermediates, several hundred MB for a large one."""
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, min(4, cores - 1))


class PreparePool:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.processes = config.prepare_processes or default_processes()
        self._executor: ProcessPoolExecutor | None = None

    def run(
        self,
        jobs: Sequence[ClaimedJob],
        stop: threading.Event,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Prepared | BaseException]:
        """Prepare every photo; the result or the exception of each, in the order of ``jobs``.

        ``on_done(i)`` is called as photo ``i`` finishes (progress). Photos not started once ``stop`` is
        set come back as :class:`Cancelled`.
        """
        if self.processes <= 1:
            return self._run_here(jobs, stop, on_done)
        results: list[Prepared | BaseException | None] = [None] * len(jobs)
        broken = self._run_pooled(list(range(len(jobs))), jobs, stop, on_done, results)
        for i in broken:
            # Alone in a fresh pool: a photo that kills its process again is the one at fault. (A batch
            # of one has already run alone.)
            if len(jobs) == 1 or self._run_pooled([i], jobs, stop, on_done, results):
                results[i] = PrepareCrashed(
                    "the process preparing this photo died (a decoder or detector crashed on it, or the "
                    "system ran out of memory); the other photos of its batch were prepared"
                )
                event(log, "prepare.crashed", logging.WARNING, job_id=jobs[i].id, path=jobs[i].path)
        return [r if r is not None else Cancelled() for r in results]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _run_here(
        self, jobs: Sequence[ClaimedJob], stop: threading.Event, on_done: Callable[[int], None] | None
    ) -> list[Prepared | BaseException]:
        out: list[Prepared | BaseException] = []
        for i, job in enumerate(jobs):
            if stop.is_set():
                out.append(Cancelled())
                continue
            try:
                out.append(read_and_prepare(job, self.config))
            except Exception as exc:
                out.append(exc)
            if on_done is not None:
                on_done(i)
        return out

    def _run_pooled(
        self,
        indices: list[int],
        jobs: Sequence[ClaimedJob],
        stop: threading.Event,
        on_done: Callable[[int], None] | None,
        results: list[Prepared | BaseException | None],
    ) -> list[int]:
        """Run ``indices`` in the pool, filling ``results``; returns those lost to a broken pool."""
        executor = self._pool()
        futures: dict[Future[Prepared], int] = {}
        for i in indices:
            if stop.is_set():
                break
            futures[executor.submit(read_and_prepare, jobs[i], self.config)] = i
        broken: list[int] = []
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            if stop.is_set():
                for f in pending:
                    f.cancel()  # those already running finish; their results are kept
            for f in done:
                i = futures[f]
                if f.cancelled():
                    continue
                exc = f.exception()
                if isinstance(exc, BrokenProcessPool):
                    broken.append(i)
                    continue
                results[i] = exc if exc is not None else f.result()
                if on_done is not None:
                    on_done(i)
        if broken:
            event(log, "prepare.pool_broken", logging.WARNING, photos=len(broken))
            self._discard()
        return sorted(broken)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=mp.get_context("spawn"),
                initializer=_child_init,
                initargs=(os.getpid(),),
            )
        return self._executor

    def _discard(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _child_init(parent: int) -> None:
    # Ctrl+C in a terminal reaches the whole process group: the daemon decides when to stop, and its
    # pool processes finish the photo in hand. (SIGTERM stays: the executor ends the processes of a
    # broken pool with it, and systemd's KillMode=mixed sends it to the daemon alone.) A SIGKILLed daemon
    # cannot shut its pool down, and the processes would wait for work for ever: they leave once their
    # parent is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)
