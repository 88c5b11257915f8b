"""Dust, scratches and cracks: find them, record the mask, and inpaint them.

Detection (on a copy whose short side is at most ``detect_size`` px; small photos at full size):

* **Ridges and specks**: a bright defect is what a grey-level *opening* with a disc wider than the defect
  removes (white top-hat); a dark one is what a *closing* removes (black top-hat). Step edges of the
  picture survive both, so they do not respond; only thin/small structures do.
* **Noise-relative thresholds**: each response is divided by the local activity of the picture (a
  blurred absolute Laplacian), so film grain and halftone screens, which are everywhere and regular,
  stay below the threshold, while a speck on a smooth sky or face stands out. Hysteresis (``z_high``
  seeds grown into ``z_low``) follows a scratch whose contrast varies along its length.
* **Shape**: connected regions are kept if they are *dust* (small: extent <= ``max_dust`` px) or
  *scratches/cracks* (thin: area / extent <= ``max_width`` px and extent >= ``min_scratch_length``).
  Blobs (eyes, buttons, highlights bigger than a speck) are rejected.
* **Protected regions** (``protect``: faces, given by the caller): the thresholds are multiplied by
  ``protect_factor`` and only thin defects (<= ``protect_max_width``) are kept there; the face stages
  restore faces again later, so here the rule is to do no harm.

Repair: the mask is upscaled to full resolution, grown by ``dilate`` px (anti-aliased edges and halos)
and filled per channel (16-bit, float32 outside the mask) with OpenCV's Telea inpainting
(fast marching), on crops around the
damage only (on a copy of ``inpaint_size`` px short side for large scans, upsampled into the mask).
To avoid smooth "plastic" lines in grainy photos, grain of the measured local strength is
added back inside the filled area (seeded, so results are reproducible).

The mask goes into ``record.artifacts["defect_mask"]`` (H, W) float32 and its coverage into the result.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, Field

from .stage import Image, StageRecord, skipped, timed


class DefectParams(BaseModel):
    """Finding and inpainting dust, scratches and cracks."""

    enabled: bool = Field(True, description="find and repair dust, scratches and cracks")
    detect_size: int = Field(
        1024, ge=128, le=8000, description="short side (px) of the copy used for detection"
    )
    kernel: int = Field(
        7, ge=3, le=31, description="width (px, detection scale) of the widest defect looked for"
    )
    z_high: float = Field(4.5, gt=0, description="contrast / local activity that starts a defect")
    z_low: float = Field(2.5, gt=0, description="contrast / local activity a defect can grow into")
    min_contrast: float = Field(0.08, ge=0, le=1, description="least absolute contrast of a defect (0-1)")
    max_dust: int = Field(9, ge=1, description="largest extent (px, detection scale) of a dust speck")
    min_scratch_length: int = Field(15, ge=3, description="shortest scratch (px, detection scale)")
    max_width: float = Field(3.5, gt=0, description="largest mean width (px, detection scale) of a scratch")
    dark_defects: bool = Field(True, description="also look for dark defects (dust, hairs, dark scratches)")
    protect_factor: float = Field(
        1.8, ge=1, description="threshold multiplier inside protected (face) regions"
    )
    protect_max_width: float = Field(2.0, gt=0, description="widest defect repaired inside protected regions")
    dilate: int = Field(1, ge=0, le=10, description="grow the mask by this many px (detection scale)")
    inpaint_size: int = Field(
        1024,
        ge=64,
        le=20000,
        description="short side (px) above which the fill is computed on a smaller copy",
    )
    inpaint_radius: int = Field(4, ge=1, le=20, description="Telea inpainting neighbourhood (px, full scale)")
    restore_grain: bool = Field(True, description="add grain of the local strength back into filled areas")
    max_coverage: float = Field(
        0.12, gt=0, le=1, description="if more than this fraction is flagged, keep only the strongest part"
    )
    seed: int = Field(0, description="seed of the grain added back")


def _luma(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.mean(axis=2), dtype=np.float32)


def detect_defects(
    image: Image, params: DefectParams, protect: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """The defect mask (H, W) float32 in {0, 1} at the image's resolution, and detection statistics."""
    h, w = image.shape[:2]
    scale = min(1.0, params.detect_size / max(1, min(h, w)))
    if scale < 1.0:
        small = cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    else:
        small = np.asarray(image, np.float32)
    y = _luma(small)
    k = params.kernel | 1
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    bright = y - cv2.morphologyEx(y, cv2.MORPH_OPEN, se)
    dark = cv2.morphologyEx(y, cv2.MORPH_CLOSE, se) - y if params.dark_defects else np.zeros_like(y)
    # local activity of the picture: the typical top-hat response around each pixel (a wide median, which
    # a thin scratch or a speck does not move), so grain, fur and halftone raise their own threshold
    resp = np.maximum(bright, dark)
    med = cv2.medianBlur(np.clip(resp * 1020.0, 0, 255).astype(np.uint8), 15).astype(np.float32) / 1020.0
    activity = cv2.GaussianBlur(med, (0, 0), 4.0) + 0.01
    z_b, z_d = bright / activity, dark / activity
    thr_hi = np.full(y.shape, params.z_high, np.float32)
    thr_lo = np.full(y.shape, params.z_low, np.float32)
    prot_small = None
    if protect is not None and protect.size:
        prot_small = cv2.resize(
            protect.astype(np.float32), (y.shape[1], y.shape[0]), interpolation=cv2.INTER_LINEAR
        )
        f = 1.0 + (params.protect_factor - 1.0) * np.clip(prot_small, 0, 1)
        thr_hi, thr_lo = thr_hi * f, thr_lo * f
    cand = np.zeros(y.shape, np.uint8)
    for z, r in ((z_b, bright), (z_d, dark)):
        seeds = (z > thr_hi) & (r > params.min_contrast)
        grow = (z > thr_lo) & (r > params.min_contrast * 0.5)
        n, lab = cv2.connectedComponents(grow.astype(np.uint8), connectivity=8)
        if n <= 1:
            continue
        keep = np.zeros(n, bool)
        keep[np.unique(lab[seeds])] = True
        keep[0] = False
        cand |= keep[lab].astype(np.uint8)
    kinds = {"dust": 0, "scratch": 0, "rejected": 0}
    # dust: whole candidate regions that are small
    n, lab, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    dust_ok = extent <= params.max_dust
    dust_ok[0] = False
    kinds["dust"] = int(dust_ok.sum())
    mask = dust_ok[lab]
    # scratches and cracks: the thin part of the remaining regions (what an opening by a disc wider than
    # max_width removes), kept where it forms long connected lines
    rest = (cand.astype(bool) & ~mask).astype(np.uint8)
    wd = int(np.ceil(params.max_width)) + 2
    wide = cv2.morphologyEx(rest, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (wd, wd)))
    thin = rest & (1 - wide)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(thin, connectivity=8)
    ext = np.hypot(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    line_ok = ext >= params.min_scratch_length
    line_ok[0] = False
    kinds["scratch"] = int(line_ok.sum())
    kinds["rejected"] = int(n - 1 - line_ok.sum())
    mask |= line_ok[lab]
    if prot_small is not None:
        # inside faces, only thin defects: erode-test (wide structures survive an opening by a small disc)
        wide = cv2.morphologyEx(
            mask.astype(np.uint8),
            cv2.MORPH_OPEN,
            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(params.protect_max_width) + 2,) * 2),
        ).astype(bool)
        mask &= ~(wide & (prot_small > 0.5))
    strength = np.maximum(z_b, z_d)
    if mask.mean() > params.max_coverage:
        cut = np.quantile(strength[mask], 1 - params.max_coverage / max(mask.mean(), 1e-9))
        mask &= strength >= cut
    m8 = mask.astype(np.uint8)
    if params.dilate:
        m8 = cv2.dilate(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * params.dilate + 1,) * 2))
    if scale < 1.0:
        full = cv2.resize(m8.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.2
    else:
        full = m8.astype(bool)
    stats_out: dict[str, float] = {
        "detect_scale": round(scale, 4),
        "dust_regions": kinds["dust"],
        "scratch_regions": kinds["scratch"],
        "rejected_regions": kinds["rejected"],
    }
    return full.astype(np.float32), stats_out


def _inpaint(image: np.ndarray, mask: np.ndarray, radius: int) -> np.ndarray:
    """Telea inpainting per channel in float32, on padded crops around each cluster of damage."""
    out = image.copy()
    m8 = (mask > 0).astype(np.uint8)
    pad = radius * 3 + 2
    # group nearby damage into crops: dilate generously and take connected boxes
    group = cv2.dilate(m8, np.ones((pad, pad), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(group, connectivity=8)
    h, w = mask.shape
    for i in range(1, n):
        x, y, bw, bh = stats[i, :4]
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(w, x + bw + pad), min(h, y + bh + pad)
        mm = m8[y0:y1, x0:x1]
        if not mm.any():
            continue
        sel = mm.astype(bool)
        for c in range(3):
            # OpenCV's float32 Telea is broken (it oscillates); 16-bit is exact enough for filled pixels and
            # every pixel outside the mask keeps its float32 value
            ch = np.clip(image[y0:y1, x0:x1, c] * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
            filled = cv2.inpaint(ch, mm, radius, cv2.INPAINT_TELEA).astype(np.float32) / 65535.0
            out[y0:y1, x0:x1, c][sel] = filled[sel]
    return out


def repair_defects(
    image: Image, params: DefectParams, protect: np.ndarray | None = None
) -> tuple[Image, StageRecord]:
    """Detect and inpaint dust, scratches and cracks; ``protect`` (H, W) in [0, 1] marks faces."""
    if not params.enabled:
        return image, skipped("defects", "disabled in config", params)
    record = StageRecord(name="defects", parameters=params.model_dump())
    with timed(record):
        img = np.asarray(image, dtype=np.float32)
        h, w = img.shape[:2]
        if min(h, w) < 8:
            record.skipped = "image too small to find defects"
            record.artifacts["defect_mask"] = np.zeros((h, w), np.float32)
            record.result = {"coverage_percent": 0.0}
            return img, record
        if protect is not None and protect.shape[:2] != (h, w):
            protect = cv2.resize(protect.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        mask, stats = detect_defects(img, params, protect)
        out = img
        if mask.any():
            f = min(1.0, params.inpaint_size / min(h, w))
            if f < 1.0:
                # fill on a copy at ``inpaint_size`` and take only the masked pixels from it, upsampled:
                # the filled area holds no detail of its own anyway (grain is added back below)
                sw, sh = max(1, round(w * f)), max(1, round(h * f))
                small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
                msmall = (cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_AREA) > 0).astype(np.float32)
                filled = cv2.resize(
                    _inpaint(small, msmall, max(1, round(params.inpaint_radius * f))),
                    (w, h),
                    interpolation=cv2.INTER_CUBIC,
                )
                sel = mask > 0
                out = img.copy()
                out[sel] = filled[sel]
            else:
                out = _inpaint(img, mask, params.inpaint_radius)
            if params.restore_grain:
                # grain strength around the damage, measured on a copy of at most ~1 Mpx
                f = min(1.0, 1024 / max(h, w))
                sm = cv2.resize(
                    img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
                )
                msk = cv2.resize(mask, (sm.shape[1], sm.shape[0]), interpolation=cv2.INTER_LINEAR) > 0
                y = _luma(sm)
                hp = y - cv2.GaussianBlur(y, (0, 0), 1.0)
                valid = (~msk).astype(np.float32)
                var = cv2.GaussianBlur(hp * hp * valid, (0, 0), 8.0) / (
                    cv2.GaussianBlur(valid, (0, 0), 8.0) + 1e-6
                )
                sigma = cv2.resize(np.sqrt(var), (w, h), interpolation=cv2.INTER_LINEAR)
                sel = mask > 0
                rng = np.random.default_rng(params.seed)
                noise = rng.standard_normal(int(sel.sum())).astype(np.float32) * np.minimum(sigma[sel], 0.05)
                out[sel] += noise[:, None]
            out = np.clip(out, 0.0, 1.0).astype(np.float32)
        record.artifacts["defect_mask"] = mask
        record.result = {"coverage_percent": round(float(mask.mean() * 100), 4), **stats}
    return out, record
