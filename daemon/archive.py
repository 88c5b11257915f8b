"""Durable, atomic writes into the archive.

Each file is written to a temporary name in its final folder, flushed and fsynced, renamed over the final
name, and the folder is fsynced so the rename itself survives a power cut. A reader therefore sees either
no file or the whole file, never a partial one. The audit record is written last: its presence means the
other outputs are complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

TEMP_MARK = ".albumd-tmp-"
# Fault injection for the crash-consistency tests (tests/test_reliability_crash.py): ``NAME:N`` makes the
# process SIGKILL itself at the Nth time it reaches the named point. Not an ALBUMD_ variable, so the config
# loader never sees it; unset (always, outside the tests) it costs one dict lookup per point.
CRASH_ENV = "ALBUMDTEST_CRASH_AT"
# Fresh temp names a write tries when another daemon's clean-up keeps removing them (see ``write``).
TEMP_ATTEMPTS = 5
_crash_lock = threading.Lock()
_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if the test environment asks for it; see ``CRASH_ENV``."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    target, _, nth = spec.rpartition(":")
    if target != name:
        return
    with _crash_lock:
        _crash_counts[name] = _crash_counts.get(name, 0) + 1
        hit = _crash_counts[name] == int(nth or 1)
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)


class ArchiveError(OSError):
    """Writing into the archive failed (disk full, read-only, missing); transient: retried later."""


@dataclass(frozen=True)
class Written:
    role: str
    path: str
    """Relative to the archive root."""
    sha256: str
    bytes: int


class ArchiveWriter:
    def __init__(self, root: Path, umask: int = 0o027) -> None:
        self.root = root
        self.file_mode = 0o666 & ~umask
        self.dir_mode = 0o777 & ~umask

    def target(self, relpath: str) -> Path:
        path = (self.root / relpath).resolve()
        root = self.root.resolve()
        if not path.is_relative_to(root) or path == root:
            raise ArchiveError(f"refusing to write outside the archive: {relpath!r}")
        return path

    def ensure_root(self) -> None:
        if not self.root.is_dir():
            raise ArchiveError(f"archive folder {self.root} does not exist or is not a folder")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ArchiveError(f"archive folder {self.root} is not writable by this user")

    def write(self, role: str, relpath: str, data: bytes) -> Written:
        final = self.target(relpath)
        self._make_dirs(final.parent)
        tmp: Path | None = None
        try:
            for _attempt in range(TEMP_ATTEMPTS):
                tmp = final.parent / f".{final.name}{TEMP_MARK}{secrets.token_hex(4)}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, self.file_mode)
                try:
                    # Held while the temp file is written: another writer's remove_temp_files (a second
                    # daemon on the same archive) leaves a locked temp file alone, and removes an unlocked
                    # one only while holding its lock. So a file it took for abandoned in the instant
                    # between our create and our lock is already unlinked once we hold the lock: start
                    # again under a new name (found by tests/test_reliability_scaleout.py).
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    if os.fstat(fd).st_nlink == 0:
                        continue
                    _fill(fd, tmp, final, data)
                finally:
                    os.close(fd)
                break
            else:
                raise OSError(f"temporary files in {final.parent} were removed {TEMP_ATTEMPTS} times running")
            crash_point("archive.renamed")  # renamed, folder not yet fsynced
            _fsync_dir(final.parent)
        except OSError as exc:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise ArchiveError(f"cannot write {relpath} into the archive: {exc.strerror or exc}") from exc
        return Written(role=role, path=relpath, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        node = folder
        while not node.exists():
            missing.append(node)
            node = node.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=self.dir_mode)
            except FileExistsError:
                pass
            except OSError as exc:
                raise ArchiveError(f"cannot create archive folder {d}: {exc.strerror or exc}") from exc
            _fsync_dir(d.parent)

    def remove_temp_files(self, folder: Path, older_than_s: float = 0.0) -> int:
        """Delete temporary files an interrupted write left in ``folder``."""
        if not folder.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in os.scandir(folder):
            if TEMP_MARK in entry.name and entry.is_file(follow_symlinks=False):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime <= cutoff and _remove_abandoned(entry.path):
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def sweep(self, older_than_s: float) -> int:
        """Housekeeping: temp files older than ``older_than_s`` anywhere in the archive."""
        removed = 0
        for dirpath, _dirs, _files in os.walk(self.root):
            removed += self.remove_temp_files(Path(dirpath), older_than_s)
        return removed


def _fill(fd: int, tmp: Path, final: Path, data: bytes) -> None:
    """Write, fsync and rename the locked temp file ``fd`` into place."""
    view = memoryview(data)
    _write_all(fd, view[: len(view) // 2])
    crash_point("archive.partial")  # half the bytes in the temp file
    _write_all(fd, view[len(view) // 2 :])
    os.fsync(fd)
    if os.fstat(fd).st_nlink == 0:
        raise OSError(f"temporary file {tmp.name} was removed while it was written")
    crash_point("archive.fsynced")  # complete temp file, not yet renamed
    os.replace(tmp, final)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def _remove_abandoned(path: str) -> bool:
    """Unlink a temp file unless a writer (this or another process) holds its flock, i.e. is writing it.

    The lock is held across the unlink: a writer that created the file but has not locked it yet gets
    the lock only after the unlink, sees the file gone (st_nlink 0) and starts again (see ``write``).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (e.g. certain network mounts) cannot fsync a directory
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
