"""The whole daemon with a tiny random-weight SD 1.5-architecture model: real diffusers pipelines,
real faces from the scanned test photos, the identity guard deciding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import diffusion_fixtures
import jsonschema
import pytest
from albumd.pipeline.diffusion.tiny import TinyModelFiles
from conftest import albumd, write_config

tiny_files = diffusion_fixtures.tiny_files
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "audit.schema.json").read_text())
PHOTOS = ["pair_a.png", "bop_old_w_scratch_c.png"]  # two faces on one photo, one on the other
# Small crops keep the tiny model fast on a CPU; 160 px is still enough for dlib's identity embedding.
SETTINGS = {
    "pipeline": {
        "faces": {"align": {"crop_size": 160}},
        "diffusion": {"steps": 6, "strength": 0.5, "crop_size": 160},
    },
    # one photo per batch: the second batch's CPU stages must run while the first is on the GPU
    "batch_size": 1,
}


def run_album(folders: dict[str, Path], photos_dir: Path, model: dict) -> list[dict]:
    for name in PHOTOS:
        shutil.copy(photos_dir / name, folders["inbox"] / name)
    config = write_config(folders, model=model, **SETTINGS)
    r = albumd(config, "run", "--once", timeout=600, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    events = [line.split()[2] for line in r.stdout.splitlines() if len(line.split()) > 2]
    assert events.count("batch.claimed") == 2
    assert events.index("batch.claimed", events.index("batch.claimed") + 1) < events.index("job.done")
    records = [json.loads(p.read_text()) for p in sorted(folders["archive"].rglob("*.audit.json"))]
    assert len(records) == len(PHOTOS)
    return records


@pytest.mark.timeout(900)
def test_daemon_restores_faces_with_a_real_pipeline_and_the_guard_keeps_strangers_out(
    tiny_files: TinyModelFiles, photos_dir: Path, tmp_path: Path
) -> None:
    runs = []
    for n, model in enumerate(
        [
            {"path": str(tiny_files.folder)},
            {"path": str(tiny_files.single_file), "config_path": str(tiny_files.config_dir)},
        ]
    ):
        folders = {k: tmp_path / f"run{n}" / k for k in ("inbox", "archive", "state")}
        for f in folders.values():
            f.mkdir(parents=True)
        runs.append((folders, run_album(folders, photos_dir, model)))
    (_, records0), (_, records1) = runs
    faces_seen = 0
    for rec in records0:
        jsonschema.validate(rec, SCHEMA)
        assert rec["model"]["status"] == "used" and len(rec["model"]["sha256"]) == 64
        diffusion = next(s for s in rec["stages"] if s["name"] == "diffusion")
        assert diffusion["skipped"] is None
        for face in rec["faces"]:
            if not face["restorable"]:
                continue
            faces_seen += 1
            # every attempt is recorded with its strength, distance and decision
            assert face["attempts"], face
            assert face["prompt"] and isinstance(face["seed"], int)
            # random weights cannot keep a person's identity: the guard must keep the original face
            assert face["action"] == "kept_original", face
            assert all(a["decision"] in ("rejected", "no_face") for a in face["attempts"])
            assert [a["strength"] for a in face["attempts"]] == sorted(
                (a["strength"] for a in face["attempts"]), reverse=True
            )
    assert faces_seen >= 3
    # same bytes on a re-run (and the folder and the single-file checkpoint are the same weights)
    for a, b in zip(records0, records1, strict=True):
        ra = {o["role"]: o["sha256"] for o in a["outputs"] if o["role"] != "original"}
        rb = {o["role"]: o["sha256"] for o in b["outputs"] if o["role"] != "original"}
        assert ra == rb
        assert [f.get("seed") for f in a["faces"]] == [f.get("seed") for f in b["faces"]]
    assert records0[0]["model"]["sha256"] != records1[0]["model"]["sha256"]  # different files, same weights


def test_pickle_checkpoint_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not even a real pickle")
    config = write_config(folders, model={"path": str(ckpt)})
    r = albumd(config, "run", "--once")
    assert r.returncode != 0
    assert "arbitrary code" in (r.stdout + r.stderr) or "pickle" in (r.stdout + r.stderr)
    doctor = albumd(config, "doctor")
    assert doctor.returncode == 1 and "pickle" in doctor.stdout
    allowed = write_config(folders, model={"path": str(ckpt), "allow_pickle": True})
    r = albumd(allowed, "run", "--once")
    assert r.returncode != 0  # allowed, but this file is no model: still a clear refusal, not a crash
    assert "Traceback" not in r.stderr
