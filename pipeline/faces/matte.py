"""The face's soft alpha matte: a coarse mask from the landmarks refined against the photo.

Following the Mask2Alpha idea (a coarse mask refined with the image, coarse to fine) without a network:

1. Coarse mask: in the aligned crop the face sits at known template positions, so the face region is a
   fixed ellipse (brows to chin, ear to ear) in crop coordinates, with a soft band of width ``feather``.
2. Trimap: well inside the ellipse is face (1), well outside is background (0), the band is unknown.
3. Refinement: a guided filter (He et al., ECCV 2010; built from box filters, since ``cv2.ximgproc`` is
   not in opencv-python-headless) with the crop's own luminance as the guide pulls the unknown band's
   alpha onto the photo's edges (jaw line, hair line) so the seam follows an edge where there is one.
   It runs at half resolution then at full (coarse to fine), and the trimap's sure regions are kept.
4. A last small blur keeps the matte smooth (no step for the paste to show), and the matte is zero where
   the crop is padding outside the photo.
"""

from __future__ import annotations

import cv2
import numpy as np

from .align import face_ellipse
from .params import MatteParams


def box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT_101)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey-guide guided filter (He, Sun, Tang): edge-preserving smoothing of ``src`` along ``guide``."""
    i = guide.astype(np.float32)
    p = src.astype(np.float32)
    mean_i, mean_p = box(i, radius), box(p, radius)
    cov_ip = box(i * p, radius) - mean_i * mean_p
    var_i = box(i * i, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a, radius) * i + box(b, radius)


def ellipse_radius_crop(size: int) -> np.ndarray:
    """Normalised face-ellipse radius of every crop pixel (1 on the ellipse)."""
    cx, cy, ax, ay = face_ellipse(size)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.sqrt(((xs + 0.5 - cx) / ax) ** 2 + ((ys + 0.5 - cy) / ay) ** 2)


def coarse_mask(size: int, feather: float) -> np.ndarray:
    """Smooth-step face mask: 1 inside the ellipse, 0 outside, over a band of ``feather`` * crop."""
    _, _, ax, ay = face_ellipse(size)
    r = ellipse_radius_crop(size)
    band = feather * size / min(ax, ay)  # band width in radius units
    t = np.clip((1.0 + band / 2 - r) / band, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def face_matte(
    crop: np.ndarray, valid_mask: np.ndarray | None = None, params: MatteParams | None = None
) -> np.ndarray:
    """(S, S) float32 alpha in [0, 1] of the face in an aligned crop."""
    p = params or MatteParams()
    size = crop.shape[0]
    k = size / 512.0
    coarse = coarse_mask(size, p.feather)
    guide = cv2.cvtColor(np.clip(crop, 0, 1).astype(np.float32), cv2.COLOR_RGB2GRAY)
    radius = max(1, round(p.guided_radius * k))
    # Coarse to fine: half resolution with a wider window, then full resolution.
    half = size // 2
    g2 = cv2.resize(guide, (half, half), interpolation=cv2.INTER_AREA)
    c2 = cv2.resize(coarse, (half, half), interpolation=cv2.INTER_AREA)
    a2 = guided_filter(g2, c2, radius, p.guided_eps)
    alpha = cv2.resize(a2, (size, size), interpolation=cv2.INTER_LINEAR)
    alpha = guided_filter(guide, 0.5 * alpha + 0.5 * coarse, max(1, radius // 2), p.guided_eps)
    # Trimap: sure face / sure background stay as the coarse mask says.
    sure_fg = coarse >= 0.999
    sure_bg = coarse <= 0.001
    alpha = np.where(sure_fg, 1.0, np.where(sure_bg, 0.0, np.clip(alpha, 0.0, 1.0)))
    # Inside the band, never stray far from the coarse mask (the filter must not swallow a neighbour).
    alpha = np.clip(alpha, coarse - 0.35, coarse + 0.35)
    alpha = cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), max(0.8, 2.0 * k))
    if valid_mask is not None:
        alpha = alpha * valid_mask
    return np.clip(alpha, 0.0, 1.0).astype(np.float32)
