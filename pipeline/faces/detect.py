"""Finding faces: HOG proposes, the CNN (MMOD) verifies, landmarks check the geometry.

1. A grey, contrast-equalised (CLAHE) working copy makes colour casts, sepia, fading and greyscale look
   alike to the detectors.
2. HOG proposal passes (cheap) on that copy, upsampled so the smallest face searched for
   (``min_detect_px``) fills HOG's 80 px window, capped by a pixel budget, at a few rotations for tilted
   heads, with a *low* threshold: HOG only proposes.
3. One whole-photo CNN pass on a downscaled copy (pixel budget) finds large faces in poses HOG misses;
   its boxes are mapped back to the photo.
4. Every HOG candidate not already found is verified by the CNN on a small crop, sampled upright
   (rotated by the candidate's angle) with the face scaled to ~110 px: a few hundred thousand pixels at
   most instead of the CNN on an upsampled photo. The CNN's confidence decides.
5. 5-point landmarks on an upright crop of the full-resolution photo, then a geometry check (eyes level
   and apart, nose below them) throws out face-like textures that slipped through.
6. Nothing upright? The photo turned 90/270/180 degrees is tried (a print scanned sideways).
A soft time budget bounds the whole: when it is spent, candidates left are skipped and the record says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import dlib
import numpy as np

from . import models
from .align import apply, invert
from .params import DetectParams

HOG_WINDOW = 80.0
VERIFY_FACE_PX = 96.0
VERIFY_CROP_PX = 160
CNN_REACH_MARGIN = 1.25
# dlib's MMOD CNN raises on an image smaller than its filter window, and calls on images below about 10 px
# corrupt the heap (a later call dies of SIGBUS, or the process aborts in free() at exit): it is never
# given a view with a side below this.
CNN_MIN_SIDE = 24
# A HOG view turned by a few degrees holds the whole photo on an axis-aligned canvas; for a very long,
# thin photo (a 1 x 20,000,000 strip) that canvas is astronomically larger than the photo. Views over this
# many times the pixel budget are not searched (an ordinary photo's turned view is under twice).
HOG_CANVAS_FACTOR = 4.0


@dataclass
class Detection:
    cx: float
    cy: float
    size: float
    """Side of the (rotated) face square in photo pixels."""
    angle: float
    """Degrees the photo was turned (counter-clockwise, OpenCV's sense) to make this face upright."""
    score: float
    detector: str
    hog_score: float | None = None
    landmarks5: np.ndarray | None = None

    def box(self) -> list[int]:
        """Axis-aligned [x, y, w, h] around the rotated face square, in photo pixels."""
        half = self.size / 2.0
        corners = np.array([[-half, -half], [half, -half], [-half, half], [half, half]])
        t = np.deg2rad(self.angle)
        # face frame -> photo: rotate by -angle back.
        rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
        pts = corners @ rot.T + [self.cx, self.cy]
        x0, y0 = np.floor(pts.min(0))
        x1, y1 = np.ceil(pts.max(0))
        return [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]


@dataclass
class DetectReport:
    candidates: int = 0
    verified: int = 0
    rejected_cnn: int = 0
    rejected_cnn_pass: int = 0
    rejected_geometry: int = 0
    rejected_small: int = 0
    skipped_budget: int = 0
    skipped_max_candidates: int = 0
    """Candidates never verified because ``max_candidates`` were verified first (a crowded group photo)."""
    orientations_tried: list[int] = field(default_factory=lambda: [0])
    hog_scale: float = 1.0
    cnn_scale: float = 0.0
    min_face_px_effective: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    """Why the photo was not searched at all (too small to hold a face)."""


def working_copy(image: np.ndarray) -> np.ndarray:
    """Grey, CLAHE-equalised uint8 copy, three equal channels (what the detectors see)."""
    rgb = np.clip(image, 0.0, 1.0)
    grey = (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114) * 255.0 + 0.5
    g8 = grey.astype(np.uint8)
    tiles = max(2, min(8, round(max(g8.shape) / 128)))
    g8 = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(tiles, tiles)).apply(g8)
    return np.ascontiguousarray(np.repeat(g8[..., None], 3, axis=2))


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def _view_matrix(shape: tuple[int, ...], angle: float, scale: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Photo -> view affine that rotates by ``angle`` and scales, on a canvas holding the whole photo."""
    h, w = shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    corners = apply(m, np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64))
    lo, hi = corners.min(0), corners.max(0)
    m[:, 2] -= lo
    size = np.ceil(hi - lo).astype(int)
    return m, (int(size[0]), int(size[1]))


def _crop_matrix(cx: float, cy: float, angle: float, scale: float, out: int) -> np.ndarray:
    """Photo -> crop affine putting (cx, cy) at the crop centre, turned by ``angle`` and scaled."""
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[:, 2] += np.array([out / 2.0 - cx, out / 2.0 - cy])
    return m


def _iou(a: Detection, b: Detection) -> float:
    """Overlap of two faces as concentric-square IoU on their centres and sizes (rotation ignored)."""
    ha, hb = a.size / 2, b.size / 2
    ix = max(0.0, min(a.cx + ha, b.cx + hb) - max(a.cx - ha, b.cx - hb))
    iy = max(0.0, min(a.cy + ha, b.cy + hb) - max(a.cy - ha, b.cy - hb))
    inter = ix * iy
    union = a.size**2 + b.size**2 - inter
    return inter / union if union > 0 else 0.0


def _same_face(a: Detection, b: Detection, iou: float) -> bool:
    d = np.hypot(a.cx - b.cx, a.cy - b.cy)
    return _iou(a, b) > iou or d < 0.35 * min(a.size, b.size)


def hog_candidates(
    work: np.ndarray, angles: list[float], scale: float, threshold: float, max_pixels: float = np.inf
) -> list[Detection]:
    hog = models.hog_detector()
    out: list[Detection] = []
    for angle in angles:
        m, size = _view_matrix(work.shape, angle, scale)
        if float(size[0]) * float(size[1]) > max_pixels:
            continue
        view = cv2.warpAffine(work, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        rects, scores, _ = hog.run(view, 0, threshold)
        inv = invert(m)
        for r, s in zip(rects, scores, strict=True):
            c = apply(inv, np.array([[(r.left() + r.right()) / 2.0, (r.top() + r.bottom()) / 2.0]]))[0]
            out.append(
                Detection(float(c[0]), float(c[1]), r.width() / scale, angle, float(s), "hog", float(s))
            )
    return out


def cnn_pass(work: np.ndarray, scale: float, threshold: float) -> list[Detection]:
    cnn = models.cnn_detector()
    h, w = work.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if min(size) < CNN_MIN_SIDE:
        return []
    view = cv2.resize(work, size, interpolation=cv2.INTER_AREA)
    out = []
    for d in cnn(view, 0):
        if d.confidence < threshold:
            continue
        r = d.rect
        cx = (r.left() + r.right()) / 2.0 / scale
        cy = (r.top() + r.bottom()) / 2.0 / scale
        out.append(Detection(cx, cy, r.width() / scale, 0.0, float(d.confidence), "cnn"))
    return out


def _verify_crop(work: np.ndarray, cand: Detection) -> tuple[np.ndarray, np.ndarray, float]:
    """Upright crop around a candidate with the face scaled to VERIFY_FACE_PX; (crop, matrix, scale)."""
    scale = VERIFY_FACE_PX / max(cand.size, 1.0)
    m = _crop_matrix(cand.cx, cand.cy, cand.angle, scale, VERIFY_CROP_PX)
    interp = cv2.INTER_LINEAR if scale >= 0.8 else cv2.INTER_AREA
    src = work
    if scale < 0.5:  # large face: low-pass first so the small crop does not alias
        x0, y0, x1, y1 = _roi_around(cand, work.shape, 1.5 * VERIFY_CROP_PX / scale)
        src = work.copy()
        src[y0:y1, x0:x1] = cv2.GaussianBlur(work[y0:y1, x0:x1], (0, 0), 0.5 / scale)
    # Edge padding, not reflection: a mirrored copy of a face at the border would be "verified" too.
    size = (VERIFY_CROP_PX, VERIFY_CROP_PX)
    crop = cv2.warpAffine(src, m, size, flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(crop), m, scale


def _roi_around(cand: Detection, shape: tuple[int, ...], side: float) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x0, y0 = int(max(0, cand.cx - side / 2)), int(max(0, cand.cy - side / 2))
    return x0, y0, int(min(w, cand.cx + side / 2 + 1)), int(min(h, cand.cy + side / 2 + 1))


def _best_match(
    dets: Any, cand: Detection, m: np.ndarray, scale: float, threshold: float
) -> Detection | None:
    best: Detection | None = None
    inv = invert(m)
    for d in dets:
        r = d.rect
        c = np.array([(r.left() + r.right()) / 2.0, (r.top() + r.bottom()) / 2.0])
        size = r.width() / scale
        off = np.hypot(*(c - VERIFY_CROP_PX / 2.0)) / scale
        if off > 0.5 * max(size, cand.size) or not 0.4 < size / cand.size < 2.5:
            continue
        if d.confidence < threshold or (best is not None and d.confidence <= best.score):
            continue
        p = apply(inv, c[None])[0]
        best = Detection(
            float(p[0]), float(p[1]), size, cand.angle, float(d.confidence), "hog+cnn", cand.hog_score
        )
    return best


def verify(
    work: np.ndarray, cands: list[Detection], threshold: float, deadline: float, batch: int = 4
) -> tuple[list[Detection | None], int]:
    """Run the CNN on upright crops around candidates (batched); per candidate the face or None.

    Returns the verdicts of the candidates looked at and how many were left for lack of time.
    """
    cnn = models.cnn_detector()
    out: list[Detection | None] = []
    for start in range(0, len(cands), batch):
        if time.perf_counter() > deadline:
            return out, len(cands) - start
        chunk = cands[start : start + batch]
        crops = [_verify_crop(work, c) for c in chunk]
        results = cnn([c for c, _, _ in crops], 0, batch_size=len(crops))
        for cand, (_, m, scale), dets in zip(chunk, crops, results, strict=True):
            out.append(_best_match(dets, cand, m, scale, threshold))
    return out, 0


def landmarks(image_u8: np.ndarray, det: Detection) -> np.ndarray:
    """5-point landmarks (photo coordinates) from an upright crop of the full-resolution photo."""
    target = float(np.clip(det.size, 100.0, 256.0))
    scale = target / max(det.size, 1.0)
    out = round(target * 2.2)
    m = _crop_matrix(det.cx, det.cy, det.angle, scale, out)
    src = image_u8
    if scale < 0.5:
        src = cv2.GaussianBlur(image_u8, (0, 0), 0.5 / scale)
    crop = cv2.warpAffine(src, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    half = target / 2.0
    rect = dlib.rectangle(
        round(out / 2 - half), round(out / 2 - half), round(out / 2 + half), round(out / 2 + half)
    )
    shape = models.landmark_predictor()(crop, rect)
    pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    return apply(invert(m), pts)


def _upright(det: Detection, pts: np.ndarray) -> np.ndarray:
    t = np.deg2rad(det.angle)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])  # photo -> upright face frame
    return (pts - [det.cx, det.cy]) @ rot.T / max(det.size, 1.0)


def eye_tilt(det: Detection, pts: np.ndarray) -> float:
    """Degrees the eye line still leans in the face's upright frame (0 when level)."""
    q = _upright(det, pts)
    d = (q[0] + q[1]) / 2 - (q[2] + q[3]) / 2
    return float(np.degrees(np.arctan2(d[1], d[0])))


def plausible(det: Detection, pts: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Why these landmarks are not a real face's (None when they are plausible)."""
    h, w = shape[:2]
    if not (0 <= det.cx < w and 0 <= det.cy < h):
        return "centre outside the photo"
    q = _upright(det, pts)
    eye_r = (q[0] + q[1]) / 2  # right-of-image eye
    eye_l = (q[2] + q[3]) / 2
    eye_d = float(np.hypot(*(eye_r - eye_l)))
    if not 0.25 < eye_d < 0.85 or eye_r[0] <= eye_l[0]:
        return "eye distance"
    mid = (eye_r + eye_l) / 2
    nose_drop = float(q[4][1] - mid[1]) / eye_d
    if abs(eye_tilt(det, pts)) > 40 or not 0.2 < nose_drop < 1.4:
        return "eyes and nose"
    return None


def _nms(dets: list[Detection], iou: float) -> list[Detection]:
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if not any(_same_face(d, k, iou) for k in kept):
            kept.append(d)
    return kept


def detect_faces(image: np.ndarray, p: DetectParams) -> tuple[list[Detection], DetectReport]:
    """Every face in ``image`` with its landmarks, in photo coordinates (unordered)."""
    t_start = time.perf_counter()
    deadline = t_start + p.time_budget_s
    rep = DetectReport()
    h, w = image.shape[:2]
    if min(h, w) < p.min_detect_px * 0.8:
        # No face this small would be kept (see _finish), and the detectors misbehave on slivers.
        rep.skipped = f"{w}x{h} is smaller than the smallest face searched for ({p.min_detect_px} px)"
        rep.seconds["total"] = time.perf_counter() - t_start
        return [], rep
    work = working_copy(image)
    u8 = to_uint8(image)
    hog_scale = min(HOG_WINDOW / p.min_detect_px, np.sqrt(p.hog_pixel_budget / (h * w)))
    rep.hog_scale = float(hog_scale)
    rep.min_face_px_effective = float(max(p.min_detect_px, HOG_WINDOW / hog_scale * 0.9))
    found: list[Detection] = []
    rep.seconds["prepare"] = time.perf_counter() - t_start

    def run(angles: list[float], with_cnn: bool, threshold: float) -> None:
        t0 = time.perf_counter()
        cands: list[Detection] = []
        for angle in angles:
            upright = angle % 90 == 0
            scale = hog_scale if upright else hog_scale * p.tilted_scale
            cands += hog_candidates(work, [angle], scale, threshold, HOG_CANVAS_FACTOR * p.hog_pixel_budget)
        rep.seconds["hog"] = rep.seconds.get("hog", 0.0) + time.perf_counter() - t0
        reach = np.inf
        if with_cnn and p.cnn_pixel_budget > 0:
            t0 = time.perf_counter()
            cnn_scale = min(np.sqrt(p.cnn_pixel_budget / (h * w)), HOG_WINDOW / p.min_detect_px)
            rep.cnn_scale = float(cnn_scale)
            found.extend(cnn_pass(work, cnn_scale, p.cnn_threshold))
            reach = CNN_REACH_MARGIN * HOG_WINDOW / cnn_scale
            rep.seconds["cnn"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cands = [c for c in _nms(cands, p.nms_iou) if not any(_same_face(c, f, p.nms_iou) for f in found)]
        # A candidate large enough for the whole-photo CNN pass to have seen it, which that pass did not
        # report, is already rejected by the CNN: no crop to verify.
        rep.rejected_cnn_pass += int(sum(c.size > reach for c in cands))
        cands = [c for c in cands if c.size <= reach]
        rep.candidates += len(cands)
        rep.skipped_max_candidates += max(0, len(cands) - p.max_candidates)
        verdicts, left = verify(work, cands[: p.max_candidates], p.cnn_threshold, deadline)
        rep.skipped_budget += left
        for v in verdicts:
            if v is None:
                rep.rejected_cnn += 1
            elif not any(_same_face(v, f, p.nms_iou) for f in found):
                found.append(v)
                rep.verified += 1
        rep.seconds["verify"] = rep.seconds.get("verify", 0.0) + time.perf_counter() - t0

    run(list(p.hog_angles), with_cnn=True, threshold=p.hog_threshold)
    faces = _finish(found, u8, p, rep)
    if not faces and p.try_orientations:
        for k in (90, 270, 180):
            if time.perf_counter() > deadline:
                rep.skipped_budget += 1
                break
            rep.orientations_tried.append(k)
            found.clear()
            run([float(k)], with_cnn=False, threshold=p.orientation_hog_threshold)
            faces = _finish(found, u8, p, rep)
            if faces:
                break
    rep.seconds["total"] = time.perf_counter() - t_start
    return faces, rep


def _finish(found: list[Detection], u8: np.ndarray, p: DetectParams, rep: DetectReport) -> list[Detection]:
    t0 = time.perf_counter()
    out: list[Detection] = []
    for d in _nms(found, p.nms_iou):
        if d.size < p.min_detect_px * 0.8:
            rep.rejected_small += 1
            continue
        pts = landmarks(u8, d)
        tilt = eye_tilt(d, pts)
        if abs(tilt) > 8:  # the proposal's angle was off: redo the landmarks with the face's own roll
            d.angle = float(np.round(d.angle + tilt, 1))
            pts = landmarks(u8, d)
        if plausible(d, pts, u8.shape) is not None:
            rep.rejected_geometry += 1
            continue
        d.landmarks5 = pts
        out.append(d)
    rep.seconds["landmarks"] = rep.seconds.get("landmarks", 0.0) + time.perf_counter() - t0
    return out


def describe(rep: DetectReport) -> dict[str, Any]:
    return {
        "candidates": rep.candidates,
        "verified": rep.verified,
        "rejected_cnn": rep.rejected_cnn,
        "rejected_cnn_pass": rep.rejected_cnn_pass,
        "rejected_geometry": rep.rejected_geometry,
        "rejected_small": rep.rejected_small,
        "skipped_budget": rep.skipped_budget,
        "skipped_max_candidates": rep.skipped_max_candidates,
        "orientations_tried": rep.orientations_tried,
        "hog_scale": round(rep.hog_scale, 4),
        "cnn_scale": round(rep.cnn_scale, 4),
        "min_face_px_effective": round(rep.min_face_px_effective, 1),
        **({"skipped": rep.skipped} if rep.skipped else {}),
        "seconds": {k: round(v, 4) for k, v in rep.seconds.items()},
    }
