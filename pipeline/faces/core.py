"""The faces stage: find every face, align it, embed it, matte it; and its audit record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..stage import StageRecord, jsonable, timed
from . import models
from .align import AlignedFace, align_face
from .detect import describe, detect_faces
from .identity import embed_aligned_crop
from .matte import coarse_mask, face_matte
from .params import FacesParams

MIN_VALID_FRACTION = 0.6
"""A face whose region is less than this much inside the photo is recorded but not restored."""
TEMPLATE_FACE_FRACTION = 0.58
"""A detector's face box side, as a fraction of the aligned crop's side (measured on the test photos)."""


@dataclass
class Face:
    index: int
    """Stable order in the photo: left to right by box centre (then top to bottom)."""
    box: list[int]
    """[x, y, w, h] in photo pixels (around the rotated face square for a tilted face)."""
    landmarks5: np.ndarray
    """(5, 2) float photo coordinates, dlib order: right-of-image eye outer, inner; left-of-image eye
    outer, inner; base of the nose."""
    detector: str
    """"cnn" (whole-photo CNN pass) or "hog+cnn" (HOG proposal verified by the CNN on a crop)."""
    score: float
    """MMOD confidence of the CNN (about 1.0 for a clear face)."""
    size_px: float
    """Side of the face square in photo pixels (roughly brow to chin)."""
    restorable: bool
    reason: str
    """Why the face is or is not restorable."""
    angle: float = 0.0
    """Degrees (counter-clockwise) the face is turned from upright in the photo."""
    hog_score: float | None = None
    embedding: np.ndarray | None = None
    """(128,) float32 dlib ResNet identity embedding of the aligned crop; None if not computed."""
    aligned: AlignedFace | None = None
    matte_crop: np.ndarray | None = None
    """(S, S) float32 soft alpha of the face in the aligned crop's frame."""
    timings: dict[str, float] = field(default_factory=dict)


def find_faces(image: np.ndarray, params: FacesParams | None = None) -> tuple[list[Face], StageRecord]:
    """Detect, align (full resolution), embed and matte every face of a photo.

    ``image`` is (H, W, 3) float32 in [0, 1]. Faces come back in stable left-to-right order with
    ``index`` 0..n-1. The record's ``result`` holds detection statistics, per-step seconds and the
    faces' audit dicts; its ``artifacts['faces_matte']`` is the union of the mattes at photo size.
    """
    p = params or FacesParams()
    record = StageRecord(name="faces.find", parameters=p.model_dump())
    if not p.enabled:
        record.skipped = "disabled in config (pipeline.faces.enabled: false)"
        return [], record
    faces: list[Face] = []
    with timed(record):
        dets, rep = detect_faces(image, p.detect)
        dets.sort(key=lambda d: (round(d.cx), round(d.cy)))
        t_align = t_embed = t_matte = 0.0
        for i, d in enumerate(dets):
            assert d.landmarks5 is not None
            t0 = time.perf_counter()
            aligned = align_face(image, d.landmarks5, p.align)
            t1 = time.perf_counter()
            matte = face_matte(aligned.crop, aligned.valid_mask, p.matte)
            t2 = time.perf_counter()
            emb = embed_aligned_crop(aligned.crop) if p.embed else None
            t3 = time.perf_counter()
            t_align += t1 - t0
            t_matte += t2 - t1
            t_embed += t3 - t2
            restorable, reason = _restorable(d.size, matte, aligned, p)
            faces.append(
                Face(
                    index=i,
                    box=d.box(),
                    landmarks5=d.landmarks5,
                    detector=d.detector,
                    score=d.score,
                    size_px=d.size,
                    restorable=restorable,
                    reason=reason,
                    angle=d.angle,
                    hog_score=d.hog_score,
                    embedding=emb,
                    aligned=aligned,
                    matte_crop=matte,
                    timings={"align": t1 - t0, "matte": t2 - t1, "embed": t3 - t2},
                )
            )
        seconds = dict(describe(rep)["seconds"])
        seconds.update({"align": round(t_align, 4), "matte": round(t_matte, 4), "embed": round(t_embed, 4)})
        record.result = {
            "count": len(faces),
            "restorable": sum(f.restorable for f in faces),
            "detection": {k: v for k, v in describe(rep).items() if k != "seconds"},
            "seconds": seconds,
            "models": {k: v.rsplit("/", 1)[-1] for k, v in models.weights_info().items()},
            "faces": [face_record(f) for f in faces],
        }
        if faces:
            record.artifacts["faces_matte"] = photo_matte(image.shape, faces)
    return faces, record


def face_from_landmarks(
    image: np.ndarray,
    landmarks5: np.ndarray,
    index: int = 0,
    params: FacesParams | None = None,
    detector: str = "given",
    score: float = 1.0,
) -> Face:
    """A Face from known landmarks (a user-marked face, or a test): aligned, matted, embedded."""
    p = params or FacesParams()
    pts = np.asarray(landmarks5, np.float64).reshape(5, 2)
    aligned = align_face(image, pts, p.align)
    matte = face_matte(aligned.crop, aligned.valid_mask, p.matte)
    emb = embed_aligned_crop(aligned.crop) if p.embed else None
    size = aligned.size / aligned.scale * TEMPLATE_FACE_FRACTION
    c = pts.mean(0)
    box = [int(c[0] - size / 2), int(c[1] - size / 2), round(size), round(size)]
    restorable, reason = _restorable(size, matte, aligned, p)
    return Face(index, box, pts, detector, score, size, restorable, reason, 0.0, None, emb, aligned, matte)


def _restorable(size: float, matte: np.ndarray, aligned: AlignedFace, p: FacesParams) -> tuple[bool, str]:
    if size < p.detect.min_restore_px:
        return False, f"too small: {size:.0f} px < min_restore_px {p.detect.min_restore_px}"
    region = coarse_mask(aligned.size, p.matte.feather) > 0.5
    inside = float(aligned.valid_mask[region].mean())
    if inside < MIN_VALID_FRACTION:
        return False, f"mostly outside the photo: {inside:.0%} of the face region is inside"
    return True, f"{size:.0f} px face, {inside:.0%} of its region inside the photo"


def photo_matte(shape: tuple[int, ...], faces: list[Face]) -> np.ndarray:
    """Union of the faces' mattes at photo size (each limited to its own region), for the archive."""
    from .paste import _inverse_roi, owner_weight, warp_to_photo

    out = np.zeros(shape[:2], np.float32)
    for f in faces:
        if f.aligned is None or f.matte_crop is None:
            continue
        roi = _inverse_roi(f, shape)
        x0, y0, x1, y1 = roi
        if x1 <= x0 or y1 <= y0:
            continue
        a = warp_to_photo(f.matte_crop, f.aligned.inverse_matrix, roi, False) * owner_weight(
            f, faces, roi, 0.08
        )
        out[y0:y1, x0:x1] = np.maximum(out[y0:y1, x0:x1], np.clip(a, 0, 1))
    return out


def face_record(face: Face) -> dict[str, Any]:
    """JSON-able audit dict of one face (the matte is not in it: archive ``face.matte_crop`` as a file)."""
    return jsonable(
        {
            "index": face.index,
            "box": face.box,
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks5],
            "detector": face.detector,
            "score": round(float(face.score), 4),
            "hog_score": None if face.hog_score is None else round(float(face.hog_score), 4),
            "size_px": round(float(face.size_px), 1),
            "angle": round(float(face.angle), 1),
            "restorable": face.restorable,
            "reason": face.reason,
            "embedding": None if face.embedding is None else [round(float(v), 6) for v in face.embedding],
            "crop_size": None if face.aligned is None else face.aligned.size,
            "crop_matrix": None if face.aligned is None else np.round(face.aligned.matrix, 6).tolist(),
            "valid_fraction": None
            if face.aligned is None
            else round(float(face.aligned.valid_mask.mean()), 4),
        }
    )
