"""Tone: fade and casts are corrected; grey stays grey, sepia stays sepia; no clipping; float precision."""

from __future__ import annotations

import numpy as np
import pytest
from albumd.pipeline.degrade import fade_and_cast
from albumd.pipeline.tone import ToneParams, classify, correct_tone
from oldphoto_helpers import clean, photo


@pytest.mark.parametrize("cast", ["yellow", "magenta", "blue"])
def test_cast_and_fade_error_drops(cast: str) -> None:
    img = clean("astronaut", 2)
    aged = fade_and_cast(img, 0.6, cast)
    out, record = correct_tone(aged, ToneParams())
    assert record.result["kind"] == "colour"
    before = np.abs(aged - img).mean()
    after = np.abs(out - img).mean()
    assert after < 0.5 * before
    mean_err = np.abs(out.reshape(-1, 3).mean(0) - img.reshape(-1, 3).mean(0)).max()
    assert mean_err < 0.06


def test_grey_photo_stays_exactly_grey() -> None:
    img = clean("camera", 2)
    aged = fade_and_cast(img, 0.6, "none")
    out, record = correct_tone(aged, ToneParams())
    assert record.result["kind"] == "monochrome"
    assert np.abs(out - out.mean(axis=2, keepdims=True)).max() < 1e-5
    assert out.mean(axis=2).std() > 1.3 * aged.mean(axis=2).std()  # contrast came back


@pytest.mark.parametrize(
    "name", ["bop_old_w_scratch_a.png", "bop_old_w_scratch_b.png", "bop_old_w_scratch_c.png"]
)
def test_sepia_stays_sepia(name: str) -> None:
    img = photo(name)[::2, ::2]
    out, record = correct_tone(img, ToneParams())
    assert record.result["kind"] == "toned"
    import cv2

    lab_in = cv2.cvtColor(img, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    lab_out = cv2.cvtColor(out, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    hue_in = np.degrees(np.arctan2(lab_in[:, 2].mean(), lab_in[:, 1].mean()))
    hue_out = np.degrees(np.arctan2(lab_out[:, 2].mean(), lab_out[:, 1].mean()))
    assert abs(hue_in - hue_out) < 8
    assert np.hypot(lab_out[:, 1], lab_out[:, 2]).mean() > 0.6 * np.hypot(lab_in[:, 1], lab_in[:, 2]).mean()


@pytest.mark.parametrize("name", ["bop_old_b.png", "bop_old_h.png", "pair_a.png", "bop_old_f.png"])
def test_colour_photos_are_colour(name: str) -> None:
    kind, _ = classify(photo(name), ToneParams())
    assert kind == "colour"


def test_no_clipping_and_precision_kept() -> None:
    img = clean("coffee", 2)
    aged = fade_and_cast(img, 0.5, "yellow")
    out, record = correct_tone(aged, ToneParams())
    assert out.dtype == np.float32
    assert record.result["clipped_fraction"] < 0.002
    # 16-bit gradations survive: many more distinct levels than 8 bits would allow
    ramp = np.linspace(0.3, 0.6, 4000, dtype=np.float32)
    ramp_img = np.repeat(np.tile(ramp, (8, 1))[:, :, None], 3, axis=2)
    out2, _ = correct_tone(ramp_img, ToneParams())
    assert len(np.unique(out2[0, :, 0])) > 3000


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 3), (300, 300, 3)])
def test_degenerate_inputs(shape: tuple[int, int, int]) -> None:
    for value in (0.0, 1.0):
        out, _ = correct_tone(np.full(shape, value, np.float32), ToneParams())
        assert out.shape == shape and np.isfinite(out).all()
