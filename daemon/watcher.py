"""Filesystem events into the stability tracker.

inotify (watchdog's native observer) on local disks; watchdog's polling observer where the inbox, or a
folder mounted inside it, is a network filesystem (inotify only sees changes made by this host). The
handlers only note paths; hashing and queueing happen in the daemon's main loop.
"""

from __future__ import annotations

import logging
import os
import queue
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .config import WatcherSettings
from .inbox import StabilityTracker
from .logs import event
from .mounts import is_network, mounts, network_mounts_under

log = logging.getLogger("albumd.watcher")


class _Handler(FileSystemEventHandler):
    def __init__(self, tracker: StabilityTracker, new_dirs: queue.SimpleQueue[Path]) -> None:
        self.tracker = tracker
        self.new_dirs = new_dirs

    def on_any_event(self, ev: FileSystemEvent) -> None:
        src = Path(os.fsdecode(ev.src_path))
        if isinstance(ev, FileMovedEvent):
            self.tracker.forget(src)
            self.tracker.observe(Path(os.fsdecode(ev.dest_path)))
        elif isinstance(ev, FileCreatedEvent | FileModifiedEvent | FileClosedEvent):
            self.tracker.observe(src)
        elif isinstance(ev, FileDeletedEvent):
            self.tracker.forget(src)
        elif isinstance(ev, DirMovedEvent):
            # A whole album folder moved in (or renamed): its files produce no events of their own.
            self.tracker.forget(src)
            self.new_dirs.put(Path(os.fsdecode(ev.dest_path)))
        elif isinstance(ev, DirCreatedEvent):
            self.new_dirs.put(src)


class _OverflowAlarm(logging.Handler):
    """The kernel drops inotify events once its queue is full (max_queued_events, 16384 by default): a
    10,000-file copy while the daemon is stalled. watchdog rebuilds its watches but tells its handlers
    nothing, only logs a warning; without a cue the dropped files would wait for the next periodic rescan.
    The cue is that warning: it queues a rescan of the whole inbox."""

    def __init__(self, root: Path, new_dirs: queue.SimpleQueue[Path]) -> None:
        super().__init__(logging.WARNING)
        self.root = root
        self.new_dirs = new_dirs

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.new_dirs.put(self.root)


class Watcher:
    def __init__(self, root: Path, settings: WatcherSettings, tracker: StabilityTracker) -> None:
        self.root = root
        self.settings = settings
        self.tracker = tracker
        self.new_dirs: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self.observers: list[BaseObserver] = []
        self.modes: dict[str, str] = {}
        self._alarm = _OverflowAlarm(root, self.new_dirs)

    def mode_for(self, folder: Path, table: list[tuple[str, str]]) -> str:
        for path, mode in self.settings.folder_modes.items():
            if os.path.realpath(path) == os.path.realpath(folder):
                return mode
        if self.settings.mode != "auto":
            return self.settings.mode
        return "polling" if is_network(folder, table) else "native"

    def start(self) -> None:
        # On the "watchdog" logger, which its inotify modules' loggers propagate to.
        logging.getLogger("watchdog").addHandler(self._alarm)
        table = mounts()
        handler = _Handler(self.tracker, self.new_dirs)
        folders = [self.root, *network_mounts_under(self.root, table)]
        folders += [Path(p) for p in self.settings.folder_modes if Path(p) not in folders]
        for folder in folders:
            mode = self.mode_for(folder, table)
            observer: BaseObserver
            if mode == "polling":
                observer = PollingObserver(timeout=self.settings.polling_interval_s)
            else:
                observer = Observer()
            observer.schedule(handler, os.fspath(folder), recursive=True)
            observer.daemon = True
            observer.start()
            self.observers.append(observer)
            self.modes[str(folder)] = mode
            event(log, "watcher.started", folder=str(folder), mode=mode)

    def healthy(self) -> bool:
        return all(o.is_alive() for o in self.observers)

    def stop(self) -> None:
        for o in self.observers:
            o.stop()
        for o in self.observers:
            o.join(timeout=5)
        self.observers.clear()
        logging.getLogger("watchdog").removeHandler(self._alarm)

    def drain_new_dirs(self) -> list[Path]:
        dirs: list[Path] = []
        while True:
            try:
                dirs.append(self.new_dirs.get_nowait())
            except queue.Empty:
                return dirs
