"""`albumd doctor`: each check says what is wrong and how to fix it."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import Config
from .mounts import fs_type, is_network, sqlite_network_problem

MIN_FREE_BYTES = 2 * 1024**3


@dataclass
class Check:
    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str


def run_checks(config: Config | None, config_error: str | None) -> list[Check]:
    if config is None:
        return [Check("config", "fail", config_error or "no configuration")]
    checks = [Check("config", "ok", f"valid (sha256 {config.fingerprint()[:12]})")]
    checks += _folders(config)
    checks.append(_database(config))
    checks.append(_gpu())
    checks.append(_model(config))
    checks.append(_face_models())
    return checks


def _folders(c: Config) -> list[Check]:
    out = []
    for name, path, need in (
        ("inbox", c.inbox, os.R_OK | os.X_OK),
        ("archive", c.archive, os.W_OK | os.X_OK),
    ):
        if not path.is_dir():
            out.append(Check(name, "fail", f"{path} does not exist: create it or fix `{name}` in the config"))
        elif not os.access(path, need):
            out.append(
                Check(
                    name,
                    "fail",
                    f"{path} is not {'readable' if name == 'inbox' else 'writable'} by this user",
                )
            )
        else:
            mode = "polling" if is_network(path) else "inotify"
            out.append(
                Check(
                    name,
                    "ok",
                    f"{path} ({fs_type(path)}; watched by {mode})"
                    if name == "inbox"
                    else f"{path} ({fs_type(path)})",
                )
            )
    for name, path in (("archive disk", c.archive), ("state disk", c.state_dir)):
        probe = path if path.exists() else path.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError as exc:
            out.append(Check(name, "fail", f"cannot read free space of {probe}: {exc}"))
            continue
        status = "ok" if free >= MIN_FREE_BYTES else "warn"
        out.append(
            Check(
                name,
                status,
                f"{free / 1024**3:.1f} GiB free" + ("" if status == "ok" else "; free some space"),
            )
        )
    return out


def _database(c: Config) -> Check:
    from . import db

    problem = sqlite_network_problem(c.db_url)
    if problem:  # not even opened: that would create the database file there
        return Check("database", "fail", problem)
    try:
        engine = db.make_engine(c.db_url)
        current = db.current_revision(engine)
        head = db.head_revision(c.db_url)
        engine.dispose()
    except Exception as exc:
        return Check("database", "fail", f"cannot open {c.db_url.split('@')[-1]}: {exc}")
    if current != head:
        return Check(
            "database",
            "warn",
            f"schema at {current or 'empty'}, newest is {head}: run `albumd db upgrade` (also done at start)",
        )
    return Check("database", "ok", f"schema at {head}")


def _gpu() -> Check:
    try:
        import torch
    except ImportError:
        return Check(
            "gpu", "warn", "PyTorch is not installed: install torch (see README) for the diffusion stage"
        )
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
        return Check("gpu", "ok", f"{name}, {free / 1024**3:.1f} of {total / 1024**3:.1f} GiB free")
    return Check(
        "gpu",
        "warn",
        f"no CUDA device (torch {torch.__version__}); the diffusion stage runs on the CPU, slowly. "
        "For a GPU, install the CUDA build of torch (README)",
    )


def _model(c: Config) -> Check:
    from albumd.pipeline.diffusion import check_model, doctor_text

    if c.model.path is None:
        text = " ".join(line.strip() for line in doctor_text(c.model))
        return Check("model", "warn", f"model.path is not set. {text}")
    problems = check_model(c.model)
    if problems:
        return Check("model", "fail", "; ".join(problems))
    return Check("model", "ok", f"{c.model.path} (loaded at start; its sha256 is recorded in every audit)")


def _face_models() -> Check:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return Check(
            "face models",
            "fail",
            "face_recognition_models is not installed: pip install face_recognition_models",
        )
    folder = Path(spec.origin).parent / "models"
    missing = [
        n
        for n in (
            "mmod_human_face_detector.dat",
            "shape_predictor_5_face_landmarks.dat",
            "dlib_face_recognition_resnet_model_v1.dat",
        )
        if not (folder / n).exists()
    ]
    if missing:
        return Check("face models", "fail", f"missing in {folder}: {', '.join(missing)}")
    return Check("face models", "ok", str(folder))
