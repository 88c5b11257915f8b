"""Denoise and sharpen, each only as much as the photo needs, with the amounts recorded.

* **Noise** is measured with Immerkaer's operator (the [1 -2 1] x [1 -2 1] kernel responds to noise,
  hardly to smooth picture content): sigma = median(|I * N|) / (0.6745 * 6) on the luminance, a robust
  estimate that edges barely move. Below ``noise_floor`` nothing is denoised. Above it, an edge-keeping
  bilateral filter whose colour range follows the measured sigma is blended in with weight
  ``min(1, (sigma - floor) / floor) * strength``.
* **Softness** is measured as the share of detail energy in the finest octave (|I - blur_1| vs
  |I - blur_3|); a sharp photo has a large share. Sharpening (unsharp mask on luminance, so no colour
  fringes) gets an amount proportional to how far the share is below ``sharp_target``, capped by
  ``max_sharpen``, and is applied only where the detail exceeds twice the noise (grain is not sharpened).

Float32 throughout (16-bit input keeps its precision).
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, Field

from .stage import Image, StageRecord, skipped, timed


class DenoiseParams(BaseModel):
    """Adaptive denoise and sharpen."""

    enabled: bool = Field(True, description="denoise and sharpen as needed")
    denoise: bool = Field(True, description="reduce noise/grain when it is above the floor")
    noise_floor: float = Field(
        0.008, ge=0, le=0.2, description="noise sigma (0-1) below which nothing is done"
    )
    strength: float = Field(1.0, ge=0, le=2, description="scale of the denoising blend")
    sigma_colour: float = Field(
        2.5, gt=0, description="bilateral colour range, in multiples of the noise sigma"
    )
    sigma_space: float = Field(2.0, gt=0, description="bilateral spatial sigma, px")
    sharpen: bool = Field(True, description="sharpen soft photos")
    sharp_target: float = Field(0.36, gt=0, lt=1, description="finest-octave detail share of a crisp photo")
    max_sharpen: float = Field(0.8, ge=0, le=3, description="largest unsharp-mask amount")
    sharpen_radius: float = Field(1.2, gt=0, le=10, description="unsharp-mask Gaussian sigma, px")


def estimate_noise(gray: np.ndarray) -> float:
    """Robust Gaussian-noise sigma of a 2-D float image (Immerkaer's operator, median form)."""
    if min(gray.shape) < 3:
        return 0.0
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = cv2.filter2D(gray.astype(np.float32), -1, k)[1:-1, 1:-1]
    return float(np.median(np.abs(r)) / (0.6745 * 6.0))


def detail_share(gray: np.ndarray) -> float:
    """Share of the detail energy that lies in the finest octave (large = crisp)."""
    g = gray.astype(np.float32)
    fine = g - cv2.GaussianBlur(g, (0, 0), 1.0)
    coarse = g - cv2.GaussianBlur(g, (0, 0), 3.0)
    return float(np.mean(np.abs(fine)) / (np.mean(np.abs(coarse)) + 1e-6))


def denoise_sharpen(image: Image, params: DenoiseParams) -> tuple[Image, StageRecord]:
    if not params.enabled:
        return image, skipped("denoise", "disabled in config", params)
    record = StageRecord(name="denoise", parameters=params.model_dump())
    with timed(record):
        img = np.asarray(image, dtype=np.float32)
        if min(img.shape[:2]) < 8:
            record.skipped = "image too small to measure"
            return img, record
        gray = np.ascontiguousarray(img.mean(axis=2))
        sigma = estimate_noise(gray)
        out = img
        weight = 0.0
        if params.denoise and sigma > params.noise_floor and params.strength > 0:
            weight = float(
                min(1.0, (sigma - params.noise_floor) / max(params.noise_floor, 1e-6)) * params.strength
            )
            weight = min(weight, 1.0)
            den = cv2.bilateralFilter(img, 5, params.sigma_colour * sigma, params.sigma_space)
            out = (img + weight * (den - img)).astype(np.float32)
        share = detail_share(np.ascontiguousarray(out.mean(axis=2)))
        amount = 0.0
        if params.sharpen and share < params.sharp_target:
            amount = float(min(params.max_sharpen, (params.sharp_target - share) / params.sharp_target * 2.5))
            y = out.mean(axis=2)
            detail = y - cv2.GaussianBlur(y, (0, 0), params.sharpen_radius)
            gate = np.clip((np.abs(detail) - 2 * sigma) / max(2 * sigma, 1e-3), 0, 1)
            out = out + (amount * detail * gate)[:, :, None]
            out = np.clip(out, 0.0, 1.0).astype(np.float32)
        record.result = {
            "noise_sigma": round(sigma, 5),
            "denoise_weight": round(weight, 4),
            "detail_share": round(share, 4),
            "sharpen_amount": round(amount, 4),
        }
    return out, record
