"""Archive names: the template rendered from untrusted album and file names, never escaping the archive."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import PurePosixPath

MAX_COMPONENT = 120
# Besides separators and control characters: lone surrogates (undecodable bytes of a file name, PEP 383)
# and U+F780-U+F7FF (how the inbox records them, daemon/inbox.py), which no archive name should show.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|\ud800-\udfff\uf780-\uf7ff]')


def safe_component(name: str, fallback: str = "_") -> str:
    """One path component from an untrusted name: no separators, control characters or dot-names."""
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE.sub("_", name).strip().strip(".")
    if name in ("", ".", ".."):
        name = fallback
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_COMPONENT:
        name = encoded[:MAX_COMPONENT].decode("utf-8", errors="ignore").rstrip() or fallback
    return name


def render_key(template: str, album: str, stem: str) -> str:
    """Render the archive template into a relative POSIX path guaranteed to stay inside the archive."""
    album_parts = [safe_component(p, "album") for p in PurePosixPath(album.replace("\\", "/")).parts]
    rendered = template.format(album="\x00".join(album_parts) or "album", stem=safe_component(stem, "photo"))
    parts: list[str] = []
    for raw in rendered.replace("\\", "/").split("/"):
        parts.extend(safe_component(p) for p in raw.split("\x00") if p not in ("", "."))
    parts = [p for p in parts if p not in ("", ".", "..")]
    if not parts:
        parts = ["photo"]
    return "/".join(parts)


def next_free_key(key: str, in_use: Callable[[str], bool]) -> str:
    """``key`` if free, else ``key_1``, ``key_2``... (a different photo with the same target name)."""
    if not in_use(key):
        return key
    n = 1
    while in_use(f"{key}_{n}"):
        n += 1
    return f"{key}_{n}"
