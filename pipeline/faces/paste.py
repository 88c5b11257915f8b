"""Paste restored face crops back into the full-resolution photo.

Per face: the restored crop is colour-matched to the original crop (low frequencies from the original,
detail from the restoration; monochrome and sepia faces keep their tint), inverse-warped with the face's
inverse transform (low-pass first when the crop is larger than the face was), grain-matched (the photo's
grain added where the restoration is smoother) and blended through the face's soft matte. Where two
faces' regions meet, each matte is limited to the pixels nearer its own face (normalised face-ellipse
distance, with a fade before the border), so no face's pixels are put over another's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..stage import StageRecord, timed
from .align import ellipse_radius, footprint
from .params import FacesParams, PasteParams

if TYPE_CHECKING:
    from . import Face

MONOCHROME_CHROMA = 4.0
"""Lab chroma (a, b std + |mean|) under which a face counts as monochrome / sepia: it keeps its tint."""


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(rgb, 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab)


def _rgb(lab: np.ndarray) -> np.ndarray:
    return np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1)


def match_colour(restored: np.ndarray, original: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Restored crop with the original crop's low-frequency tone and colour (Lab), its own detail.

    An unmodified crop comes back unchanged. A monochrome or sepia original gives a restored face with
    the original's tint and no new colour.
    """
    size = restored.shape[0]
    sigma = size / 24.0
    lr, lo = _lab(restored), _lab(original)
    low_r = cv2.GaussianBlur(lr, (0, 0), sigma)
    low_o = cv2.GaussianBlur(lo, (0, 0), sigma)
    out = lr + (low_o - low_r)
    w = np.ones(lo.shape[:2], np.float32) if weight is None else weight.astype(np.float32)
    wsum = float(w.sum()) + 1e-6
    ab = lo[..., 1:]
    mean_ab = (ab * w[..., None]).sum((0, 1)) / wsum
    std_ab = np.sqrt((((ab - mean_ab) ** 2) * w[..., None]).sum((0, 1)) / wsum)
    if float(np.abs(mean_ab).max() + std_ab.max()) < MONOCHROME_CHROMA or _is_neutral(original):
        out[..., 1:] = lo[..., 1:]  # the original's own chroma: no new colour on a monochrome face
    # Applied as a difference so that an unmodified crop comes back bit-exact (Lab round trips are not).
    return np.clip(restored + (_rgb(out) - _rgb(lr)), 0.0, 1.0).astype(np.float32)


def _is_neutral(rgb: np.ndarray) -> bool:
    return float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max()) < 1.5 / 255.0


def noise_sigma(rgb: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Robust (MAD) standard deviation of the luminance's fine-scale noise."""
    grey = rgb.astype(np.float32).mean(axis=2)
    hp = grey - cv2.GaussianBlur(grey, (0, 0), 1.0)
    vals = hp[mask > 0.5] if mask is not None else hp.ravel()
    if vals.size < 16:
        return 0.0
    return float(1.4826 * np.median(np.abs(vals - np.median(vals))))


def _inverse_roi(face: Face, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    return footprint(face.aligned.inverse_matrix, face.aligned.size, shape)


def warp_to_photo(
    crop: np.ndarray,
    inverse_matrix: np.ndarray,
    roi: tuple[int, int, int, int],
    antialias: bool = True,
) -> np.ndarray:
    """The crop inverse-warped onto the photo ROI (x0, y0, x1, y1), zero outside the crop.

    Bicubic resampling; where the crop is more than twice the face's size in the photo it is low-pass
    filtered first so the restored detail does not alias. (Filtering only the difference from the
    original crop would give an exact round trip for small faces too, but lets the photo's finest
    detail, e.g. what is left of a scratch, through into the restored face.)
    """
    x0, y0, x1, y1 = roi
    m = np.array(inverse_matrix, np.float64)
    m[:, 2] -= [x0, y0]
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # photo px per crop px
    src = crop.astype(np.float32)
    if antialias and scale < 0.5:
        src = cv2.GaussianBlur(src, (0, 0), 0.4 * np.sqrt(1.0 / scale**2 - 1.0))
    interp = cv2.INTER_CUBIC if antialias else cv2.INTER_LINEAR
    return cv2.warpAffine(
        src, m, (x1 - x0, y1 - y0), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def owner_weight(
    face: Face, faces: Sequence[Face], roi: tuple[int, int, int, int], band: float
) -> np.ndarray:
    """1 where ``face`` owns the pixel, fading to 0 at the border with any other face's region."""
    x0, y0, x1, y1 = roi
    w, h = x1 - x0, y1 - y0
    own = ellipse_radius(face.aligned.matrix, face.aligned.size, x0, y0, w, h)
    nearest = np.full((h, w), np.inf, np.float32)
    for other in faces:
        if other is face or other.aligned is None:
            continue
        ox0, oy0, ox1, oy1 = _inverse_roi(other, (10**9, 10**9))
        if ox1 <= x0 or ox0 >= x1 or oy1 <= y0 or oy0 >= y1:
            continue
        r = ellipse_radius(other.aligned.matrix, other.aligned.size, x0, y0, w, h)
        nearest = np.minimum(nearest, r)
    return np.clip((nearest - own) / band, 0.0, 1.0).astype(np.float32)


def paste_faces(
    image: np.ndarray,
    faces: Sequence[Face],
    restored_crops: Mapping[int, np.ndarray],
    params: PasteParams | FacesParams | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, StageRecord]:
    """Blend every restored crop (keyed by face index) into the photo, each within its own region.

    Faces not in ``restored_crops`` stay as they are (and still keep the others out of their region).
    Returns the new image (a copy) and a record with, per face, the colour shift and grain applied; the
    record's ``artifacts['faces_matte']`` is the union of the mattes used, at the photo's size.
    """
    p = params.paste if isinstance(params, FacesParams) else (params or PasteParams())
    record = StageRecord(name="faces.paste", parameters=p.model_dump())
    with timed(record):
        out = np.array(image, dtype=np.float32, copy=True)
        matte_all = np.zeros(image.shape[:2], np.float32)
        by_index = {f.index: f for f in faces}
        per_face = []
        for idx in sorted(restored_crops):
            face = by_index.get(idx)
            crop = restored_crops[idx]
            if face is None or face.aligned is None or face.matte_crop is None:
                per_face.append(
                    {"index": idx, "pasted": False, "reason": "no such face, or it was not aligned"}
                )
                continue
            size = face.aligned.size
            crop = np.asarray(crop, np.float32)
            if crop.shape != (size, size, 3) or not np.isfinite(crop).all():
                per_face.append(
                    {
                        "index": idx,
                        "pasted": False,
                        "reason": f"crop shape {crop.shape} is not {size}x{size}x3",
                    }
                )
                continue
            crop = np.clip(crop, 0.0, 1.0)
            weight = face.matte_crop * face.aligned.valid_mask
            matched = match_colour(crop, face.aligned.crop, weight) if p.color_match else crop
            shift = (
                (_lab(matched) - _lab(crop))[weight > 0.5].mean(0) if (weight > 0.5).any() else np.zeros(3)
            )
            roi = _inverse_roi(face, image.shape)
            x0, y0, x1, y1 = roi
            if x1 <= x0 or y1 <= y0:
                per_face.append({"index": idx, "pasted": False, "reason": "face lies outside the photo"})
                continue
            warped = warp_to_photo(matched, face.aligned.inverse_matrix, roi)
            alpha = warp_to_photo(
                face.matte_crop * face.aligned.valid_mask, face.aligned.inverse_matrix, roi, False
            )
            alpha = np.clip(alpha, 0, 1) * owner_weight(face, faces, roi, p.ownership_band)
            grain = 0.0
            if p.grain_match:
                o_c = noise_sigma(face.aligned.crop, weight)
                r_c = noise_sigma(matched, weight)
                if o_c > 1e-4 and r_c < 0.9 * o_c:
                    o_p = noise_sigma(out[y0:y1, x0:x1], alpha)
                    grain = o_p * float(np.sqrt(1.0 - (r_c / o_c) ** 2))
                    rng = np.random.default_rng([seed, idx])
                    noise = rng.normal(0.0, grain, size=alpha.shape).astype(np.float32)
                    warped = warped + noise[..., None]
            a3 = alpha[..., None]
            region = out[y0:y1, x0:x1]
            out[y0:y1, x0:x1] = region * (1.0 - a3) + np.clip(warped, 0, 1) * a3
            matte_all[y0:y1, x0:x1] = np.maximum(matte_all[y0:y1, x0:x1], alpha)
            per_face.append(
                {
                    "index": idx,
                    "pasted": True,
                    "roi": [x0, y0, x1 - x0, y1 - y0],
                    "matte_area_px": float(alpha.sum()),
                    "colour_shift_lab": [round(float(v), 3) for v in shift],
                    "grain_added": round(grain, 5),
                }
            )
        record.result = {"faces": per_face, "pasted": sum(1 for f in per_face if f["pasted"])}
        record.artifacts["faces_matte"] = matte_all
    return np.clip(out, 0.0, 1.0), record


# --- measuring seams ---------------------------------------------------------------------------------


def boundary_band(alpha: np.ndarray, lo: float = 0.02, hi: float = 0.98, grow: int = 2) -> np.ndarray:
    """Pixels on the matte's boundary (its soft band, grown by ``grow`` px)."""
    band = ((alpha > lo) & (alpha < hi)).astype(np.uint8)
    if grow > 0:
        band = cv2.dilate(band, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return band.astype(bool)


def gradient_energy(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared gradient magnitude (Sobel, summed over channels) over ``mask``."""
    img = image.astype(np.float32)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    e = (gx**2 + gy**2).reshape(*img.shape[:2], -1).sum(axis=2)
    return float(e[mask].mean()) if mask.any() else 0.0


def seam_energy(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> float:
    """Gradient energy of the change a paste made, over ``mask`` (a seam or tone step shows up here;
    the photo's own texture, present in both images, does not)."""
    return gradient_energy(after.astype(np.float32) - before.astype(np.float32), mask)


def paste_feathered_box(
    image: np.ndarray, face: Face, crop: np.ndarray, feather_px: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: the whole crop square pasted back with a linearly feathered edge, no matching."""
    roi = _inverse_roi(face, image.shape)
    x0, y0, x1, y1 = roi
    size = face.aligned.size
    warped = warp_to_photo(crop, face.aligned.inverse_matrix, roi)
    square = warp_to_photo(np.ones((size, size), np.float32), face.aligned.inverse_matrix, roi, False)
    inside = (square > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    alpha = np.clip(dist / feather_px, 0, 1).astype(np.float32)
    out = np.array(image, np.float32, copy=True)
    a3 = alpha[..., None]
    out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - a3) + warped * a3
    full = np.zeros(image.shape[:2], np.float32)
    full[y0:y1, x0:x1] = alpha
    return np.clip(out, 0, 1), full
