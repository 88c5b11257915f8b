"""Lease renewal from a separate process.

A thread is not enough: dlib's detectors and some image routines hold Python's GIL for seconds, and a
heartbeat thread would stall with them and let healthy jobs' leases lapse. The keeper process has its
own interpreter and database connection, renews the leases of the jobs the worker holds, reports the
ones it lost, and exits when the daemon does (also after SIGKILL: it watches its parent), so the leases
of a dead daemon expire as they should.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("albumd.leases")
READY_TIMEOUT_S = 120.0


class LeaseKeeper:
    def __init__(self, db_url: str, worker_id: str, interval_s: float, lease_s: float) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_keep,
            args=(child, db_url, worker_id, interval_s, lease_s, os.getpid()),
            name="albumd-leases",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self._lost: set[int] = set()
        # Starting an interpreter takes seconds on a busy machine; wait for it before any claim, so that
        # no lease can lapse while the keeper is still importing.
        if not self._conn.poll(READY_TIMEOUT_S) or self._conn.recv() != ("ready", []):
            self.close()
            raise RuntimeError(f"the lease keeper process did not start within {READY_TIMEOUT_S} s")

    def hold(self, job_ids: list[int]) -> None:
        """Start renewing these jobs' leases (in addition to those already held)."""
        self.lost  # noqa: B018 - collect pending reports first, so a re-claimed job is not taken as lost
        self._lost.difference_update(job_ids)
        self._send(("hold", list(job_ids)))

    def done(self, job_id: int) -> None:
        """Stop renewing a job's lease (finished, failed or released)."""
        self._send(("drop", [job_id]))

    def clear(self) -> None:
        """Stop renewing every lease (the worker gave all its jobs back)."""
        self._send(("clear", []))

    @property
    def lost(self) -> set[int]:
        """Jobs whose lease was taken back by the reaper: this worker must not finish them."""
        try:
            while self._conn.poll():
                kind, ids = self._conn.recv()
                if kind == "lost":
                    self._lost.update(ids)
        except (EOFError, OSError):
            pass
        return self._lost

    def alive(self) -> bool:
        return self._proc.is_alive()

    def close(self) -> None:
        self._send(("stop", []))
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()

    def _send(self, msg: tuple[str, list[int]]) -> None:
        try:
            self._conn.send(msg)
        except (BrokenPipeError, OSError) as exc:
            log.warning("lease keeper unreachable: %s", exc)


def _keep(
    conn: Connection, db_url: str, worker_id: str, interval_s: float, lease_s: float, parent: int
) -> None:
    from . import db
    from .jobstore import JobStore

    engine = db.make_engine(db_url)
    store = JobStore(db.make_sessionmaker(engine), worker_id=worker_id)
    held: set[int] = set()
    next_beat = time.monotonic()
    conn.send(("ready", []))
    try:
        while os.getppid() == parent:
            timeout = max(0.0, next_beat - time.monotonic())
            if conn.poll(min(timeout, 1.0)):
                kind, ids = _recv(conn)
                if kind == "stop":
                    return
                if kind == "hold":
                    held.update(ids)
                    next_beat = time.monotonic()  # renew the new claims' leases at once
                elif kind == "drop":
                    held.difference_update(ids)
                elif kind == "clear":
                    held.clear()
                continue
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + interval_s
            if not held:
                continue
            try:
                lost = store.heartbeat(sorted(held), lease_s)
            except Exception as exc:  # the database may be briefly unavailable; the next beat retries
                log.warning("lease renewal failed: %s", exc)
                continue
            if lost:
                held -= lost
                conn.send(("lost", sorted(lost)))
    finally:
        engine.dispose()


def _recv(conn: Connection) -> tuple[str, Any]:
    try:
        return conn.recv()  # type: ignore[no-any-return]
    except (EOFError, OSError):
        return "stop", []
