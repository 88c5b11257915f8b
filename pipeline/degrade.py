"""A documented, seeded model of how a print ages, for demos, tests and measured evaluation.

The degradations are applied in the order a print suffers them, each with a known ground truth so an
evaluation can say how much of the damage a stage removed:

1. **Fade** (dye and silver loss, paper yellowing): the tonal range is compressed towards the paper,
   ``x' = black + (white - black) * x`` with ``black = 0.30 * fade`` and ``white = 1 - 0.10 * fade``
   (a faded print has no deep blacks and slightly dull whites), plus a mild gamma lift ``x' ** (1 - 0.15 *
   fade)`` of the midtones.
2. **Cast** (unequal fading of the three dye layers): a per-channel affine map ``x'_c = gain_c * x_c +
   offset_c``. The named casts are ``yellow`` (the blue channel loses gain, paper yellows), ``magenta``
   (the cyan dye fades first, so red rises and green sinks), ``blue`` (cool shift, e.g. some Agfa stocks),
   ``autochrome`` (a strong green-orange bias with weak blue) and ``none``. ``cast_strength`` scales the
   departure from identity.
3. **Grain** (optional): Gaussian noise, ``grain`` standard deviation, luminance-weighted.
4. **Scratches**: long, thin, slightly bent anti-aliased lines (1-3 px at 512 px scale, wider on larger
   images), mostly bright (emulsion scraped off shows white paper) and some dark. Ground truth: the line
   footprint.
5. **Dust and hairs**: small dark or bright specks (radius 1-3 px at 512 px) and short curved hairs.
   Ground truth: their footprint.

The ground-truth masks are (H, W) float32 in {0, 1}: ``scratch``, ``dust`` and their union ``defect``.

``make_flatbed_scan`` pastes prints at known angles on a scanner background (white glass with a soft
shadow along each print edge, or a dark lid), with sensor noise and a slow illumination gradient, and
returns the prints' ground-truth corners, boxes and angles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from .stage import Image

CastName = Literal["none", "yellow", "magenta", "blue", "autochrome"]

# (gain_r, gain_g, gain_b), (offset_r, offset_g, offset_b) at cast_strength 1.
CASTS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "none": ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
    "yellow": ((0.95, 0.90, 0.62), (0.06, 0.04, 0.0)),
    "magenta": ((0.92, 0.70, 0.85), (0.10, 0.02, 0.08)),
    "blue": ((0.70, 0.85, 0.95), (0.0, 0.04, 0.10)),
    "autochrome": ((0.80, 0.88, 0.55), (0.10, 0.08, 0.0)),
}


@dataclass
class DegradeSpec:
    """What to do to a clean photo; every amount is 0 for "none"."""

    fade: float = 0.6
    """0..1: how much of the tonal range is lost (0.6 = a well-faded print)."""
    cast: CastName = "yellow"
    cast_strength: float = 1.0
    grain: float = 0.0
    """standard deviation of the added grain, in [0, 1] units."""
    scratches: int = 6
    """number of long scratches."""
    dust: int = 120
    """number of dust specks per megapixel-equivalent of a 512x512 image (scaled with area)."""
    hairs: int = 3
    blur: float = 0.0
    """Gaussian sigma in pixels (soft focus), applied before the defects (they lie on the print surface)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _as_rgb(image: Image) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.max(initial=0) > 1.0 + 1e-6:  # uint8-valued input
        img = img / 255.0
    return np.ascontiguousarray(img[:, :, :3], dtype=np.float32)


def fade_and_cast(image: Image, fade: float, cast: str, cast_strength: float = 1.0) -> Image:
    """Steps 1 and 2 of the model: the tonal/colour part alone (no spatial damage)."""
    img = _as_rgb(image)
    black = 0.30 * fade
    white = 1.0 - 0.10 * fade
    out = black + (white - black) * np.power(np.clip(img, 0, 1), 1.0 - 0.15 * fade)
    gains, offsets = CASTS[cast]
    g = 1.0 + cast_strength * (np.asarray(gains, np.float32) - 1.0)
    o = cast_strength * np.asarray(offsets, np.float32)
    out = out * g + o
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _curve(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A long, gently bent polyline across part of the image (mostly vertical, like film transport)."""
    vertical = rng.random() < 0.65
    length = rng.uniform(0.3, 0.95) * (h if vertical else w)
    angle = rng.normal(0, 12) + (90 if vertical else 0) if rng.random() < 0.85 else rng.uniform(0, 180)
    a = math.radians(angle)
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    n = 24
    t = np.linspace(-0.5, 0.5, n) * length
    bend = rng.normal(0, 0.02) * length
    lateral = bend * (1 - (2 * np.linspace(-0.5, 0.5, n)) ** 2) + rng.normal(0, 0.4, n).cumsum() * 0.3
    xs = cx + t * math.cos(a) - lateral * math.sin(a)
    ys = cy + t * math.sin(a) + lateral * math.cos(a)
    return np.stack([xs, ys], axis=1)


def _draw_polyline(mask: np.ndarray, pts: np.ndarray, width: int) -> None:
    """Anti-aliased polyline into a uint8 mask (sub-pixel precision via a shift of 4 bits)."""
    p = np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(mask, [p], False, 255, thickness=max(1, width), lineType=cv2.LINE_AA, shift=4)


def add_scratches_and_dust(
    image: Image, rng: np.random.Generator, scratches: int, dust: int, hairs: int = 0
) -> tuple[Image, dict[str, np.ndarray]]:
    """Steps 4 and 5: returns the damaged image and the masks ``scratch``, ``dust``, ``defect``."""
    img = _as_rgb(image).copy()
    h, w = img.shape[:2]
    scale = max(1.0, min(h, w) / 512.0)
    scratch_mask = np.zeros((h, w), np.float32)
    dust_mask = np.zeros((h, w), np.float32)
    for _ in range(scratches):
        layer = np.zeros((h, w), np.uint8)
        width = round(rng.choice([1, 1, 2, 2, 3]) * scale)
        _draw_polyline(layer, _curve(rng, h, w), width)
        alpha = layer.astype(np.float32) / 255.0 * rng.uniform(0.75, 1.0)
        bright = rng.random() < 0.75
        value = rng.uniform(0.85, 1.0) if bright else rng.uniform(0.0, 0.15)
        img = img * (1 - alpha[:, :, None]) + value * alpha[:, :, None]
        scratch_mask = np.maximum(scratch_mask, (layer > 64).astype(np.float32))
    n_dust = round(dust * (h * w) / (512 * 512))
    for _ in range(n_dust):
        layer = np.zeros((h, w), np.uint8)
        r = rng.uniform(0.6, 3.0) * scale
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        axes = (max(1, round(r * 16))), max(1, round(r * rng.uniform(0.5, 1.0) * 16))
        center = (round(cx * 16)), round(cy * 16)
        cv2.ellipse(layer, center, axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA, 4)
        alpha = layer.astype(np.float32) / 255.0
        value = rng.uniform(0.0, 0.12) if rng.random() < 0.6 else rng.uniform(0.88, 1.0)
        img = _blend_local(img, alpha, value, cx, cy, int(r * 2 + 3))
        dust_mask = np.maximum(dust_mask, (layer > 64).astype(np.float32))
    for _ in range(hairs):
        layer = np.zeros((h, w), np.uint8)
        pts = _curve(rng, h, w)
        pts = pts[: rng.integers(5, 10)]  # a short piece of a curve
        pts = pts - pts[0] + np.array([rng.uniform(0, w), rng.uniform(0, h)])
        pts = pts * np.array([0.3, 0.3]) + pts[0] * 0.7
        _draw_polyline(layer, pts, max(1, round(scale)))
        alpha = layer.astype(np.float32) / 255.0
        img = img * (1 - alpha[:, :, None]) + 0.05 * alpha[:, :, None]
        dust_mask = np.maximum(dust_mask, (layer > 64).astype(np.float32))
    defect = np.maximum(scratch_mask, dust_mask)
    masks = {"scratch": scratch_mask, "dust": dust_mask, "defect": defect}
    return np.clip(img, 0, 1).astype(np.float32), masks


def _blend_local(
    img: np.ndarray, alpha: np.ndarray, value: float, cx: float, cy: float, r: int
) -> np.ndarray:
    h, w = alpha.shape
    x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
    y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
    a = alpha[y0:y1, x0:x1, None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + value * a
    return img


def degrade(image: Image, spec: DegradeSpec, rng: np.random.Generator) -> tuple[Image, dict[str, np.ndarray]]:
    """Apply the whole model (see the module docstring). Returns the aged image and its masks."""
    img = _as_rgb(image)
    if spec.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), spec.blur)
    img = fade_and_cast(img, spec.fade, spec.cast, spec.cast_strength)
    if spec.grain > 0:
        noise = rng.normal(0.0, spec.grain, img.shape[:2]).astype(np.float32)
        chroma = rng.normal(0.0, spec.grain * 0.3, img.shape).astype(np.float32)
        img = np.clip(img + noise[:, :, None] + chroma, 0, 1)
    img, masks = add_scratches_and_dust(img, rng, spec.scratches, spec.dust, spec.hairs)
    return img.astype(np.float32), masks


def age_photo(image: Image, seed: int) -> Image:
    """Make a clean photo look like an old print: fade, a cast, light grain, scratches and dust.

    Deterministic for a given seed; the cast is picked by the seed among yellow, magenta, blue.
    """
    rng = np.random.default_rng(seed)
    cast: CastName = ("yellow", "magenta", "blue")[int(rng.integers(0, 3))]  # type: ignore[assignment]
    spec = DegradeSpec(
        fade=float(rng.uniform(0.45, 0.7)),
        cast=cast,
        cast_strength=float(rng.uniform(0.7, 1.0)),
        grain=0.012,
        scratches=int(rng.integers(3, 8)),
        dust=100,
        hairs=2,
    )
    out, _ = degrade(image, spec, rng)
    return out


# ---------------------------------------------------------------------------------------------------------
# Synthetic flatbed scans


@dataclass
class PlacedPrint:
    """Ground truth of one print pasted into a synthetic scan."""

    corners: list[tuple[float, float]]
    """4 corners (x, y) in the scan: top-left, top-right, bottom-right, bottom-left of the upright print."""
    box: list[int]
    """[x, y, w, h] axis-aligned bounding box in the scan."""
    placed_angle: float
    """degrees the print was rotated counter-clockwise (as seen on screen) when pasted."""
    size: tuple[int, int]
    """(w, h) of the print."""

    @property
    def deskew_angle(self) -> float:
        """The rotation (counter-clockwise positive) that straightens the print: ``-placed_angle``."""
        return -self.placed_angle


def make_flatbed_scan(
    prints: list[Image],
    angles: list[float],
    rng: np.random.Generator,
    background: Literal["white", "dark"] = "white",
    size: tuple[int, int] | None = None,
    noise: float = 0.01,
) -> tuple[Image, list[PlacedPrint]]:
    """Paste ``prints`` (each rotated by its ``angles`` entry, CCW degrees) on a scanner background.

    Prints are laid out in a grid of cells (one per print) with random jitter, so they never overlap.
    ``size`` is the scan's (w, h); by default an A4-like 1.41:1 page fitting the prints.
    Returns the scan (H, W, 3) float32 and each print's ground truth (same order as ``prints``).
    """
    n = len(prints)
    if n != len(angles):
        raise ValueError("one angle per print")
    cols = 1 if n == 1 else 2
    rows = max(1, math.ceil(n / cols))
    cell = max(max(p.shape[0], p.shape[1]) for p in prints) * 1.35 if prints else 400
    if size is None:
        size = (int(cell * cols + 0.2 * cell), int(cell * rows + 0.2 * cell))
    W, H = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    if background == "white":
        base = 0.94 + 0.03 * (xx / W) - 0.02 * (yy / H)
        scan = np.repeat(base[:, :, None], 3, axis=2) * np.array([1.0, 0.995, 0.985], np.float32)
    else:
        base = 0.06 + 0.03 * (xx / W) + 0.02 * np.sin(yy / H * 3)
        scan = np.repeat(base[:, :, None], 3, axis=2)
    scan = scan.astype(np.float32)
    truth: list[PlacedPrint] = []
    cw, ch = W / cols, H / rows
    for i, (p, ang) in enumerate(zip(prints, angles, strict=True)):
        p = _as_rgb(p)
        ph, pw = p.shape[:2]
        r, c = divmod(i, cols)
        cx = (c + 0.5) * cw + rng.uniform(-0.04, 0.04) * cw
        cy = (r + 0.5) * ch + rng.uniform(-0.04, 0.04) * ch
        m = cv2.getRotationMatrix2D((pw / 2, ph / 2), ang, 1.0)
        m[0, 2] += cx - pw / 2
        m[1, 2] += cy - ph / 2
        warped = cv2.warpAffine(p, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = cv2.warpAffine(np.ones((ph, pw), np.float32), m, (W, H), flags=cv2.INTER_LINEAR)
        if background == "white":
            # the lid's light does not reach under the print's edge: a soft shadow offset down-right
            shadow = cv2.GaussianBlur(np.roll(np.roll(alpha, 4, 0), 3, 1), (0, 0), 4.0)
            scan = scan * (1 - 0.25 * shadow[:, :, None])
        scan = scan * (1 - alpha[:, :, None]) + warped * alpha[:, :, None]
        src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float64)
        dst = (m[:, :2] @ src.T).T + m[:, 2]
        x0, y0 = np.floor(dst.min(0)).astype(int)
        x1, y1 = np.ceil(dst.max(0)).astype(int)
        truth.append(
            PlacedPrint(
                corners=[(float(x), float(y)) for x, y in dst],
                box=[int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
                placed_angle=float(ang),
                size=(pw, ph),
            )
        )
    if noise > 0:
        scan = scan + rng.normal(0, noise, scan.shape).astype(np.float32)
    return np.clip(scan, 0, 1).astype(np.float32), truth
