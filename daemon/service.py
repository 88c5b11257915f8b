"""The daemon: watcher and ingest in the main loop, the worker in its own thread, the scheduler beside.

The main loop stays responsive whatever the pipeline does: it hashes and queues stable files, talks to
systemd (READY once migrations and watchers are up, STATUS with the queue depth, WATCHDOG pings only
while the worker thread is alive and making progress), and handles SIGTERM: stop claiming, let the worker
finish its current photo and release the rest, exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import datetime
from datetime import time as dtime
from pathlib import Path
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from sdnotify import SystemdNotifier
from sqlalchemy.exc import SQLAlchemyError

from . import db
from .archive import ArchiveWriter
from .config import Config
from .face_stage import FaceStage, ModelError
from .inbox import Inbox, InboxReadError, StabilityTracker
from .jobstore import IDLE_REFRESH_S, JobStore
from .logs import event, first_line
from .mounts import sqlite_network_problem
from .watcher import Watcher
from .worker import Worker

log = logging.getLogger("albumd.daemon")

TICK_S = 0.25
# Below this much free space the daemon stops claiming photos (an archive entry is a few times the scan).
ARCHIVE_MIN_FREE = 64 * 1024 * 1024


def window_open(window: tuple[dtime, dtime] | None, now: datetime) -> bool:
    """Inside the processing window? A window may wrap midnight (22:00-06:00)."""
    if window is None:
        return True
    start, end = window
    t = now.time()
    return start <= t < end if start < end else (t >= start or t < end)


class Ingestor:
    """Stable inbox files into the job store (hash, dedupe by content, reserve the archive name)."""

    def __init__(
        self,
        config: Config,
        store: JobStore,
        inbox: Inbox,
        tracker: StabilityTracker,
        wake: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.inbox = inbox
        self.tracker = tracker
        self.writer = ArchiveWriter(config.archive)
        self.queued = 0
        # Set when a job is queued, so that an idle worker starts on it at once instead of at its next poll.
        self.wake = wake
        # Files a scan found unrecorded, with the (size, mtime_ns) it saw: when one becomes due unchanged,
        # ingest need not ask the database again before hashing it.
        self._unrecorded: dict[str, tuple[int, int]] = {}

    def scan(self, folder: Path | None = None) -> int:
        """Note every candidate file under ``folder`` (default: the whole inbox) for the stability wait."""
        n = 0
        root = folder or self.inbox.root
        parts = None if folder is None else self.inbox.relative(folder)  # None: the inbox root itself
        whole = parts is None
        paths = self.inbox.walk() if folder is None else _walk(self.inbox, root)
        # One query for the whole scan, then a set lookup per file: a periodic rescan of a large inbox
        # that is already recorded must not cost a database round trip per file.
        known = self.store.known_sources(None if parts is None else "/".join(parts))
        unrecorded = {} if whole else self._unrecorded
        for path in paths:
            cand = self.inbox.candidate(path)
            if cand is None:
                continue
            if (cand.rel, cand.size, cand.mtime_ns) in known:
                continue
            unrecorded[cand.rel] = (cand.size, cand.mtime_ns)
            self.tracker.observe(cand.path)
            n += 1
        # A full scan starts the memo afresh, so entries of files that vanished do not pile up.
        self._unrecorded = unrecorded
        return n

    def ingest(self, path: Path) -> None:
        reason = self.inbox.why_not(path)
        if reason is not None:
            level = logging.INFO if "ignore" in reason or "extension" in reason else logging.WARNING
            event(log, "inbox.skipped", level, path=str(path), reason=reason)
            return
        cand = self.inbox.candidate(path)
        if cand is None:
            return
        # Files noted by the watcher (or changed since the scan saw them) are checked here, so that a
        # known file is never hashed again.
        scanned = self._unrecorded.pop(cand.rel, None) == (cand.size, cand.mtime_ns)
        if not scanned and self.store.known_source(cand.rel, cand.size, cand.mtime_ns):
            return
        try:
            sha, size = self.inbox.hash_file(cand.path)
        except InboxReadError as exc:
            event(log, "inbox.unreadable", logging.WARNING, path=cand.rel, reason=str(exc))
            return
        if size != cand.size:
            self.tracker.observe(cand.path)  # it changed while we hashed it: wait again
            return
        # One transaction: enqueue also drops the record of other content this path held before.
        result = self.store.enqueue(
            sha, cand.album, cand.rel, size, cand.mtime_ns, self.inbox.archive_key(cand), self._key_on_disk
        )
        self.queued += result.created
        if result.created and self.wake is not None:
            self.wake.set()
        event(
            log,
            "job.queued" if result.created else "job.duplicate",
            job_id=result.job_id,
            path=cand.rel,
            album=cand.album,
            sha256=sha[:16],
        )

    def _key_on_disk(self, key: str) -> bool:
        try:
            return self.writer.target(f"{key}.audit.json").exists()
        except OSError:
            return False


def _drained(store: JobStore) -> bool:
    try:
        return store.pending() == 0
    except SQLAlchemyError:
        return False


def _walk(inbox: Inbox, folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = [d for d in dirnames if not inbox.ignored((d,))]
        out.extend(Path(dirpath) / f for f in filenames)
    return out


class Daemon:
    def __init__(self, config: Config, once: bool = False) -> None:
        self.config = config
        self.once = once
        self.stop = threading.Event()
        self.notifier = SystemdNotifier()
        # A blocking send to a notify socket whose reader is slow would stall the main loop.
        sock = getattr(self.notifier, "socket", None)
        if sock is not None:
            sock.setblocking(False)
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog_every_s = min(5.0, int(usec) / 2e6) if usec.isdigit() and int(usec) > 0 else 1.0
        self.worker_error: BaseException | None = None
        self.paused: str | None = None
        # Wakes the idle worker: a job was queued or requeued here, or the daemon is stopping.
        self.wake = threading.Event()

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        event(log, "daemon.stopping", signal=signal.Signals(signum).name)
        self.stop.set()
        self.wake.set()

    def check_folders(self) -> None:
        c = self.config
        for name, path in (("inbox", c.inbox), ("archive", c.archive)):
            if not path.is_dir():
                raise SystemExit(f"albumd: {name} folder {path} does not exist (set `{name}` in the config)")
        c.state_dir.mkdir(parents=True, exist_ok=True)
        # The default database and an explicit sqlite:// URL alike (see mounts.sqlite_network_problem).
        problem = sqlite_network_problem(c.db_url)
        if problem:
            raise SystemExit(f"albumd: {problem}")

    def run(self) -> int:
        c = self.config
        os.umask(int(c.umask, 8))
        self.check_folders()
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        try:
            faces = FaceStage.from_config(c)
        except ModelError as exc:
            raise SystemExit(f"albumd: the configured model cannot be used: {exc}") from exc
        engine = db.make_engine(c.db_url)
        before, after = db.upgrade(engine)
        if before != after:
            event(log, "db.upgraded", before=before, after=after)
        store = JobStore(db.make_sessionmaker(engine))
        store.register_worker("starting")
        self._reap(store)
        inbox = Inbox(c)
        tracker = StabilityTracker(c.watcher.stable_s, c.watcher.empty_stable_s)
        ingestor = Ingestor(c, store, inbox, tracker, self.wake)
        watcher = None if self.once else Watcher(c.inbox, c.watcher, tracker)
        if watcher:
            watcher.start()
        ingestor.scan()
        scheduler = self._scheduler(store, ingestor) if not self.once else None
        worker = Worker(c, store, inbox, self.stop, faces)
        worker.keeper  # noqa: B018 - start the lease keeper before READY and before any claim
        idle = threading.Event()
        thread = threading.Thread(target=self._work, args=(worker, idle), name="albumd-worker", daemon=True)
        thread.start()
        self.notifier.notify("READY=1")
        event(
            log,
            "daemon.ready",
            inbox=str(c.inbox),
            archive=str(c.archive),
            once=self.once,
            worker=store.worker_id,
        )
        last_status = last_ping = last_reap = 0.0
        try:
            while not self.stop.is_set():
                # A database that is briefly away (PostgreSQL restarting, SQLite locked past its busy
                # timeout) must not stop the daemon: the folder or file is simply looked at again later.
                for folder in watcher.drain_new_dirs() if watcher else []:
                    try:
                        ingestor.scan(folder)
                    except SQLAlchemyError as exc:
                        error = first_line(exc)
                        event(log, "ingest.failed", logging.WARNING, folder=str(folder), error=error)
                        watcher.new_dirs.put(folder)
                        break
                for path in tracker.due():
                    if self.stop.is_set():
                        break  # what is not recorded yet is found by the rescan at the next start
                    try:
                        ingestor.ingest(path)
                    except SQLAlchemyError as exc:
                        event(log, "ingest.failed", logging.WARNING, path=str(path), error=first_line(exc))
                        tracker.observe(path)
                now = time.monotonic()
                if (
                    now - last_ping >= self.watchdog_every_s
                    and thread.is_alive()
                    and now - worker.last_progress < c.lease_s
                ):
                    last_ping = now
                    self.notifier.notify("WATCHDOG=1")
                if now - last_status > 2.0:
                    last_status = now
                    self._status(store, worker)
                if self.once and now - last_reap >= c.reaper_interval_s:
                    # --once has no scheduler, but must still get back jobs a killed run left leased.
                    last_reap = now
                    self._reap(store)
                # The worker also leaves its loop when a stop request arrived during this pass: only an
                # exit with an error, or one nobody asked for, is a death.
                if not thread.is_alive() and (self.worker_error is not None or not self.stop.is_set()):
                    raise RuntimeError(f"worker thread died: {self.worker_error!r}")
                if self.once and len(tracker) == 0 and idle.is_set() and _drained(store):
                    break
                time.sleep(TICK_S)
        finally:
            self.stop.set()
            self.wake.set()
            self.notifier.notify("STOPPING=1")
            thread.join()
            worker.close()
            if watcher:
                watcher.stop()
            if scheduler:
                scheduler.shutdown(wait=False)
            store.unregister_worker()
            engine.dispose()
            event(log, "daemon.stopped", queued=ingestor.queued)
        return 0

    def archive_problem(self) -> str | None:
        """Why the archive cannot take photos now (missing, read-only, full), or None."""
        root = self.config.archive
        try:
            ArchiveWriter(root).ensure_root()
            st = os.statvfs(root)
        except OSError as exc:
            return str(exc)
        free = st.f_bavail * st.f_frsize
        if free < ARCHIVE_MIN_FREE:
            return f"archive folder {root} is full ({free:,} bytes free, {ARCHIVE_MIN_FREE:,} needed)"
        return None

    def _work(self, worker: Worker, idle: threading.Event) -> None:
        failures = 0
        paused: str | None = None
        try:
            while not self.stop.is_set():
                try:
                    paused = self._work_step(worker, idle, paused)
                    failures = 0
                except SQLAlchemyError as exc:
                    # The database went away (PostgreSQL restarting, SQLite locked past its busy
                    # timeout): wait and carry on. The next step first gives back the jobs this worker
                    # held (Worker.recover); the thread lives on, so the daemon recovers by itself.
                    failures += 1
                    error = first_line(exc)
                    event(log, "worker.db_error", logging.WARNING, error=error, retry_s=min(30, failures))
                    worker.current = None
                    idle.clear()
                    self.stop.wait(min(30.0, float(failures)))
        except BaseException as exc:
            self.worker_error = exc
            log.exception("worker.crashed")
            raise

    def _work_step(self, worker: Worker, idle: threading.Event, paused: str | None) -> str | None:
        """One claim (or one idle wait). Returns the archive problem now in force, if any."""
        if worker.needs_recovery:
            released = worker.recover()
            event(log, "worker.recovered", released=released)
        # The long-running daemon claims nothing while the archive cannot be written: the photos stay
        # queued without using up their attempts, and work resumes by itself once the disk is back,
        # writable, or has room again. (--once tries, and reports what failed.)
        problem = None if self.once else self.archive_problem()
        if problem != paused:
            if problem:
                event(log, "archive.unavailable", logging.ERROR, reason=problem, action="paused")
            else:
                event(log, "archive.available", action="resumed")
        self.paused = problem
        # Cleared before the claim: a job queued from here on sets it again and cuts the idle wait short.
        self.wake.clear()
        if problem:
            claimed = 0
        elif self.once or window_open(self.config.window, datetime.now()):
            claimed = worker.run_batch()
        else:
            claimed = 0
        if claimed:
            idle.clear()
        else:
            idle.set()
            worker.preparer.close()  # nothing to prepare: give the processes' memory back
            # Written when the state changes and then only every IDLE_REFRESH_S, not every poll.
            worker.store.worker_status("paused" if problem else "idle", refresh_s=IDLE_REFRESH_S)
            worker.last_progress = time.monotonic()
            if not self.stop.is_set():
                # The poll stays for jobs this process does not see being queued: other hosts on
                # PostgreSQL, `albumd retry`, retry backoffs running out.
                self.wake.wait(self.config.idle_poll_s)
        return problem

    def _status(self, store: JobStore, worker: Worker) -> None:
        try:
            counts = store.counts()
        except Exception:
            return
        batch = worker.current
        text = ", ".join(f"{state} {counts[state]}" for state in ("queued", "running", "done", "failed"))
        if batch:
            text += f"; batch {batch['done']}/{batch['total']}"
        if self.paused:
            text += f"; PAUSED: {self.paused}"
        self.notifier.notify(f"STATUS={text}")

    def _scheduler(self, store: JobStore, ingestor: Ingestor) -> BackgroundScheduler:
        c = self.config
        # Missed runs (host asleep, long GC pause) are coalesced into one and still run within the grace.
        defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
        sched = BackgroundScheduler(job_defaults=defaults, daemon=True)
        sched.add_job(ingestor.scan, "interval", seconds=c.watcher.rescan_interval_s, id="rescan")
        sched.add_job(self._reap, "interval", seconds=c.reaper_interval_s, args=[store], id="reaper")
        sched.add_job(self._housekeeping, "interval", hours=1, id="housekeeping")
        sched.start()
        return sched

    def _reap(self, store: JobStore) -> None:
        """Expired leases, and at once those of workers on this host whose process is gone."""
        limit = self.config.crash_limit
        try:
            requeued, quarantined = store.reap_expired(limit)
            dead = store.dead_local_owners()
            if dead:
                more = store.reap_expired(limit, owners=dead)
                requeued, quarantined = requeued + more[0], quarantined + more[1]
        except Exception as exc:  # the database may be briefly away; the next round retries
            event(log, "leases.reap_failed", logging.WARNING, error=str(exc))
            return
        if requeued or quarantined:
            event(log, "leases.reaped", requeued=requeued, quarantined=quarantined)
        if requeued:
            self.wake.set()

    def _housekeeping(self) -> None:
        removed = ArchiveWriter(self.config.archive).sweep(older_than_s=6 * 3600)
        if removed:
            event(log, "archive.temp_removed", files=removed)
