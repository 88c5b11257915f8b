"""What counts as a photo in the inbox, when it counts (stable size and mtime), and reading it safely.

albumd never modifies, moves or deletes inbox files (unless ``inbox_after: delete`` and the archived copy
is verified). Symlinks are followed only when their target stays inside the inbox; FIFOs, sockets and
devices are never opened.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .naming import render_key

# A file name that is not valid UTF-8 (a Latin-1 name from an old scanner, camera or Windows share) reaches
# Python with each undecodable byte as a lone surrogate U+DC80-U+DCFF (PEP 383). No database, JSON
# document or log line can hold those, so the inbox-relative path albumd stores and reports carries each
# such byte as the private-use character U+F780-U+F7FF instead, and turns it back into the byte to open
# the file. Real names holding U+F780-U+F7FF themselves are therefore not taken (see ``why_not``).
_SURROGATES = range(0xDC80, 0xDD00)
_PRIVATE = range(0xF780, 0xF800)
_TO_TEXT = dict(zip(_SURROGATES, _PRIVATE, strict=True))
_TO_NAME = dict(zip(_PRIVATE, _SURROGATES, strict=True))


def name_to_text(name: str) -> str:
    """A file name as the OS gave it -> text any database, JSON file or terminal takes (reversible)."""
    return name.translate(_TO_TEXT)


def text_to_name(text: str) -> str:
    """The inverse of ``name_to_text``: the name to open the file by."""
    return text.translate(_TO_NAME)


class InboxReadError(Exception):
    """The inbox file cannot be read as given (gone, changed, not a regular file, outside the inbox)."""


@dataclass(frozen=True)
class Candidate:
    path: Path
    """Absolute path inside the inbox."""
    rel: str
    """Inbox-relative POSIX path, as stored in the job store."""
    album: str
    size: int
    mtime_ns: int


class Inbox:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.inbox
        self.real_root = Path(os.path.realpath(config.inbox))

    # -- classification -------------------------------------------------------------------------

    def ignored(self, rel_parts: tuple[str, ...]) -> bool:
        patterns = self.config.watcher.ignore
        return any(fnmatch.fnmatchcase(part, pat) for part in rel_parts for pat in patterns)

    def _parts(self, path: Path) -> tuple[str, ...] | None:
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root))
        except ValueError:
            return None
        return rel.parts or None

    def relative(self, path: Path) -> tuple[str, ...] | None:
        """The path's components below the inbox as stored text (see ``name_to_text``), or None."""
        parts = self._parts(path)
        return tuple(name_to_text(p) for p in parts) if parts else None

    def path_of(self, rel: str) -> Path:
        """The file an inbox-relative path recorded by ``relative`` names."""
        return self.root / text_to_name(rel)

    def why_not(self, path: Path) -> str | None:
        """None if ``path`` may be a photo to ingest, else the reason it is skipped."""
        parts = self._parts(path)
        if parts is None:
            return "not inside the inbox"
        if any(ord(c) in _PRIVATE for part in parts for c in part):
            return "the name holds a private-use character U+F780-U+F7FF, which albumd reserves; rename it"
        if self.ignored(parts):
            return "matches the ignore list"
        if path.suffix.lower() not in self.config.watcher.extensions:
            return f"extension {path.suffix or '(none)'} is not a supported photo type"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "no longer exists"
        except OSError as exc:
            return f"cannot stat: {exc.strerror}"
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(path)
            if not Path(target).is_relative_to(self.real_root):
                return "symlink points outside the inbox; not followed"
            try:
                st = os.stat(path)
            except OSError:
                return "dangling symlink"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        return None

    def album_of(self, parts: tuple[str, ...]) -> str:
        return "/".join(parts[:-1]) if len(parts) > 1 else self.config.default_album

    def candidate(self, path: Path) -> Candidate | None:
        if self.why_not(path) is not None:
            return None
        parts = self.relative(path)
        assert parts is not None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return Candidate(
            path=Path(os.path.abspath(path)),
            rel="/".join(parts),
            album=self.album_of(parts),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
        )

    def archive_key(self, cand: Candidate) -> str:
        return render_key(self.config.archive_template, cand.album, Path(cand.rel).stem)

    def walk(self) -> Iterator[Path]:
        """Every file under the inbox, not descending into ignored or symlinked folders."""
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            base = Path(dirpath)
            dirnames[:] = sorted(
                d for d in dirnames if not self.ignored((d,)) and not os.path.islink(os.path.join(dirpath, d))
            )
            for name in sorted(filenames):
                yield base / name

    # -- reading --------------------------------------------------------------------------------

    def read(self, rel: str) -> bytes:
        """Read an inbox file's bytes, refusing anything that is not a regular file inside the inbox."""
        path = self.path_of(rel)
        reason = self.why_not(path)
        if reason is not None:
            raise InboxReadError(f"{rel}: {reason}")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise InboxReadError(f"{rel}: cannot open: {exc.strerror}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InboxReadError(f"{rel}: not a regular file")
            chunks = []
            while block := os.read(fd, 1 << 22):
                chunks.append(block)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def hash_file(self, path: Path) -> tuple[str, int]:
        """sha256 and size of a file, read through the same checks as ``read``."""
        parts = self.relative(path)
        if parts is None:
            raise InboxReadError(f"{path}: not inside the inbox")
        rel = "/".join(parts)
        reason = self.why_not(path)
        if reason is not None:
            raise InboxReadError(f"{rel}: {reason}")
        h = hashlib.sha256()
        size = 0
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise InboxReadError(f"{rel}: cannot open: {exc.strerror}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InboxReadError(f"{rel}: not a regular file")
            while block := os.read(fd, 1 << 22):
                h.update(block)
                size += len(block)
        finally:
            os.close(fd)
        return h.hexdigest(), size


class StabilityTracker:
    """A file counts once its size and mtime stayed the same for ``stable_s``.

    The wait restarts on every change and never gives up, so a scanner that pauses mid-file is waited for.
    An empty file waits ``empty_stable_s`` instead (default: ``stable_s``): a scanner creates its file when
    the scan starts and may write nothing until its lamp has warmed up.
    Thread-safe: watcher threads call ``observe``; the main loop calls ``due``.
    """

    def __init__(self, stable_s: float, empty_stable_s: float | None = None) -> None:
        self.stable_s = stable_s
        self.empty_stable_s = stable_s if empty_stable_s is None else max(stable_s, empty_stable_s)
        self._clock = time.monotonic
        self._lock = threading.Lock()
        self._pending: dict[Path, tuple[int, int, float]] = {}

    def observe(self, path: Path) -> None:
        with self._lock:
            if path not in self._pending:
                self._pending[path] = (-1, -1, self._clock())

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)
            prefix = str(path) + os.sep
            for p in [p for p in self._pending if str(p).startswith(prefix)]:
                del self._pending[p]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def due(self) -> list[Path]:
        """Re-stat pending files; return (and stop tracking) those that have been stable long enough."""
        now = self._clock()
        ready: list[Path] = []
        with self._lock:
            items = list(self._pending.items())
        for path, (size, mtime, since) in items:
            try:
                st = os.stat(path)
            except OSError:
                with self._lock:
                    self._pending.pop(path, None)
                continue
            key = (st.st_size, st.st_mtime_ns)
            wait = self.stable_s if st.st_size else self.empty_stable_s
            # A file last modified longer than the wait ago only needs one confirming look (startup
            # rescans of a full inbox should not wait stable_s per file).
            old = time.time() - st.st_mtime_ns / 1e9 >= wait
            with self._lock:
                if path not in self._pending:
                    continue
                if key != (size, mtime):
                    self._pending[path] = (key[0], key[1], now)
                elif now - since >= wait or old:
                    del self._pending[path]
                    ready.append(path)
        return ready
