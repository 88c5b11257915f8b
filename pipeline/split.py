"""Find the prints on a flatbed scan, cut each one out and straighten it.

How it works (on a copy downscaled to ``work_size`` px, so a 3000x2000 scan costs a few tens of ms):

1. **Is there a scanner background at all?** The outer ring of the scan is sampled; the background is
   its median colour. If less than ``border_fraction`` of the ring is that colour (within a tolerance
   set by the ring's own noise), the photo fills the scan: one cut of the whole image, pixels unchanged.
2. **Foreground** = pixels that differ from the background colour (after a small blur that removes
   sensor noise and dust), closed and hole-filled; connected regions smaller than ``min_print_area`` of
   the scan (dust, hairs, lint on the glass) are ignored.
3. **Each region**: if it fills its minimum-area rectangle (``rectangularity`` >= threshold), it is a
   rectangular print: the rectangle gives the corners and the skew. Skews below ``min_angle`` degrees are
   treated as straight (no resampling from noise); skews are refined with the print's edges at full
   resolution. Otherwise (round/oval vignette, torn corners, irregular shape) the print is cut by its
   axis-aligned bounding box plus a margin, never rotated, so nothing of it is cut off. A single
   non-rectangular region is kept as the whole scan (it is more likely dark photo content than a print).
4. Straight prints are sliced (original pixels); skewed ones are resampled once, bicubic, in float32.

Angles: ``PrintCut.angle`` is the rotation (degrees, counter-clockwise positive as shown on screen, the
OpenCV ``getRotationMatrix2D`` convention) that was applied to straighten the print; a print lying 5°
counter-clockwise on the glass gets ``angle = -5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import BaseModel, Field

from .stage import Image, StageRecord, skipped, timed


class SplitParams(BaseModel):
    """Finding and straightening the prints of a flatbed scan."""

    enabled: bool = Field(True, description="split scans into prints and deskew them")
    work_size: int = Field(800, ge=128, le=4000, description="long side (px) of the copy used for detection")
    border_fraction: float = Field(
        0.6, ge=0.1, le=1.0, description="share of the scan's outer ring that must be background to split"
    )
    background_tolerance: float = Field(
        0.08, gt=0, le=0.5, description="least colour distance (0-1) from the background that counts as print"
    )
    min_print_area: float = Field(
        0.02, gt=0, lt=1, description="smallest print, as a fraction of the scan area (smaller: dust, lint)"
    )
    rectangularity: float = Field(
        0.86, ge=0.5, le=1.0, description="region area / its min-area rectangle above which it is a rectangle"
    )
    min_angle: float = Field(0.3, ge=0, le=5, description="skews below this (degrees) are left unrotated")
    max_angle: float = Field(45.0, ge=0, le=45, description="skews above this (degrees) are left unrotated")
    margin: float = Field(
        0.0, ge=-0.02, le=0.05, description="grow (+) or shrink (-) each cut by this fraction of its size"
    )
    irregular_margin: float = Field(
        0.01, ge=0, le=0.1, description="extra border kept around non-rectangular prints (fraction of size)"
    )


@dataclass
class PrintCut:
    image: Image
    """the straightened print (H, W, 3) float32."""
    box: list[int]
    """[x, y, w, h] axis-aligned box of the print in the input scan."""
    angle: float
    """degrees (CCW positive) the crop was rotated by to straighten it; 0 when it was only sliced."""
    corners: list[tuple[float, float]]
    """the print's 4 corners in the input scan: top-left, top-right, bottom-right, bottom-left."""
    shape: str = "rectangle"
    """"rectangle", "irregular" (vignette, torn) or "whole" (the scan itself)."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "box": self.box,
            "angle": round(self.angle, 3),
            "corners": [[round(x, 1), round(y, 1)] for x, y in self.corners],
            "shape": self.shape,
        }


def _whole(image: Image, note: str) -> PrintCut:
    h, w = image.shape[:2]
    return PrintCut(
        image=image,
        box=[0, 0, w, h],
        angle=0.0,
        corners=[(0.0, 0.0), (float(w), 0.0), (float(w), float(h)), (0.0, float(h))],
        shape="whole",
        notes=[note],
    )


def split_prints(image: Image, params: SplitParams) -> tuple[list[PrintCut], StageRecord]:
    """Find, cut out and deskew every print on a scan (see the module docstring)."""
    if not params.enabled:
        return [_whole(image, "splitting disabled")], skipped("split", "disabled in config", params)
    record = StageRecord(name="split", parameters=params.model_dump())
    with timed(record):
        cuts, info = _split(image, params)
        record.result = {"prints": len(cuts), **info, "cuts": [c.to_json() for c in cuts]}
    return cuts, record


def _split(image: Image, params: SplitParams) -> tuple[list[PrintCut], dict[str, object]]:
    h, w = image.shape[:2]
    if min(h, w) < 32:
        return [_whole(image, "too small to hold several prints")], {
            "background": None,
            "reason": "tiny image",
        }
    scale = min(1.0, params.work_size / max(h, w))
    small = cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), 1.5)
    sh, sw = small.shape[:2]
    ring_w = max(2, round(0.012 * max(sh, sw)))
    ring = np.concatenate(
        [
            small[:ring_w].reshape(-1, 3),
            small[-ring_w:].reshape(-1, 3),
            small[:, :ring_w].reshape(-1, 3),
            small[:, -ring_w:].reshape(-1, 3),
        ]
    )
    bg = np.median(ring, axis=0)
    ring_dist = np.linalg.norm(ring - bg, axis=1)
    mad = float(np.median(ring_dist))
    tol = float(np.clip(6.0 * mad, params.background_tolerance, 2 * params.background_tolerance))
    bg_luma = float(bg.mean())
    kind = "white" if bg_luma > 0.6 else "dark" if bg_luma < 0.25 else "grey"
    info: dict[str, object] = {"background": kind, "background_rgb": [round(float(v), 4) for v in bg]}
    ring_bg = float(np.mean(ring_dist < tol))
    info["border_background_share"] = round(ring_bg, 3)
    if ring_bg < params.border_fraction or kind == "grey" or mad > 0.04:
        info["reason"] = "no scanner border: the photo fills the scan"
        return [_whole(image, "no scanner border")], info

    dist = np.linalg.norm(small - bg, axis=2)
    fg = (dist > tol).astype(np.uint8)
    k = max(3, round(0.006 * max(sh, sw)) | 1)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    min_area = params.min_print_area * sh * sw
    regions = [c for c in contours if cv2.contourArea(c) >= min_area]
    if not regions:
        info["reason"] = "no print found on the scanner background (blank page or empty lid)"
        return [_whole(image, "no print found")], info

    # Reading order: top to bottom in rows, then left to right.
    def order_key(c: np.ndarray) -> tuple[int, float]:
        x, y, cw, ch = cv2.boundingRect(c)
        return (int((y + ch / 2) / (sh / 3)), x + cw / 2)

    regions.sort(key=order_key)
    hull_fill = [
        cv2.contourArea(cv2.convexHull(c)) / max(float(np.prod(cv2.minAreaRect(c)[1])), 1e-6) for c in regions
    ]
    if max(hull_fill) < params.rectangularity:
        info["reason"] = "no rectangular region (vignette, torn print or dark photo content): kept whole"
        info["rectangularity"] = [round(float(f), 3) for f in hull_fill]
        return [_whole(image, "no rectangular print found")], info
    cuts: list[PrintCut] = []
    fills: list[float] = []
    for c in regions:
        area = cv2.contourArea(cv2.convexHull(c))
        rect = cv2.minAreaRect(c)
        (rw, rh) = rect[1]
        rect_fill = area / max(rw * rh, 1e-6)
        if rect_fill >= params.rectangularity:
            cut = _rectangular_cut(image, c.astype(np.float64) / scale, rect, scale, params)
        else:
            cut = _irregular_cut(image, c, scale, params)
        cut.notes.append(f"rectangularity {rect_fill:.3f}")
        fills.append(round(float(rect_fill), 3))
        cuts.append(cut)
    info["rectangularity"] = fills
    info["rectangularity"] = [
        round(float(cv2.contourArea(c) / max(np.prod(cv2.minAreaRect(c)[1]), 1)), 3) for c in regions
    ]
    return cuts, info


def _ordered_corners(pts: np.ndarray) -> np.ndarray:
    """Order 4 points as top-left, top-right, bottom-right, bottom-left."""
    c = pts.mean(axis=0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    pts = pts[np.argsort(ang)]  # clockwise on screen starting from the upper-left quadrant-ish
    # rotate so the first is the one with the smallest x + y
    start = int(np.argmin(pts.sum(axis=1)))
    return np.roll(pts, -start, axis=0)


def _skew_from_corners(corners: np.ndarray) -> tuple[float, float, float]:
    """Skew in degrees (the angle of the top edge in image coordinates, y down), width and height."""
    tl, tr, _br, bl = corners
    top = tr - tl
    left = bl - tl
    theta = math.degrees(math.atan2(top[1], top[0]))
    return theta, float(np.hypot(*top)), float(np.hypot(*left))


def _edge_points(gray: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Sub-pixel-ish positions of the strongest step across the segment p->q (searched +-8 px)."""
    h, w = gray.shape
    length = float(np.hypot(*(q - p)))
    if length < 40:
        return np.zeros((0, 2))
    n = int(min(160, length // 4))
    ts = np.linspace(0.12, 0.88, n)
    d = (q - p) / length
    normal = np.array([-d[1], d[0]])
    offs = np.arange(-8, 9, dtype=np.float64)
    base = p[None, :] + (q - p)[None, :] * ts[:, None]
    xs = base[:, :1] + normal[0] * offs[None, :]
    ys = base[:, 1:] + normal[1] * offs[None, :]
    ok = (xs.min(1) >= 0) & (ys.min(1) >= 0) & (xs.max(1) < w - 1) & (ys.max(1) < h - 1)
    if ok.sum() < 8:
        return np.zeros((0, 2))
    prof = cv2.remap(gray, xs[ok].astype(np.float32), ys[ok].astype(np.float32), cv2.INTER_LINEAR)
    g = np.abs(np.diff(prof, axis=1))
    i = np.argmax(g, axis=1)
    strong = g[np.arange(len(i)), i] >= 0.04
    o = offs[i] + 0.5
    pts = base[ok] + normal[None, :] * o[:, None]
    return pts[strong]


def _refine(image: Image, corners: np.ndarray, theta: float) -> tuple[float, np.ndarray]:
    """Refine the skew and the sides from the print's edges at full resolution.

    Returns the refined angle and the refined corners (TL, TR, BR, BL); sides whose edge cannot be seen
    (a print edge of the same colour as the background) keep the coarse position.
    """
    gray = np.ascontiguousarray(image.mean(axis=2), dtype=np.float32)
    sides = ((0, 1), (3, 2), (0, 3), (1, 2))  # top, bottom, left, right
    pts = [_edge_points(gray, corners[a], corners[b]) for a, b in sides]
    estimates: list[tuple[float, float]] = []
    for (a, b), arr in zip(sides, pts, strict=True):
        if len(arr) < 8:
            continue
        vx, vy, _, _ = cv2.fitLine(arr.astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        ang = math.degrees(math.atan2(vy, vx))
        if (a, b) not in ((0, 1), (3, 2)):
            ang -= 90.0
        ang = (ang + 90.0) % 180.0 - 90.0
        if abs(ang - theta) < 2.0:
            estimates.append((ang, float(len(arr))))
    if estimates:
        angs = np.array([e[0] for e in estimates])
        wts = np.array([e[1] for e in estimates])
        theta = float(np.sum(angs * wts) / np.sum(wts))
    rad = math.radians(theta)
    d = np.array([math.cos(rad), math.sin(rad)])
    nrm = np.array([-d[1], d[0]])
    centre = corners.mean(axis=0)
    rel = corners - centre
    top, bottom = float((rel @ nrm)[[0, 1]].mean()), float((rel @ nrm)[[2, 3]].mean())
    left, right = float((rel @ d)[[0, 3]].mean()), float((rel @ d)[[1, 2]].mean())
    pos = [top, bottom, left, right]
    for k, arr in enumerate(pts):
        if len(arr) >= 8:
            proj = (arr - centre) @ (nrm if k < 2 else d)
            cand = float(np.median(proj))
            if abs(cand - pos[k]) < 10:
                pos[k] = cand
    top, bottom, left, right = pos
    refined = np.array(
        [
            centre + left * d + top * nrm,
            centre + right * d + top * nrm,
            centre + right * d + bottom * nrm,
            centre + left * d + bottom * nrm,
        ]
    )
    return theta, refined


def _rectangular_cut(
    image: Image, contour: np.ndarray, rect: tuple, scale: float, params: SplitParams
) -> PrintCut:
    h, w = image.shape[:2]
    box = cv2.boxPoints(rect).astype(np.float64) / scale
    corners = _ordered_corners(box)
    theta, pw, ph = _skew_from_corners(corners)
    if abs(theta) > 45:  # the "top" edge picked is really a side
        theta = theta - 90 * round(theta / 90)
    theta, corners = _refine(image, corners, theta)
    _, pw, ph = _skew_from_corners(corners)
    centre = corners.mean(axis=0)
    grow = 1.0 + 2 * params.margin
    if abs(theta) < params.min_angle or abs(theta) > params.max_angle:
        x0, y0 = np.floor(corners.min(axis=0) - params.margin * np.array([pw, ph])).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0) + params.margin * np.array([pw, ph])).astype(int)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        crop = image[y0:y1, x0:x1]
        quad = [
            (float(x0), float(y0)),
            (float(x1), float(y0)),
            (float(x1), float(y1)),
            (float(x0), float(y1)),
        ]
        return PrintCut(
            image=crop, box=[int(x0), int(y0), int(x1 - x0), int(y1 - y0)], angle=0.0, corners=quad
        )
    # rotate about the print centre by theta (CCW on screen for positive cv2 angles, which undoes a
    # print whose top edge slopes by theta in image coordinates)
    # the rotation's output size follows the rectangle's own side lengths
    rad = math.radians(theta)
    # side lengths measured along/perpendicular to the refined angle
    d = np.array([math.cos(rad), math.sin(rad)])
    nrm = np.array([-d[1], d[0]])
    rel = corners - centre
    out_w = float(np.ptp(rel @ d)) * grow
    out_h = float(np.ptp(rel @ nrm)) * grow
    ow, oh = max(1, round(out_w)), max(1, round(out_h))
    # crop a padded bounding region first so the warp touches only the print's pixels
    bx0, by0 = np.floor(corners.min(axis=0)).astype(int) - 4
    bx1, by1 = np.ceil(corners.max(axis=0)).astype(int) + 4
    bx0, by0, bx1, by1 = max(0, bx0), max(0, by0), min(w, bx1), min(h, by1)
    region = image[by0:by1, bx0:bx1]
    m = cv2.getRotationMatrix2D((float(centre[0] - bx0), float(centre[1] - by0)), theta, 1.0)
    m[0, 2] += ow / 2 - (centre[0] - bx0)
    m[1, 2] += oh / 2 - (centre[1] - by0)
    out = cv2.warpAffine(
        np.ascontiguousarray(region, dtype=np.float32),
        m,
        (ow, oh),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )
    out = np.clip(out, 0.0, 1.0)
    # the corners of the cut, back in scan coordinates
    half = np.array([[-ow / 2, -oh / 2], [ow / 2, -oh / 2], [ow / 2, oh / 2], [-ow / 2, oh / 2]])
    quad_pts = centre + half[:, :1] * d + half[:, 1:] * nrm
    x0, y0 = np.floor(quad_pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad_pts.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return PrintCut(
        image=out,
        box=[int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
        angle=float(theta),
        corners=[(float(x), float(y)) for x, y in quad_pts],
    )


def _irregular_cut(image: Image, contour: np.ndarray, scale: float, params: SplitParams) -> PrintCut:
    h, w = image.shape[:2]
    x, y, cw, ch = cv2.boundingRect(contour)
    x0, y0, x1, y1 = x / scale, y / scale, (x + cw) / scale, (y + ch) / scale
    mx = params.irregular_margin * (x1 - x0) + 2 / scale
    my = params.irregular_margin * (y1 - y0) + 2 / scale
    ix0, iy0 = max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my))
    ix1, iy1 = min(w, math.ceil(x1 + mx)), min(h, math.ceil(y1 + my))
    return PrintCut(
        image=image[iy0:iy1, ix0:ix1],
        box=[ix0, iy0, ix1 - ix0, iy1 - iy0],
        angle=0.0,
        corners=[
            (float(ix0), float(iy0)),
            (float(ix1), float(iy0)),
            (float(ix1), float(iy1)),
            (float(ix0), float(iy1)),
        ],
        shape="irregular",
    )
