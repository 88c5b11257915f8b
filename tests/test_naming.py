"""Archive names from untrusted album and file names never leave the archive."""

from __future__ import annotations

from pathlib import Path

from albumd.daemon.archive import ArchiveError, ArchiveWriter
from albumd.daemon.naming import next_free_key, render_key, safe_component
from hypothesis import given, settings
from hypothesis import strategies as st

names = st.lists(
    st.sampled_from([*"ab./\\\x00\n:*?~ é写", "..", "../", "/etc", "\\..", "{", "}"]), max_size=20
).map("".join)


@given(
    album=names,
    stem=names,
    template=st.sampled_from(["{album}/{stem}", "{stem}", "x/{album}/y/{stem}", "{album}-{stem}"]),
)
@settings(max_examples=400, deadline=None)
def test_rendered_keys_stay_inside_the_archive(album: str, stem: str, template: str) -> None:
    key = render_key(template, album, stem)
    parts = key.split("/")
    assert key and not key.startswith("/")
    assert all(p not in ("", ".", "..") for p in parts)
    assert not any(c in key for c in "\x00\n\\")
    root = Path("/archive")
    assert (root / key).resolve().is_relative_to(root)


def test_examples() -> None:
    assert render_key("{album}/{stem}", "../../etc", "passwd") == "album/album/etc/passwd"
    assert render_key("{album}/{stem}", "Family 1950s", "grandma") == "Family 1950s/grandma"
    assert render_key("{album}/{stem}", "1985/Summer", "beach") == "1985/Summer/beach"
    assert render_key("{album}/{stem}", "a", "line\nbreak") == "a/line_break"
    assert safe_component("..") == "_" and safe_component("") == "_"
    assert len(safe_component("x" * 500).encode()) <= 120
    assert next_free_key("a/b", {"a/b", "a/b_1"}.__contains__) == "a/b_2"


def test_writer_refuses_paths_outside_the_archive(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path / "archive")
    (tmp_path / "archive").mkdir()
    for bad in ("../escape.txt", "/etc/passwd", "a/../../escape"):
        try:
            writer.write("x", bad, b"data")
        except ArchiveError:
            pass
        else:
            raise AssertionError(f"{bad!r} was written")
    assert not (tmp_path / "escape.txt").exists()
