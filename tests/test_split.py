"""Splitting flatbed scans into prints: detection, angle, crop, and the cases that must stay untouched."""

from __future__ import annotations

import numpy as np
import pytest
from albumd.pipeline.degrade import make_flatbed_scan
from albumd.pipeline.split import SplitParams, split_prints
from oldphoto_helpers import clean, photo


@pytest.mark.parametrize("background", ["white", "dark"])
@pytest.mark.parametrize("n", [1, 2, 4])
def test_finds_every_print_and_its_angle(n: int, background: str) -> None:
    rng = np.random.default_rng(n)
    names = ["astronaut", "chelsea", "coffee", "camera"][:n]
    prints = [clean(nm, 2) for nm in names]
    angles = list(rng.uniform(-10, 10, n))
    scan, truth = make_flatbed_scan(prints, angles, rng, background=background)
    cuts, record = split_prints(scan, SplitParams())
    assert len(cuts) == n and record.result["prints"] == n
    for cut, t, p in zip(cuts, truth, prints, strict=True):
        assert abs(cut.angle - t.deskew_angle) < 1.0
        assert abs(cut.image.shape[0] - p.shape[0]) <= 4 and abs(cut.image.shape[1] - p.shape[1]) <= 4
        # the straightened print matches the original print
        hh, ww = min(cut.image.shape[0], p.shape[0]) - 8, min(cut.image.shape[1], p.shape[1]) - 8
        err = np.abs(cut.image[4:hh, 4:ww] - p[4:hh, 4:ww]).mean()
        assert err < 0.09


def test_straight_print_is_sliced_not_resampled() -> None:
    p = clean("astronaut", 2)
    scan, _truth = make_flatbed_scan([p], [0.0], np.random.default_rng(0), noise=0.0)
    cuts, _ = split_prints(scan, SplitParams())
    assert len(cuts) == 1 and cuts[0].angle == 0.0
    x, y, w, h = cuts[0].box
    assert np.array_equal(cuts[0].image, scan[y : y + h, x : x + w])


@pytest.mark.parametrize(
    "name", ["bop_old_c.png", "bop_old_g.png", "bop_old_w_scratch_a.png", "pair_a.png", "group4_b.png"]
)
def test_photo_filling_the_scan_or_vignette_is_untouched(name: str) -> None:
    img = photo(name)
    cuts, _ = split_prints(img, SplitParams())
    assert len(cuts) == 1 and cuts[0].angle == 0.0
    assert cuts[0].image.shape == img.shape and np.array_equal(cuts[0].image, img)


@pytest.mark.parametrize(
    "image",
    [
        np.ones((300, 400, 3), np.float32),
        np.full((300, 400, 3), 0.04, np.float32),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((1, 1, 3), np.float32),
    ],
)
def test_bad_input_gives_the_whole_image(image: np.ndarray) -> None:
    cuts, record = split_prints(image, SplitParams())
    assert len(cuts) == 1 and cuts[0].image.shape == image.shape
    assert record.result["prints"] == 1


def test_disabled_returns_whole() -> None:
    img = clean("camera", 4)
    cuts, record = split_prints(img, SplitParams(enabled=False))
    assert record.skipped and cuts[0].image is img
