"""The degradation model is deterministic, keeps the image contract and its masks match the damage."""

from __future__ import annotations

import numpy as np
import skimage.data
from albumd.pipeline.degrade import DegradeSpec, age_photo, degrade, fade_and_cast, make_flatbed_scan


def _astronaut() -> np.ndarray:
    return skimage.data.astronaut()[::2, ::2].astype(np.float32) / 255.0


def test_age_photo_is_seeded_and_in_range() -> None:
    img = _astronaut()
    a, b, c = age_photo(img, 3), age_photo(img, 3), age_photo(img, 4)
    assert a.dtype == np.float32 and a.shape == img.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0
    # faded: the tonal range shrinks a lot
    la, li = a.mean(axis=2), img.mean(axis=2)
    assert np.percentile(la, 95) - np.percentile(la, 5) < 0.8 * (np.percentile(li, 95) - np.percentile(li, 5))


def test_cast_moves_channel_means_in_the_named_direction() -> None:
    img = _astronaut()
    yellow = fade_and_cast(img, 0.5, "yellow").reshape(-1, 3).mean(0)
    blue = fade_and_cast(img, 0.5, "blue").reshape(-1, 3).mean(0)
    assert yellow[2] < yellow[0] - 0.05  # blue channel lost
    assert blue[0] < blue[2] - 0.02


def test_masks_cover_the_damage_only() -> None:
    img = _astronaut()
    spec = DegradeSpec(fade=0.0, cast="none", scratches=4, dust=80, hairs=0)
    out, masks = degrade(img, spec, np.random.default_rng(0))
    defect = masks["defect"] > 0
    assert 0.002 < defect.mean() < 0.15
    diff = np.abs(out - img).max(axis=2)
    # outside the (dilated) mask the image is untouched; inside it changed clearly
    import cv2

    near = cv2.dilate(defect.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert diff[~near].max() < 1e-5
    assert np.median(diff[defect]) > 0.1


def test_flatbed_ground_truth_matches_pixels() -> None:
    prints = [_astronaut(), skimage.data.chelsea()[::2, ::2] / 255.0]
    scan, truth = make_flatbed_scan(prints, [7.0, -3.0], np.random.default_rng(1), background="dark")
    assert len(truth) == 2
    for t in truth:
        x, y, w, h = t.box
        assert x >= 0 and y >= 0 and x + w <= scan.shape[1] and y + h <= scan.shape[0]
        cx, cy = np.mean(t.corners, axis=0)
        assert scan[int(cy) - 30 : int(cy) + 30, int(cx) - 30 : int(cx) + 30].mean() > 0.15  # print, not lid
    assert scan[2, 2].mean() < 0.15
    assert abs(truth[0].deskew_angle + 7.0) < 1e-9
