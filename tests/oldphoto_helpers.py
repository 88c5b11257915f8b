"""Shared helpers of the old-photo stage tests: small clean photos and the real test photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from albumd.pipeline.imageio import load_image

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "photos"


def clean(name: str, step: int = 1) -> np.ndarray:
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[::step, ::step, :3], dtype=np.float32) / 255.0


def photo(name: str) -> np.ndarray:
    return load_image((PHOTOS / name).read_bytes()).pixels
