"""Identity: dlib's ResNet 128-d face embedding, computed the same way on original and restored faces.

Every embedding is taken from an aligned crop (the template frame of ``align.py``), so the identity
guard compares like with like: the original face's crop and the restored crop go through the same
code. Landmarks are re-found inside the crop (the restorer may move a feature by a few pixels) and the
canonical template positions are used when the re-found ones stray from them.
"""

from __future__ import annotations

import dlib
import numpy as np

from . import models
from .align import template

SAME_PERSON_DISTANCE = 0.6
"""dlib's own threshold: embeddings of one person are closer than this (99.38% on LFW)."""


def _rect_for(size: int) -> dlib.rectangle:
    """The face box a detector gives for a face in template position (about eyes to chin)."""
    t = template(size)
    eye_d = float(np.hypot(*((t[0] + t[1]) / 2 - (t[2] + t[3]) / 2)))
    cx = float(t[:, 0].mean())
    cy = float((t[0, 1] + t[4, 1]) / 2) + 0.1 * eye_d
    half = 1.05 * eye_d
    return dlib.rectangle(round(cx - half), round(cy - half), round(cx + half), round(cy + half))


def crop_landmarks(crop_u8: np.ndarray) -> np.ndarray:
    """5-point landmarks re-found inside an aligned crop (falls back to the template where they stray)."""
    size = crop_u8.shape[0]
    t = template(size)
    shape = models.landmark_predictor()(crop_u8, _rect_for(size))
    pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    eye_d = float(np.hypot(*((t[0] + t[1]) / 2 - (t[2] + t[3]) / 2)))
    if float(np.abs(pts - t).max()) > 0.25 * eye_d:
        return t
    return pts


def embed_aligned_crop(crop: np.ndarray, redetect: bool = True) -> np.ndarray | None:
    """128-d identity embedding of a face crop in the template frame (e.g. a 512x512 restored crop).

    ``crop`` is (S, S, 3) float in [0, 1] or uint8. Returns float32 (128,), or None when the crop is
    unusable (wrong shape, empty, not finite).
    """
    arr = np.asarray(crop)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 32:
        return None
    if arr.dtype != np.uint8:
        if not np.isfinite(arr).all():
            return None
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    size = arr.shape[0]
    pts = crop_landmarks(arr) if redetect else template(size)
    parts = [dlib.point(round(x), round(y)) for x, y in pts]
    shape = dlib.full_object_detection(_rect_for(size), parts)
    vec = np.asarray(models.embedding_model().compute_face_descriptor(arr, shape, 0, 0.25), np.float32)
    return vec if vec.shape == (128,) and np.isfinite(vec).all() else None


def identity_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Euclidean distance of two embeddings (dlib scale: < 0.6 same person); inf when either is missing."""
    if a is None or b is None:
        return float("inf")
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def same_person(a: np.ndarray | None, b: np.ndarray | None, threshold: float = SAME_PERSON_DISTANCE) -> bool:
    return identity_distance(a, b) < threshold
