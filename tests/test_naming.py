"""Archive names from untrusted album and file names never leave the archive."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from albumd.daemon.archive import ArchiveError, ArchiveWriter
from albumd.daemon.config import Config
from albumd.daemon.inbox import Inbox, name_to_text, text_to_name
from albumd.daemon.naming import MAX_COMPONENT, next_free_key, render_key, safe_component
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

# Pieces an attacker (or a careless scanner) puts into album and file names: traversal, absolute paths,
# both separators, NUL and other control characters, dot names, format braces, long runs, and unicode
# that normalises or looks like a separator (fullwidth solidus, division slash, one-dot leader).
DANGEROUS = [
    "..", "../", "/..", "/etc", "/", "//", "\\", "\\..", "..\\", ".", "\x00", "\n", "\r", "\x1b", "\x7f",
    "{", "}", "{album}", "{stem}", "~", ":", "*", "?", "é", "e\u0301", "写", "／", "∕", "․", "\u2024\u2024",
    "\u202e", "\ufeff", " ", "x" * 130, "é" * 70,
]  # fmt: skip
# Undecodable bytes of a file name as Python hands them over (PEP 383), and how the inbox records them.
SURROGATE = st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)
names = st.lists(st.one_of(st.sampled_from(DANGEROUS), st.text(max_size=4), SURROGATE), max_size=12).map(
    "".join
)
# Templates come from the config (validated: only {album} and {stem}, {stem} required), but they too may
# hold traversal, absolute prefixes, separators, NUL and unicode; the rendered key must still stay inside.
TEMPLATE_PIECES = ["{album}", "{stem}", "/", "//", "..", "../", "/..", ".", "\\", "\x00", "é", "写", "x", "-"]
templates = (
    st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=8)
    .flatmap(lambda pre: st.lists(st.sampled_from(TEMPLATE_PIECES), max_size=8).map(lambda post: (pre, post)))
    .map(lambda pp: "".join([*pp[0], "{stem}", *pp[1]]))
)
ROOT = Path("/archive")


def _check_key(key: str) -> None:
    parts = key.split("/")
    assert key and not key.startswith("/")
    assert all(p not in ("", ".", "..") for p in parts), key
    assert not any(ord(c) < 0x20 or c in "\x7f\\" or 0xD800 <= ord(c) <= 0xDFFF for c in key), repr(key)
    assert all(len(p.encode("utf-8")) <= MAX_COMPONENT for p in parts), key
    assert (ROOT / key).resolve().is_relative_to(ROOT)
    assert os.path.normpath(key) == key, key


@given(album=names, stem=names, template=templates)
@example(album="../../etc", stem="passwd", template="{album}/{stem}")
@example(album="/etc", stem="/etc/passwd", template="/{album}/../../{stem}")
@example(album="a\x00/../b", stem="\x00", template="..\\{album}\\..\\{stem}")
@example(album="", stem="", template="{stem}")
@example(album="caf\udce9", stem="\udcff\udcfe", template="{album}/{stem}")
@settings(max_examples=600, deadline=None)
def test_rendered_keys_stay_inside_the_archive(album: str, stem: str, template: str) -> None:
    _check_key(render_key(template, album, stem))
    # What the inbox stores for a name with undecodable bytes renders just as safely.
    _check_key(render_key(template, name_to_text(album), name_to_text(stem)))


@given(album=names, stem=names, template=templates)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_rendered_keys_are_written_inside_a_real_archive(album: str, stem: str, template: str) -> None:
    """The writer the daemon uses, on a real folder: every output of the key lands under the archive
    and nothing appears beside it."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        archive = base / "archive"
        archive.mkdir()
        key = render_key(template, name_to_text(album), name_to_text(stem))
        writer = ArchiveWriter(archive)
        for suffix in (".original.png", "_p12.restored.png", ".face3.jpg", ".audit.json"):
            writer.write("x", key + suffix, b"data")
        assert os.listdir(base) == ["archive"]
        files = [Path(d, f) for d, _dirs, fs in os.walk(archive) for f in fs]
        assert len(files) == 4 and all(p.resolve().is_relative_to(archive.resolve()) for p in files)


@given(name=st.lists(st.one_of(st.text(max_size=6), SURROGATE), max_size=8).map("".join))
def test_undecodable_names_round_trip_through_the_stored_text(name: str) -> None:
    text = name_to_text(name)
    text.encode("utf-8")  # storable: no lone surrogates left
    assert text_to_name(text) == name or any(0xF780 <= ord(c) <= 0xF7FF for c in name)


def test_inbox_records_a_latin1_name_and_reads_it_back(tmp_path: Path) -> None:
    inbox_dir = tmp_path / "in"
    (inbox_dir / "Caf\xe9").mkdir(parents=True)
    raw = os.fsencode(inbox_dir) + b"/Caf\xc3\xa9/caf\xe9 \xff.jpg"  # a Latin-1 name in a UTF-8 album
    with open(raw, "wb") as f:
        f.write(b"bytes")
    inbox = Inbox(Config(inbox=inbox_dir, archive=tmp_path / "ar", state_dir=tmp_path / "st"))
    (path,) = list(inbox.walk())
    cand = inbox.candidate(path)
    assert cand is not None and cand.album == "Café"
    cand.rel.encode("utf-8")
    assert inbox.read(cand.rel) == b"bytes"
    assert inbox.archive_key(cand) == "Café/caf_ _"


def test_examples() -> None:
    assert render_key("{album}/{stem}", "../../etc", "passwd") == "album/album/etc/passwd"
    assert render_key("{album}/{stem}", "Family 1950s", "grandma") == "Family 1950s/grandma"
    assert render_key("{album}/{stem}", "1985/Summer", "beach") == "1985/Summer/beach"
    assert render_key("{album}/{stem}", "a", "line\nbreak") == "a/line_break"
    assert render_key("/{album}/../{stem}", "a", "b") == "a/_/b"  # a ".." becomes "_", never a step up
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
