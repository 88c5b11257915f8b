"""Tone and colour: give a faded print its contrast back and remove colour casts, without colourising.

1. **Classify** the print on a small copy, in CIE Lab: the chroma (a*, b*) of the pixels is fitted as a
   linear function of lightness (a toning curve). If the residual around that curve is small, the print
   has a single hue family: *monochrome* when its mean chroma is small as well, *toned* (sepia, selenium,
   cyanotype) otherwise. Everything else is *colour*.
   A single-hue print counts as toned only when its hue is a toning hue (``toned_hues``: sepia/brown,
   cyanotype/blue); a single-hue green-yellow print is an autochrome or a colour print with a cast.
2. **Monochrome**: one tone curve on luminance (channel mean), applied identically to the three
   channels; the output
   is exactly neutral grey (R = G = B), so nothing is colourised and no cast is added.
3. **Toned (sepia)**: the same curve on luminance; each pixel's offset from grey is kept (scaled with its
   lightness change), so the toning survives.
4. **Colour**: per-channel black and white points (robust percentiles), i.e. the per-channel affine
   inverse of dye fading; the per-channel difference is limited by ``max_cast_gain`` so a scene that
   is really mostly one colour is not neutralised, and ``strength`` blends towards the original.
5. **No clipping**: the stretch maps the percentiles slightly inside [0, 1] and a soft knee compresses
   the few pixels beyond, so highlights and shadows keep their gradation (no hard clipping).

All arithmetic is float32, so 16-bit input keeps its precision.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, Field

from .stage import Image, StageRecord, skipped, timed

Kind = Literal["monochrome", "toned", "colour"]


class ToneParams(BaseModel):
    """Fade and colour-cast correction."""

    enabled: bool = Field(True, description="correct fade and colour casts")
    low_percentile: float = Field(0.5, ge=0, le=20, description="dark reference point, percent of pixels")
    high_percentile: float = Field(
        99.5, ge=80, le=100, description="bright reference point, percent of pixels"
    )
    target_black: float = Field(0.02, ge=0, le=0.2, description="output level of the dark reference point")
    target_white: float = Field(
        0.97, ge=0.7, le=1.0, description="output level of the bright reference point"
    )
    strength: float = Field(1.0, ge=0, le=1, description="0 = leave as is, 1 = full correction")
    white_balance: bool = Field(True, description="remove colour casts of colour prints (per-channel levels)")
    max_gain: float = Field(4.0, gt=1, description="largest contrast stretch of a channel")
    max_cast_gain: float = Field(
        1.5, ge=1, description="largest ratio between the gains of two channels (limits cast removal)"
    )
    keep_monochrome: bool = Field(
        True, description="detect monochrome and toned (sepia) prints and keep them so"
    )
    mono_residual: float = Field(
        6.0,
        gt=0,
        description="Lab chroma spread (p90) around the toning curve below which a print is single-hue",
    )
    toned_hues: list[tuple[float, float]] = Field(
        default_factory=lambda: [(20.0, 92.0), (180.0, 300.0)],
        description="Lab hue ranges (degrees) of real toning: sepia/brown and cyanotype/blue; a single-hue "
        "print of another hue (e.g. green-yellow) is a colour print with a cast",
    )
    mono_chroma: float = Field(
        4.0, gt=0, description="mean Lab chroma below which a single-hue print is grey"
    )
    force_kind: Literal["auto", "monochrome", "toned", "colour"] = Field(
        "auto", description="override the detection (auto: detect)"
    )


def _sample(image: Image, n: int = 256) -> np.ndarray:
    h, w = image.shape[:2]
    step = max(1, int(np.sqrt(h * w / (n * n))))
    return np.ascontiguousarray(image[::step, ::step], dtype=np.float32)


def classify(image: Image, params: ToneParams) -> tuple[Kind, dict[str, float]]:
    """Monochrome, toned (sepia...) or colour, with the measurements that decided it."""
    small = _sample(image)
    lab = cv2.cvtColor(np.clip(small, 0, 1), cv2.COLOR_RGB2Lab).reshape(-1, 3)
    lum, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    keep = (lum > 8) & (lum < 95)
    if keep.sum() < 16:
        keep = np.ones_like(lum, dtype=bool)
    lum, a, b = lum[keep], a[keep], b[keep]
    design = np.stack([np.ones_like(lum), lum, lum * lum], axis=1)
    coef_a, *_ = np.linalg.lstsq(design, a, rcond=None)
    coef_b, *_ = np.linalg.lstsq(design, b, rcond=None)
    res = np.hypot(a - design @ coef_a, b - design @ coef_b)
    residual = float(np.percentile(res, 90))
    chroma = float(np.mean(np.hypot(a, b)))
    hue = float(np.degrees(np.arctan2(b.mean(), a.mean())) % 360.0)
    stats = {"chroma_residual_p90": round(residual, 3), "mean_chroma": round(chroma, 3), "hue": round(hue, 1)}
    if params.force_kind != "auto":
        return params.force_kind, stats
    if not params.keep_monochrome or residual > params.mono_residual:
        return "colour", stats
    if chroma < params.mono_chroma:
        return "monochrome", stats
    if any(lo <= hue <= hi for lo, hi in params.toned_hues):
        return "toned", stats
    return "colour", stats


def _soft_levels(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Map lo->t0, hi->t1 linearly; beyond, compress softly into [0, t0] and [t1, 1] (never hard-clip)."""
    y = ((x - lo) * ((t1 - t0) / np.maximum(hi - lo, 1e-6)) + t0).astype(np.float32)
    top = 1.0 - t1
    if top > 1e-6:
        over = y > t1
        if over.any():
            y[over] = t1 + top * (1.0 - np.exp(-(y[over] - t1) / top))
    if t0 > 1e-6:
        under = y < t0
        if under.any():
            y[under] = t0 * np.exp((y[under] - t0) / t0)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def correct_tone(image: Image, params: ToneParams) -> tuple[Image, StageRecord]:
    if not params.enabled:
        return image, skipped("tone", "disabled in config", params)
    record = StageRecord(name="tone", parameters=params.model_dump())
    with timed(record):
        img = np.asarray(image, dtype=np.float32)
        if img.size == 0 or min(img.shape[:2]) < 2:
            record.skipped = "image too small to measure"
            return img, record
        kind, stats = classify(img, params)
        small = _sample(img).reshape(-1, 3)
        t0, t1 = params.target_black, params.target_white
        if kind == "colour":
            lo = np.percentile(small, params.low_percentile, axis=0).astype(np.float32)
            hi = np.percentile(small, params.high_percentile, axis=0).astype(np.float32)
            if not params.white_balance:
                lo, hi = np.full(3, lo.min(), np.float32), np.full(3, hi.max(), np.float32)
            span = np.maximum(hi - lo, (t1 - t0) / params.max_gain)
            # limit how differently the channels are stretched (a red barn is not a cast)
            gain = (t1 - t0) / span
            gmin = gain.min()
            gain = np.minimum(gain, gmin * params.max_cast_gain)
            span = (t1 - t0) / gain
            mid = (lo + hi) / 2
            lo_c = (mid - span / 2).astype(np.float32)
            hi_c = (mid + span / 2).astype(np.float32)
            out = _soft_levels(img, lo_c, hi_c, t0, t1)
            result = {
                "black_point": lo_c.round(4).tolist(),
                "white_point": hi_c.round(4).tolist(),
                "gain": gain.round(4).tolist(),
            }
        else:
            # one curve on the luminance (the channel mean); float32 end to end, no colour-space LUTs
            y = img.mean(axis=2)
            ys = _sample(img).mean(axis=2).ravel()
            lo = np.float32(np.percentile(ys, params.low_percentile))
            hi = np.float32(np.percentile(ys, params.high_percentile))
            hi = np.float32(max(hi, lo + (t1 - t0) / params.max_gain))
            new_y = _soft_levels(y, lo, hi, t0, t1)
            if kind == "monochrome":
                out = np.repeat(new_y[:, :, None], 3, axis=2)
            else:
                # keep the toning: each pixel's offset from grey, scaled with its lightness change
                g = np.clip(new_y / np.maximum(y, 1e-4), 0.5, 1.5)[:, :, None]
                out = np.clip(new_y[:, :, None] + (img - y[:, :, None]) * g, 0.0, 1.0)
            out = out.astype(np.float32)
            result = {"black_point_luma": round(float(lo), 4), "white_point_luma": round(float(hi), 4)}
        if params.strength < 1.0:
            out = (img + params.strength * (out - img)).astype(np.float32)
        before = small.mean(axis=0)
        after = _sample(out).reshape(-1, 3).mean(axis=0)
        record.result = {
            "kind": kind,
            **stats,
            **result,
            "mean_rgb_before": before.round(4).tolist(),
            "mean_rgb_after": after.round(4).tolist(),
            "clipped_fraction": round(float(np.mean((out >= 0.999) | (out <= 0.001))), 5),
        }
    return out, record
