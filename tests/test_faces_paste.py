"""Alignment, matte and paste-back: round trip, photo edges, touching faces, seams vs a feathered box."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from albumd.pipeline.faces import (
    AlignParams,
    FacesParams,
    PasteParams,
    align_face,
    boundary_band,
    face_from_landmarks,
    face_matte,
    gradient_energy,
    guided_filter,
    match_colour,
    paste_faces,
    paste_feathered_box,
    seam_energy,
    template,
)
from albumd.pipeline.faces.matte import coarse_mask

try:
    from faces_fixtures import detected, photo
except ImportError:  # tests/ made a package
    from .faces_fixtures import detected, photo


def _roundtrip_error(name: str) -> tuple[float, float]:
    img = photo(name)
    faces, _ = detected(name)
    out, record = paste_faces(img, faces, {f.index: f.aligned.crop for f in faces})
    region = record.artifacts["faces_matte"] > 0.01
    assert region.sum() > 100
    err = np.abs(out - img)[region]
    # outside the mattes nothing changes at all
    untouched = record.artifacts["faces_matte"] == 0
    assert np.array_equal(out[untouched], img[untouched])
    return float(err.mean()), float(np.percentile(err, 99))


@pytest.mark.parametrize("name", ["pair_a.png", "bop_old_w_scratch_a.png", "group4_b.png"])
def test_roundtrip_unmodified_crop_large_faces(name: str) -> None:
    mean, p99 = _roundtrip_error(name)
    assert mean < 0.003 and p99 < 0.02, (mean, p99)


@pytest.mark.parametrize("name", ["group4_a.jpg", "bop_old_b.png"])
def test_roundtrip_unmodified_crop_small_faces(name: str) -> None:
    # a 45 px face is upsampled ~10x into the crop and low-pass filtered on the way back
    mean, p99 = _roundtrip_error(name)
    assert mean < 0.008 and p99 < 0.05, (mean, p99)


def test_alignment_puts_landmarks_on_template() -> None:
    faces, _ = detected("pair_a.png")
    for f in faces:
        mapped = f.landmarks5 @ f.aligned.matrix[:, :2].T + f.aligned.matrix[:, 2]
        assert np.abs(mapped - template(512)).max() < 25
        back = mapped @ f.aligned.inverse_matrix[:, :2].T + f.aligned.inverse_matrix[:, 2]
        assert np.allclose(back, f.landmarks5, atol=1e-6)
        assert f.aligned.crop.shape == (512, 512, 3) and f.aligned.crop.dtype == np.float32


def test_alignment_samples_full_resolution() -> None:
    # a face is sharper in the crop than the same face aligned from a downscaled copy
    img = photo("group4_b.png")
    f = detected("group4_b.png")[0][1]
    small = cv2.resize(img, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    half = align_face(small, f.landmarks5 * 0.4, AlignParams())
    sharp = gradient_energy(f.aligned.crop, np.ones((512, 512), bool))
    assert sharp > 1.3 * gradient_energy(half.crop, np.ones((512, 512), bool))


def test_configurable_crop_size() -> None:
    f = detected("pair_a.png")[0][0]
    a = align_face(photo("pair_a.png"), f.landmarks5, AlignParams(crop_size=256))
    assert a.crop.shape == (256, 256, 3) and a.valid_mask.shape == (256, 256)
    ref = cv2.resize(f.aligned.crop, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(a.crop - ref).mean() < 0.02


@pytest.mark.parametrize("padding", ["reflect", "edge", "constant"])
def test_face_at_the_photo_edge(padding: str) -> None:
    img = photo("bop_old_w_scratch_a.png")
    f = detected("bop_old_w_scratch_a.png")[0][0]
    cut = int(f.landmarks5[:, 0].mean())  # the photo now ends in the middle of the face
    part = np.ascontiguousarray(img[:, cut:])
    pts = f.landmarks5 - [cut, 0]
    params = FacesParams(align=AlignParams(padding=padding))
    face = face_from_landmarks(part, pts, 0, params)
    valid = face.aligned.valid_mask
    # the crop's left part is outside the photo, its right part inside
    assert valid[:, :100].max() < 0.01 and valid[:, -100:].min() > 0.99
    assert 0.3 < valid.mean() < 0.8
    # the matte never reaches outside the photo
    assert (face.matte_crop[valid == 0] == 0).all()
    crop = face.aligned.crop
    outside = crop[cv2.erode((valid == 0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0]
    if padding == "constant":
        assert outside.max() == 0.0
    else:  # reflect / edge padding: no black block for the restorer to see
        assert outside.mean() > 0.1
    assert face.restorable is False or valid[face.matte_crop > 0.5].mean() >= 0.6
    # pasting the unmodified crop back changes the cut photo only within a tight tolerance
    out, rec = paste_faces(part, [face], {0: crop})
    region = rec.artifacts["faces_matte"] > 0.01
    assert np.abs(out - part)[region].mean() < 0.003
    assert out.shape == part.shape


def _touching_pair() -> tuple[np.ndarray, list]:
    """A photo with one face copied next to itself, the two face regions overlapping."""
    img = photo("bop_old_w_scratch_a.png")
    f = detected("bop_old_w_scratch_a.png")[0][0]
    shift = int(0.75 * f.size_px)
    canvas = np.concatenate([img, img[:, -shift:]], axis=1)
    x0 = int(f.landmarks5[:, 0].min() - 0.6 * f.size_px)
    x1 = int(f.landmarks5[:, 0].max() + 0.6 * f.size_px)
    src = img[:, x0:x1].copy()
    canvas = canvas.copy()
    canvas[:, x0 + shift : x1 + shift] = src
    pts_a = f.landmarks5
    pts_b = f.landmarks5 + np.array([shift, 0.0])
    faces = [face_from_landmarks(canvas, pts_a, 0), face_from_landmarks(canvas, pts_b, 1)]
    return np.ascontiguousarray(canvas), faces


def test_touching_faces_each_matte_limited_to_its_own_region() -> None:
    canvas, faces = _touching_pair()
    plain = PasteParams(color_match=False, grain_match=False)
    zeros = np.zeros_like(canvas)
    ones = np.ones((512, 512, 3), np.float32)
    alpha_a, _ = paste_faces(zeros, faces, {0: ones}, plain)
    alpha_b, _ = paste_faces(zeros, faces, {1: ones}, plain)
    a, b = alpha_a[..., 0], alpha_b[..., 0]
    # without the ownership limit the two face ellipses would overlap
    raw_a = cv2.warpAffine(faces[0].matte_crop, faces[0].aligned.inverse_matrix, canvas.shape[1::-1])
    raw_b = cv2.warpAffine(faces[1].matte_crop, faces[1].aligned.inverse_matrix, canvas.shape[1::-1])
    assert (np.minimum(raw_a, raw_b) > 0.5).sum() > 200
    # with it, no pixel gets both faces
    assert float((a * b).max()) == 0.0
    # and each face keeps its own centre
    for f, alpha in ((faces[0], a), (faces[1], b)):
        cx, cy = f.landmarks5.mean(0).round().astype(int)
        assert alpha[cy, cx] > 0.99
    # both restored in one call: each region gets its own crop's colour, never the other's
    red = np.zeros((512, 512, 3), np.float32)
    red[..., 0] = 1
    blue = np.zeros((512, 512, 3), np.float32)
    blue[..., 2] = 1
    both, rec = paste_faces(zeros, faces, {0: red, 1: blue}, plain)
    assert np.allclose(both[..., 0], a, atol=1e-5) and np.allclose(both[..., 2], b, atol=1e-5)
    assert rec.result["pasted"] == 2


def _restore_stand_in(crop: np.ndarray) -> np.ndarray:
    """A restoration that came back with another tone and colour: brighter, warmer (no new detail, so
    every gradient added on the boundary is the paste's doing)."""
    return np.clip(crop + np.array([0.10, 0.05, -0.04], np.float32), 0, 1).astype(np.float32)


@pytest.mark.parametrize("name", ["pair_a.png", "bop_old_w_scratch_a.png", "group4_b.png", "bop_old_h.png"])
def test_matte_seam_gradient_energy_vs_feathered_box(name: str) -> None:
    img = photo(name)
    faces, _ = detected(name)
    restored = {f.index: _restore_stand_in(f.aligned.crop) for f in faces}
    ours, rec = paste_faces(img, faces, restored)
    band = boundary_band(rec.artifacts["faces_matte"])
    matte_only, _ = paste_faces(img, faces, restored, PasteParams(color_match=False, grain_match=False))
    box_img, box_alpha = np.array(img), np.zeros(img.shape[:2], np.float32)
    for f in faces:
        box_img, a = paste_feathered_box(box_img, f, restored[f.index])
        box_alpha = np.maximum(box_alpha, a)
    box_band = boundary_band(box_alpha)
    # gradient energy on the matte boundary, after vs before: no seam adds to it
    ours_ratio = gradient_energy(ours, band) / gradient_energy(img, band)
    box_ratio = gradient_energy(box_img, box_band) / gradient_energy(img, box_band)
    assert ours_ratio < 1.02, ours_ratio
    assert ours_ratio < box_ratio, (ours_ratio, box_ratio)
    # the change's own gradient energy on the boundary (the seam itself, without the photo's texture)
    ours_seam = seam_energy(img, ours, band)
    box_seam = seam_energy(img, box_img, box_band)
    assert ours_seam < 0.25 * box_seam, (ours_seam, box_seam)
    # the soft matte alone (no colour matching) already beats the box
    assert seam_energy(img, matte_only, band) < 0.5 * box_seam


def test_colour_match_keeps_monochrome_and_is_identity_on_unmodified() -> None:
    f = detected("bop_old_w_scratch_b.png")[0][0]
    crop = f.aligned.crop
    assert np.abs(match_colour(crop, crop) - crop).max() < 2e-3
    grey = np.repeat(crop.mean(axis=2, keepdims=True), 3, axis=2)
    colourful = np.clip(grey * np.array([1.3, 0.9, 0.7], np.float32), 0, 1)
    out = match_colour(colourful, grey)
    chroma = np.abs(out - out.mean(axis=2, keepdims=True)).max(axis=2)
    assert float(np.percentile(chroma, 99)) < 0.02
    # a tone shift is taken back to the original's tone
    shifted = np.clip(crop * 0.7, 0, 1)
    assert np.abs(match_colour(shifted, crop).mean() - crop.mean()) < 0.01


def test_grain_added_to_a_smooth_restoration() -> None:
    img = photo("bop_old_c.png")
    faces, _ = detected("bop_old_c.png")
    f = faces[0]
    smooth = cv2.GaussianBlur(f.aligned.crop, (0, 0), 4.0)
    _, rec = paste_faces(img, faces, {f.index: smooth})
    assert rec.result["faces"][0]["grain_added"] > 0
    _, rec2 = paste_faces(img, faces, {f.index: f.aligned.crop})
    assert rec2.result["faces"][0]["grain_added"] == 0


def test_matte_refined_against_the_photo() -> None:
    f = detected("pair_a.png")[0][0]
    coarse = coarse_mask(512, FacesParams().matte.feather)
    matte = f.matte_crop
    assert matte.shape == (512, 512) and matte.min() >= 0 and matte.max() <= 1
    assert matte[300, 256] > 0.99 and matte[5, 5] == 0
    band = (coarse > 0.05) & (coarse < 0.95)
    diff = np.abs(matte - coarse)[band]
    assert diff.mean() > 0.01  # the photo moved the soft band
    assert diff.max() < 0.4  # but never far from the landmarks' face region
    # a matte from a different photo's crop differs in the band (it follows each photo's edges)
    other = face_matte(detected("bop_old_h.png")[0][0].aligned.crop)
    assert np.abs(other - matte)[band].mean() > 0.005


def test_guided_filter_preserves_edges() -> None:
    guide = np.zeros((64, 64), np.float32)
    guide[:, 32:] = 1.0
    noisy = guide + np.random.default_rng(0).normal(0, 0.2, guide.shape).astype(np.float32)
    out = guided_filter(guide, noisy, 4, 1e-3)
    assert abs(float(out[:, 31].mean())) < 0.05 and abs(float(out[:, 32].mean()) - 1) < 0.05
    assert out[:, :28].std() < 0.5 * noisy[:, :28].std()


def test_paste_rejects_bad_crops() -> None:
    img = photo("pair_a.png")
    faces, _ = detected("pair_a.png")
    out, rec = paste_faces(img, faces, {0: np.zeros((100, 100, 3), np.float32), 7: faces[0].aligned.crop})
    assert np.array_equal(out, img)
    assert rec.result["pasted"] == 0
