"""Denoise/sharpen: does nothing to a clean photo, reduces added noise, sharpens a blurred photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from albumd.pipeline.denoise import DenoiseParams, denoise_sharpen, estimate_noise
from oldphoto_helpers import clean


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_noise_estimate_tracks_sigma() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((200, 200), 0.5, np.float32)
    for sigma in (0.01, 0.03):
        est = estimate_noise(flat + rng.normal(0, sigma, flat.shape).astype(np.float32))
        assert abs(est - sigma) < 0.2 * sigma


def test_clean_photo_is_left_alone() -> None:
    img = clean("astronaut")
    out, record = denoise_sharpen(img, DenoiseParams())
    assert record.result["denoise_weight"] == 0.0
    assert _rmse(out, img) < 0.01


def test_noisy_photo_gets_closer_to_clean() -> None:
    img = clean("chelsea", 2)
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 0.04, img.shape), 0, 1).astype(np.float32)
    out, record = denoise_sharpen(noisy, DenoiseParams())
    assert record.result["denoise_weight"] > 0.5
    assert _rmse(out, img) < 0.9 * _rmse(noisy, img)


def test_soft_photo_is_sharpened() -> None:
    img = clean("camera", 2)
    soft = cv2.GaussianBlur(img, (0, 0), 1.5)
    out, record = denoise_sharpen(soft, DenoiseParams())
    assert record.result["sharpen_amount"] > 0.3
    assert _rmse(out, img) < _rmse(soft, img)


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 3)])
def test_tiny(shape: tuple[int, int, int]) -> None:
    out, _ = denoise_sharpen(np.zeros(shape, np.float32), DenoiseParams())
    assert out.shape == shape
