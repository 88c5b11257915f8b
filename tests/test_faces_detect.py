"""Detection on the real test photos (counts vs MANIFEST, boxes) and on synthetic edge cases."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from albumd.pipeline.faces import DetectParams, FacesParams, face_record, find_faces

try:
    from faces_fixtures import detected, manifest, photo
except ImportError:  # tests/ made a package
    from .faces_fixtures import detected, manifest, photo

PHOTO_NAMES = sorted(manifest())


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_count_within_manifest_range(name: str) -> None:
    lo, hi = manifest()[name]
    faces, record = detected(name)
    assert lo <= len(faces) <= hi, f"{name}: {len(faces)} faces, MANIFEST says {lo}..{hi}"
    assert record.result["count"] == len(faces)
    # the time budget bounds a photo's detection (generous slack for a loaded CI machine)
    budget = DetectParams().time_budget_s
    assert record.result["seconds"]["total"] < budget + 8.0


@pytest.mark.parametrize("name", [n for n in PHOTO_NAMES if manifest()[n][0] > 0])
def test_boxes_and_landmarks_are_faces(name: str) -> None:
    img = photo(name)
    h, w = img.shape[:2]
    faces, _ = detected(name)
    for i, f in enumerate(faces):
        assert f.index == i
        x, y, bw, bh = f.box
        cx, cy = x + bw / 2, y + bh / 2
        assert 0 <= cx < w and 0 <= cy < h
        assert 36 * 0.8 <= f.size_px <= max(h, w)
        # landmarks inside the face box (a little slack for a tilted face), eyes above the nose
        pts = f.landmarks5
        assert (pts[:, 0] > x - 0.1 * bw).all() and (pts[:, 0] < x + 1.1 * bw).all()
        assert (pts[:, 1] > y - 0.1 * bh).all() and (pts[:, 1] < y + 1.1 * bh).all()
        eyes_y = pts[:4, 1].mean()
        assert pts[4, 1] > eyes_y + 0.1 * f.size_px * np.cos(np.deg2rad(f.angle)) - 0.2 * f.size_px
        assert f.score >= DetectParams().cnn_threshold
        assert f.embedding is not None and f.embedding.shape == (128,)
    # stable left-to-right order
    xs = [f.box[0] + f.box[2] / 2 for f in faces]
    assert xs == sorted(xs)


# Face centres read off the contact sheet (photo pixels), ~a third of a face size tolerance.
KNOWN_CENTRES = {
    "bop_old_b.png": [(295, 286)],
    "bop_old_w_scratch_a.png": [(271, 290)],
    "pair_a.png": [(219, 294), (474, 247)],
    "group4_b.png": [(208, 135), (471, 173), (688, 169), (931, 189)],
}


@pytest.mark.parametrize("name", sorted(KNOWN_CENTRES))
def test_box_positions(name: str) -> None:
    faces, _ = detected(name)
    assert len(faces) == len(KNOWN_CENTRES[name])
    for f, (ex, ey) in zip(faces, KNOWN_CENTRES[name], strict=True):
        cx, cy = f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2
        assert np.hypot(cx - ex, cy - ey) < f.size_px / 3, (name, f.index, (cx, cy))


def test_group_photo_sizes_consistent() -> None:
    faces, _ = detected("group4_b.png")
    sizes = np.array([f.size_px for f in faces])
    assert sizes.max() / sizes.min() < 1.6
    assert all(f.restorable for f in faces)


def test_audit_record_is_json() -> None:
    faces, record = detected("pair_a.png")
    rec = face_record(faces[0])
    for key in ("index", "box", "landmarks", "detector", "score", "size_px", "restorable", "reason"):
        assert key in rec
    text = json.dumps(rec)
    assert len(json.loads(text)["landmarks"]) == 5
    json.dumps(record.to_json())
    matte = record.artifacts["faces_matte"]
    assert matte.shape == photo("pair_a.png").shape[:2] and matte.min() >= 0 and matte.max() <= 1


def test_small_faces_recorded_not_restored() -> None:
    params = FacesParams(detect=DetectParams(min_restore_px=60))
    faces, _ = find_faces(photo("group4_a.jpg"), params)
    assert len(faces) == 4
    small = [f for f in faces if f.size_px < 60]
    assert small and all(not f.restorable and "too small" in f.reason for f in small)
    assert all(f.restorable for f in faces if f.size_px >= 60)


def _wall(h: int = 420, w: int = 560, seed: int = 3) -> np.ndarray:
    """A brick wall with mortar, stains and a face-like pattern (two dark knots over a dark slit)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (0.62, 0.42, 0.33), np.float32)
    for row, y in enumerate(range(0, h, 30)):
        img[y : y + 4] = 0.8
        off = 0 if row % 2 else 40
        for x in range(off, w, 80):
            img[y : y + 30, x : x + 4] = 0.8
    img += rng.normal(0, 0.04, (h, w, 1)).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    # the "face": two dark blobs and a mouth-like slit on a lighter oval patch
    cv2.ellipse(img, (280, 200), (60, 80), 0, 0, 360, (0.72, 0.6, 0.5), -1)
    cv2.circle(img, (258, 185), 9, (0.15, 0.1, 0.1), -1)
    cv2.circle(img, (302, 185), 9, (0.15, 0.1, 0.1), -1)
    cv2.ellipse(img, (280, 245), (22, 6), 0, 0, 360, (0.2, 0.12, 0.1), -1)
    return np.clip(img, 0, 1)


def test_face_like_wall_texture_is_not_a_face() -> None:
    faces, record = find_faces(_wall(), FacesParams(embed=False))
    assert faces == [], [face_record(f) for f in faces]
    assert record.result["count"] == 0


def test_greyscale_photo_same_faces() -> None:
    img = photo("group4_b.png")
    grey = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2).astype(np.float32)
    faces, _ = find_faces(grey, FacesParams(embed=False))
    ref, _ = detected("group4_b.png")
    assert len(faces) == len(ref)
    for a, b in zip(faces, ref, strict=True):
        assert np.abs(a.landmarks5 - b.landmarks5).max() < 0.1 * b.size_px


def test_sideways_print_found_by_orientation_retry() -> None:
    img = photo("bop_old_w_scratch_a.png")
    turned = np.ascontiguousarray(np.rot90(img, k=1))  # counter-clockwise: the head points left
    faces, record = find_faces(turned, FacesParams(embed=False))
    assert len(faces) == 1
    assert (
        90 in record.result["detection"]["orientations_tried"]
        or 270 in record.result["detection"]["orientations_tried"]
    )
    # landmarks agree with the upright photo's, mapped through the rotation: (x, y) -> (y, W-1-x)
    ref, _ = detected("bop_old_w_scratch_a.png")
    w = img.shape[1]
    expected = np.stack([ref[0].landmarks5[:, 1], w - 1 - ref[0].landmarks5[:, 0]], axis=1)
    assert np.abs(faces[0].landmarks5 - expected).max() < 0.08 * ref[0].size_px


def test_tilted_photo() -> None:
    img = photo("bop_old_w_scratch_a.png")
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 35, 1.0)
    tilted = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    faces, _ = find_faces(tilted, FacesParams(embed=False))
    # the mirrored border copies must not count as faces
    assert len(faces) == 1
    ref, _ = detected("bop_old_w_scratch_a.png")
    expected = ref[0].landmarks5 @ m[:, :2].T + m[:, 2]
    assert np.abs(faces[0].landmarks5 - expected).max() < 0.1 * ref[0].size_px
    eye_line = faces[0].landmarks5[0] - faces[0].landmarks5[2]
    assert abs(np.degrees(np.arctan2(eye_line[1], eye_line[0])) + 35) < 12


def test_time_budget_bounds_detection() -> None:
    img = photo("group4_b.png")
    params = FacesParams(embed=False, detect=DetectParams(time_budget_s=0.01))
    _faces, record = find_faces(img, params)
    det = record.result["detection"]
    assert det["skipped_budget"] > 0
    assert record.result["seconds"]["verify"] < 1.0


def test_disabled() -> None:
    faces, record = find_faces(photo("pair_a.png"), FacesParams(enabled=False))
    assert faces == [] and record.skipped
