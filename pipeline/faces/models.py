"""dlib models, loaded once per process.

The weights come from the ``face_recognition_models`` distribution. That package imports
``pkg_resources`` at import time (absent on modern setuptools), so it is never imported: its folder is
located with ``importlib.util.find_spec`` and the ``models/`` folder beside its ``__init__.py`` is read.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import cache
from pathlib import Path
from typing import Any

import dlib

_LOCK = threading.Lock()

WEIGHTS = {
    "cnn": "mmod_human_face_detector.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "embedding": "dlib_face_recognition_resnet_model_v1.dat",
}


class FaceModelsMissing(RuntimeError):
    """The face_recognition_models weights are not installed."""


@cache
def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FaceModelsMissing("the face_recognition_models package is not installed (pip install it)")
    folder = Path(spec.origin).parent / "models"
    missing = [name for name in WEIGHTS.values() if not (folder / name).is_file()]
    if missing:
        raise FaceModelsMissing(f"face_recognition_models has no {', '.join(missing)} in {folder}")
    return folder


def _load(kind: str) -> Any:
    with _LOCK:
        return _load_unlocked(kind)


@cache
def _load_unlocked(kind: str) -> Any:
    if kind == "hog":
        return dlib.get_frontal_face_detector()
    path = str(models_dir() / WEIGHTS[kind])
    if kind == "cnn":
        return dlib.cnn_face_detection_model_v1(path)
    if kind == "landmarks5":
        return dlib.shape_predictor(path)
    if kind == "embedding":
        return dlib.face_recognition_model_v1(path)
    raise KeyError(kind)


def hog_detector() -> Any:
    return _load("hog")


def cnn_detector() -> Any:
    return _load("cnn")


def landmark_predictor() -> Any:
    return _load("landmarks5")


def embedding_model() -> Any:
    return _load("embedding")


def weights_info() -> dict[str, str]:
    """File names of the weights used (for the audit record)."""
    return {kind: str(models_dir() / name) for kind, name in WEIGHTS.items()}
