"""The command line as a user runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
from conftest import albumd, write_config

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "audit.schema.json").read_text())


def test_restore_writes_the_same_outputs_and_audit(
    folders: dict[str, Path], photos_dir: Path, tmp_path: Path
) -> None:
    config = write_config(folders, face_crops=True)
    out = tmp_path / "out"
    r = albumd(
        config, "restore", str(photos_dir / "pair_a.png"), str(photos_dir / "group4_a.jpg"), "--out", str(out)
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for stem, ext in (("pair_a", ".png"), ("group4_a", ".jpg")):
        audit = json.loads((out / f"{stem}.audit.json").read_text())
        jsonschema.validate(audit, SCHEMA)
        assert audit["job_id"] is None
        assert (out / f"{stem}.restored.png").is_file() and (out / f"{stem}.compare.jpg").is_file()
        assert (out / f"{stem}.original{ext}").read_bytes() == (photos_dir / f"{stem}{ext}").read_bytes()
        # one before|after crop per face for the morning review, each listed with its hash
        crops = [o for o in audit["outputs"] if o["role"] == "face_crops"]
        assert len(crops) == len(audit["faces"]) == {"pair_a": 2, "group4_a": 4}[stem]
        assert all((out / c["path"]).is_file() for c in crops)
    # a long name: the message must stay on one line (no wrapping at the terminal width) for logs and scripts
    bad = tmp_path / f"{'scan_of_a_broken_print_' * 4}.jpg"
    bad.write_text("not a photo")
    r = albumd(config, "restore", str(bad), "--out", str(out))
    assert r.returncode == 1
    assert f"failed {bad}: not an image Pillow can identify" in r.stdout.splitlines()[0]


def test_status_json_shape_and_retry(folders: dict[str, Path], photos_dir: Path) -> None:
    config = write_config(folders)
    (folders["inbox"] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    shutil.copy(photos_dir / "group4_a.jpg", folders["inbox"] / "group.jpg")
    assert albumd(config, "run", "--once").returncode == 0
    st = json.loads(albumd(config, "status", "--json").stdout)
    assert set(st["counts"]) == {"queued", "running", "done", "failed", "quarantined"}
    assert st["counts"]["done"] == 1 and st["counts"]["failed"] == 1
    (failure,) = st["failed"]
    assert set(failure) >= {"job_id", "path", "error"} and failure["path"] == "broken.png"
    assert "corrupt PNG" in failure["error"]
    human = albumd(config, "status")
    assert human.returncode == 0 and "corrupt PNG" in human.stdout and "broken.png" in human.stdout
    r = albumd(config, "retry", str(failure["job_id"]))
    assert r.returncode == 0 and "1 job(s)" in r.stdout
    assert json.loads(albumd(config, "status", "--json").stdout)["counts"]["queued"] == 1
    assert albumd(config, "retry").returncode == 2


def test_db_upgrade_and_doctor(folders: dict[str, Path], tmp_path: Path) -> None:
    config = write_config(folders)
    r = albumd(config, "db", "upgrade")
    assert r.returncode == 0 and "empty -> 0002" in r.stdout
    r = albumd(config, "doctor")
    assert "model" in r.stdout and "model.path" in r.stdout  # explains how to point at SD 1.5 weights
    assert "database" in r.stdout and r.returncode == 0, r.stdout
    broken = write_config({**folders, "archive": tmp_path / "missing"})
    r = albumd(broken, "doctor")
    assert r.returncode == 1 and "does not exist" in r.stdout


def test_invalid_config_is_a_clear_error(folders: dict[str, Path]) -> None:
    config = write_config(folders, batch_size=0)
    r = albumd(config, "status")
    assert r.returncode == 2
    assert "batch_size" in r.stderr and str(config) in r.stderr.replace("\n", "")


def test_demo_runs_the_daemon_and_lists_real_outputs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = albumd(Path("/nonexistent.yaml"), "demo", "--dir", str(out), env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stdout + r.stderr
    audits = sorted((out / "archive").rglob("*.audit.json"))
    assert len(audits) == 4
    for a in audits:
        jsonschema.validate(json.loads(a.read_text()), SCHEMA)
    assert "restored photo" in r.stdout and "astronaut.restored.png" in r.stdout
