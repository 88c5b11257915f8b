"""Alignment of a face to a square crop by its 5 landmarks, and the way back.

The crop frame follows the FFHQ convention the face restorers are trained on (the 512 template of
facexlib/CodeFormer: eyes at y=240, eye centres 126 px apart). dlib's 5-point predictor gives eye
*corners* and the base of the nose, not eye centres, so the template below is those points' mean
position in the FFHQ frame, measured on the test photos (17 faces: 68-point eye centres, nose tip and
mouth corners fitted to the FFHQ template, then the 5-point landmarks mapped through that fit),
made left-right symmetric.

Sampling always reads the full-resolution photo; a face larger than its crop is low-pass filtered
first (no aliasing), a smaller one is upsampled with bicubic interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .params import AlignParams

# dlib 5-point order: right-of-image eye outer/inner corner, left-of-image eye outer/inner corner, nose base.
TEMPLATE_512 = np.array(
    [[340.5, 238.0], [293.5, 240.9], [171.5, 238.0], [218.5, 240.9], [256.0, 335.3]], dtype=np.float64
)
# The face region in the 512 frame (an ellipse from above the brows to below the chin).
FACE_ELLIPSE_512 = (256.0, 292.0, 138.0, 178.0)  # centre x, centre y, semi-axis x, semi-axis y

BORDER = {"reflect": cv2.BORDER_REFLECT_101, "edge": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}


@dataclass
class AlignedFace:
    crop: np.ndarray
    """(S, S, 3) float32 in [0, 1]: the face warped to the template frame, sampled from the full photo."""
    matrix: np.ndarray
    """(2, 3) float64 affine map photo (x, y) -> crop (x, y) (a similarity: rotation, scale, shift)."""
    inverse_matrix: np.ndarray
    """(2, 3) float64 affine map crop -> photo."""
    valid_mask: np.ndarray
    """(S, S) float32: 1 where the crop pixel comes from inside the photo, 0 where it is padding."""

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def template(size: int) -> np.ndarray:
    """The 5 canonical landmark positions in a crop of ``size`` pixels."""
    return TEMPLATE_512 * (size / 512.0)


def face_ellipse(size: int) -> tuple[float, float, float, float]:
    k = size / 512.0
    cx, cy, ax, ay = FACE_ELLIPSE_512
    return cx * k, cy * k, ax * k, ay * k


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama) mapping ``src`` points onto ``dst``; (2, 3)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rot = u @ np.diag(d) @ vt
    var = (s0**2).sum() / len(src)
    scale = float((sv * d).sum() / var) if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - m[:, :2] @ ms
    return m


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def footprint(
    inverse_matrix: np.ndarray, size: int, shape: tuple[int, ...], margin: int = 4
) -> tuple[int, ...]:
    """Integer ROI (x0, y0, x1, y1) of the photo that a crop of ``size`` covers, clipped to the photo."""
    corners = apply(inverse_matrix, np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
    h, w = shape[:2]
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - margin, 0, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - margin, 0, h))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + margin + 1, 0, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + margin + 1, 0, h))
    return x0, y0, x1, y1


def shifted(matrix: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``matrix`` (photo -> crop) for a photo whose origin moved to (dx, dy)."""
    m = np.array(matrix, np.float64)
    m[:, 2] = m[:, 2] + m[:, :2] @ np.array([dx, dy])
    return m


def warp_to_crop(
    image: np.ndarray, matrix: np.ndarray, size: int, padding: str = "reflect", antialias: bool = True
) -> np.ndarray:
    """Sample ``image`` (full resolution) into a ``size`` crop through ``matrix`` (photo -> crop)."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    inv = invert(matrix)
    x0, y0, x1, y1 = footprint(inv, size, image.shape, margin=4 + int(np.ceil(2.0 / max(scale, 1e-6))))
    border = BORDER[padding]
    if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the photo: pad from the nearest pixel
        x0, y0 = min(x0, image.shape[1] - 1), min(y0, image.shape[0] - 1)
        x1, y1 = x0 + 1, y0 + 1
    roi = np.ascontiguousarray(image[y0:y1, x0:x1])
    if antialias and scale < 0.8:
        sigma = 0.5 * np.sqrt(1.0 / scale**2 - 1.0)
        roi = cv2.GaussianBlur(roi, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    interp = cv2.INTER_CUBIC if scale >= 0.8 else cv2.INTER_LINEAR
    out = cv2.warpAffine(
        roi, shifted(matrix, x0, y0), (size, size), flags=interp, borderMode=border, borderValue=(0, 0, 0, 0)
    )
    return np.clip(out, 0.0, 1.0).astype(np.float32) if out.dtype != np.uint8 else out


def align_face(image: np.ndarray, landmarks5: np.ndarray, params: AlignParams | None = None) -> AlignedFace:
    """Warp the face with these landmarks (photo coordinates, dlib 5-point order) to the template crop."""
    p = params or AlignParams()
    size = p.crop_size
    matrix = similarity(landmarks5, template(size))
    crop = warp_to_crop(image, matrix, size, p.padding)
    h, w = image.shape[:2]
    # Validity: where the crop pixel's source lies inside the photo (fractional along the edge).
    inv = invert(matrix)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    px = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    py = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    inside_x = np.clip(np.minimum(px + 0.5, w - 0.5 - px) * scale + 0.5, 0, 1)
    inside_y = np.clip(np.minimum(py + 0.5, h - 0.5 - py) * scale + 0.5, 0, 1)
    valid = (inside_x * inside_y).astype(np.float32)
    return AlignedFace(crop=crop.astype(np.float32), matrix=matrix, inverse_matrix=inv, valid_mask=valid)


def ellipse_radius(matrix: np.ndarray, size: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Normalised face-ellipse radius (1 on the ellipse) of every photo pixel in the ROI."""
    m = shifted(matrix, x0, y0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    cy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    ex, ey, ax, ay = face_ellipse(size)
    return np.sqrt(((cx - ex) / ax) ** 2 + ((cy - ey) / ay) ** 2).astype(np.float32)
