"""Inbox rules on real folders: what counts as a photo, when it counts, and what is never opened."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from albumd.daemon.config import Config
from albumd.daemon.inbox import Inbox, InboxReadError, StabilityTracker
from albumd.daemon.mounts import fs_type, is_network, network_mounts_under


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    (tmp_path / "in").mkdir()
    return Inbox(Config(inbox=tmp_path / "in", archive=tmp_path / "ar", state_dir=tmp_path / "st"))


def test_albums_and_ignore_list(inbox: Inbox) -> None:
    root = inbox.root
    (root / "Family").mkdir()
    (root / "@eaDir").mkdir()
    names = ["a.jpg", "Family/b.PNG", "Family/.DS_Store", "Family/._b.PNG", "Thumbs.db", "@eaDir/c.jpg"]
    names += ["Family/d.jpg.part", "Family/.hidden.jpg", "Family/notes.txt", "Family/scan.tmp"]
    for rel in names:
        (root / rel).write_bytes(b"x")
    found = sorted(str(p.relative_to(root)) for p in inbox.walk() if inbox.why_not(p) is None)
    assert found == ["Family/b.PNG", "a.jpg"]
    assert inbox.candidate(root / "a.jpg").album == "unsorted"
    assert inbox.candidate(root / "Family" / "b.PNG").album == "Family"
    assert "extension" in inbox.why_not(root / "Family" / "notes.txt")
    assert "ignore" in inbox.why_not(root / "Family" / "d.jpg.part")


def test_symlinks_out_of_the_inbox_are_not_followed(inbox: Inbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"private")
    (inbox.root / "out.jpg").symlink_to(secret)
    (inbox.root / "real.jpg").write_bytes(b"photo")
    (inbox.root / "in.jpg").symlink_to(inbox.root / "real.jpg")
    (inbox.root / "dir").symlink_to(tmp_path, target_is_directory=True)
    assert "outside the inbox" in inbox.why_not(inbox.root / "out.jpg")
    with pytest.raises(InboxReadError, match="outside the inbox"):
        inbox.read("out.jpg")
    assert inbox.read("in.jpg") == b"photo"
    assert not any("dir" in p.parts for p in inbox.walk())


def test_fifo_is_never_opened(inbox: Inbox) -> None:
    os.mkfifo(inbox.root / "pipe.jpg")
    assert inbox.why_not(inbox.root / "pipe.jpg") == "not a regular file"
    with pytest.raises(InboxReadError):
        inbox.read("pipe.jpg")  # would block forever if it were opened for reading


def test_stability_wait_restarts_on_every_change(tmp_path: Path) -> None:
    f = tmp_path / "scan.jpg"
    f.write_bytes(b"a")
    tracker = StabilityTracker(stable_s=0.6)
    tracker.observe(f)
    assert tracker.due() == []  # first look records size and mtime
    for _ in range(4):  # keep writing: never due while it changes
        time.sleep(0.3)
        with open(f, "ab") as h:
            h.write(b"more")
        assert tracker.due() == []
    time.sleep(0.7)
    assert tracker.due() == [f]
    assert len(tracker) == 0


def test_old_files_need_only_one_confirming_look(tmp_path: Path) -> None:
    f = tmp_path / "old.jpg"
    f.write_bytes(b"a")
    old = time.time() - 3600
    os.utime(f, (old, old))
    tracker = StabilityTracker(stable_s=300)
    tracker.observe(f)
    assert tracker.due() == []
    assert tracker.due() == [f]


def test_deleted_files_are_dropped(tmp_path: Path) -> None:
    f = tmp_path / "x.jpg"
    f.write_bytes(b"a")
    tracker = StabilityTracker(stable_s=0)
    tracker.observe(f)
    f.unlink()
    assert tracker.due() == [] and len(tracker) == 0


def test_an_empty_file_waits_longer_then_counts_once_filled_or_left_empty(tmp_path: Path) -> None:
    """A scanner creates its file when the scan starts and writes it later: an empty file is not taken
    after stable_s (it would fail as empty), only after empty_stable_s."""
    tracker = StabilityTracker(stable_s=0.3, empty_stable_s=1.5)
    filled, left = tmp_path / "filled.jpg", tmp_path / "left.jpg"
    for f in (filled, left):
        f.write_bytes(b"")
        tracker.observe(f)
    tracker.due()
    time.sleep(0.6)
    assert tracker.due() == []  # both empty for longer than stable_s: still waiting
    filled.write_bytes(b"now the scan")
    assert tracker.due() == []
    time.sleep(0.5)
    assert tracker.due() == [filled]
    time.sleep(1.0)
    assert tracker.due() == [left]


def test_network_mounts_are_detected_from_mountinfo(tmp_path: Path) -> None:
    table = [("/srv/photos/inbox/lan", "cifs"), ("/srv/photos", "ext4"), ("/", "ext4")]
    assert is_network(Path("/srv/photos/inbox/lan/x"), table)
    assert not is_network(Path("/srv/photos/inbox/local"), table)
    assert fs_type(Path("/srv/photos/inbox/lan"), table) == "cifs"
    assert network_mounts_under(Path("/srv/photos/inbox"), table) == [Path("/srv/photos/inbox/lan")]
    assert fs_type(tmp_path) != "unknown"  # the real /proc/self/mountinfo parses
