"""The real daemon as a subprocess on real folders with the real scanned photos, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import jsonschema
import pytest
from albumd.daemon.archive import TEMP_MARK, sha256_file
from conftest import albumd, audits, start_daemon, wait_for, write_config

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "audit.schema.json").read_text())
SMALL = ["group4_a.jpg", "bop_old_w_scratch_b.png", "bop_old_w_scratch_c.png", "bop_old_a.png"]


def check_archive(archive: Path, inbox_copies: dict[str, bytes]) -> list[dict]:
    """Every audit validates, every output exists with its recorded hash, no temp file is left."""
    records = audits(archive)
    for rec in records:
        jsonschema.validate(rec, SCHEMA)
        for out in rec["outputs"]:
            path = archive / out["path"]
            assert path.is_file(), out
            assert sha256_file(path) == out["sha256"], f"{out['path']} does not match its audit hash"
        original = next(o for o in rec["outputs"] if o["role"] == "original")
        assert (archive / original["path"]).read_bytes() == inbox_copies[rec["input"]["sha256"]]
    assert not [p for p in archive.rglob("*") if TEMP_MARK in p.name], "temp files left in the archive"
    return records


def status(config: Path) -> dict:
    r = albumd(config, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_run_once_archives_real_photos_and_reports_bad_input(
    backend: str, folders: dict[str, Path], photos_dir: Path, request: pytest.FixtureRequest
) -> None:
    extra = {"database_url": request.getfixturevalue("pg_url")} if backend == "postgres" else {}
    config = write_config(folders, **extra)
    inbox = folders["inbox"]
    (inbox / "Family 1950s").mkdir()
    copies = {}
    for name in SMALL:
        data = (photos_dir / name).read_bytes()
        (inbox / "Family 1950s" / name).write_bytes(data)
        import hashlib

        copies[hashlib.sha256(data).hexdigest()] = data
    # the same photo again under another name, and in the inbox root: one job, one archive entry
    shutil.copy(photos_dir / SMALL[0], inbox / "copy of group.jpg")
    # bad input beside the good photos
    (inbox / "Family 1950s" / "empty.jpg").write_bytes(b"")
    (inbox / "Family 1950s" / "notes.jpg").write_text("this is a text file, not a photo")
    (inbox / "Family 1950s" / "truncated.png").write_bytes((photos_dir / SMALL[1]).read_bytes()[:5000])
    (inbox / "Family 1950s" / "folder.jpg").mkdir()
    (inbox / "Family 1950s" / ".DS_Store").write_bytes(b"junk")
    (inbox / "Family 1950s" / "scan.jpg.part").write_bytes(b"partial")
    (inbox / "Thumbs.db").write_bytes(b"junk")
    weird = inbox / "Family 1950s" / "naïve\nname 写真.png"
    shutil.copy(photos_dir / "bop_old_c.png", weird)
    copies[__import__("hashlib").sha256(weird.read_bytes()).hexdigest()] = weird.read_bytes()
    outside = folders["state"].parent / "outside.png"
    shutil.copy(photos_dir / "bop_old_h.png", outside)
    (inbox / "Family 1950s" / "link.png").symlink_to(outside)

    r = albumd(config, "run", "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    records = check_archive(folders["archive"], copies)
    assert len(records) == len(SMALL) + 1
    names = {rec["input"]["path"] for rec in records}
    assert "Family 1950s/naïve\nname 写真.png" in names
    st = status(config)
    assert st["counts"]["done"] == len(SMALL) + 1
    assert st["counts"]["failed"] == 3 and st["counts"]["queued"] == 0 and st["counts"]["running"] == 0
    errors = {Path(f["path"]).name: f["error"] for f in st["failed"]}
    assert "empty" in errors["empty.jpg"]
    assert "not an image" in errors["notes.jpg"]
    assert "PNG" in errors["truncated.png"] or "truncated" in errors["truncated.png"].lower()
    assert "link.png" not in errors and not any("outside" in p for p in names)
    # originals untouched, nothing written into the inbox
    assert (inbox / "Family 1950s" / SMALL[0]).read_bytes() == (photos_dir / SMALL[0]).read_bytes()
    assert outside.read_bytes() == (photos_dir / "bop_old_h.png").read_bytes()
    assert not list(folders["archive"].rglob("*outside*"))
    rec = next(r for r in records if r["input"]["path"].endswith("bop_old_w_scratch_b.png"))
    assert rec["model"]["status"] == "skipped" and "no model configured" in rec["model"]["reason"]
    assert any(s["name"] == "diffusion" and s["skipped"] for s in rec["stages"])
    # a second run finds nothing new: the same content is not redone
    r = albumd(config, "run", "--once")
    assert r.returncode == 0
    assert len(audits(folders["archive"])) == len(SMALL) + 1


def test_watcher_picks_up_slow_writes_new_albums_and_sigterm_exits_cleanly(
    folders: dict[str, Path], photos_dir: Path, tmp_path: Path
) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.1)
    config = write_config(folders, watcher={"stable_s": 1.0})
    proc = start_daemon(config, env={"NOTIFY_SOCKET": str(sock_path)})
    messages: list[str] = []

    def received(prefix: str) -> bool:
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            pass
        return any(m.startswith(prefix) for m in messages)

    try:
        wait_for(lambda: received("READY=1"), 60, what="READY=1 from the daemon")
        # a scanner writing slowly into a new album folder: must not be taken before it is complete
        album = folders["inbox"] / "Wedding 1961"
        album.mkdir()
        data = (photos_dir / "bop_old_w_scratch_c.png").read_bytes()
        with open(album / "slow.png", "wb") as f:
            for i in range(0, len(data), len(data) // 6):
                f.write(data[i : i + len(data) // 6])
                f.flush()
                time.sleep(0.6)
        # a whole album folder moved in at once
        staging = tmp_path / "staging" / "Holidays"
        staging.mkdir(parents=True)
        shutil.copy(photos_dir / "bop_old_a.png", staging / "beach.png")
        shutil.copy(photos_dir / "group4_a.jpg", staging / "group.jpg")
        os.rename(staging, folders["inbox"] / "Holidays")
        wait_for(lambda: len(audits(folders["archive"])) == 3, 120, what="three archived photos")
        rec = next(r for r in audits(folders["archive"]) if r["input"]["path"] == "Wedding 1961/slow.png")
        assert rec["input"]["bytes"] == len(data)
        assert (folders["archive"] / "Wedding 1961" / "slow.original.png").read_bytes() == data
        wait_for(lambda: received("STATUS="), 10, what="a STATUS line")
        assert any(m.startswith("WATCHDOG=1") for m in messages)
        st = status(config)
        assert st["counts"]["done"] == 3
        assert st["workers"] and st["workers"][0]["state"] in ("idle", "processing")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert status(config)["workers"] == []
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_mid_batch_then_restart_archives_every_photo_exactly_once(
    backend: str, folders: dict[str, Path], photos_dir: Path, request: pytest.FixtureRequest
) -> None:
    extra = {"database_url": request.getfixturevalue("pg_url")} if backend == "postgres" else {}
    config = write_config(folders, batch_size=3, lease_s=5, **extra)
    import hashlib

    copies = {}
    names = [n for n in sorted(os.listdir(photos_dir)) if n.endswith((".png", ".jpg"))][:9]
    for name in names:
        data = (photos_dir / name).read_bytes()
        (folders["inbox"] / name).write_bytes(data)
        copies[hashlib.sha256(data).hexdigest()] = data
    proc = start_daemon(config)
    try:
        # kill it as soon as the first photo is archived: the rest of its batch is mid-flight
        wait_for(lambda: len(audits(folders["archive"])) >= 1, 180, interval=0.05, what="first photo")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    st = status(config)
    assert st["counts"]["running"] >= 1, "the kill should have left a batch mid-flight"
    # restart: the expired leases go back to the queue and the rest of the album is archived
    r = albumd(config, "run", "--once", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    records = check_archive(folders["archive"], copies)
    assert sorted(rec["input"]["sha256"] for rec in records) == sorted(copies), "every photo exactly once"
    st = status(config)
    assert st["counts"]["done"] == len(names) and st["counts"]["running"] == 0
    for name in names:
        assert (folders["inbox"] / name).exists(), "inbox files are kept by default"
