"""The optional whole-photo pass: a low-strength SD 1.5 restore of the print in overlapping tiles.

Tiles have the face crop size so they ride in the same GPU batch as the faces. Each tile's matte is
"everything but the faces" (the faces have their own restore and identity guard), and the tiles are
blended back with a window that ramps over the overlap, so no tile edge shows. Only the luminance of the
diffusion output is taken; the colour stays the print's own (the tone stage already corrected it), so a
monochrome or sepia print cannot be tinted by the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    crop: np.ndarray  # (S, S, 3) float32 in [0, 1], reflect-padded where the print is smaller
    matte: np.ndarray  # (S, S) float32: 1 = regenerate, 0 = keep (faces)


def tile_origins(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets along one axis: tiles of ``size`` overlapping by at least ``overlap``, the last one
    flush with the end (so no tile hangs over the edge when the print is at least one tile long)."""
    if length <= size:
        return [0]
    stride = size - overlap
    count = -(-(length - size) // stride) + 1
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def plan_tiles(height: int, width: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the tiles covering a ``height`` x ``width`` print."""
    if not 0 <= overlap < size:
        raise ValueError(f"tile overlap {overlap} must be in [0, {size})")
    return [(y, x) for y in tile_origins(height, size, overlap) for x in tile_origins(width, size, overlap)]


def cut_tiles(image: np.ndarray, keep: np.ndarray | None, size: int, overlap: int) -> list[Tile]:
    """The tiles of ``image`` (H, W, 3); ``keep`` (H, W) in [0, 1] marks what the pass must not change."""
    h, w = image.shape[:2]
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect") if pad_h or pad_w else image
    regen = np.ones((h, w), np.float32) if keep is None else 1.0 - np.clip(keep, 0.0, 1.0)
    regen = np.pad(regen, ((0, pad_h), (0, pad_w)), mode="constant") if pad_h or pad_w else regen
    tiles = []
    for y, x in plan_tiles(h, w, size, overlap):
        crop = np.ascontiguousarray(padded[y : y + size, x : x + size], dtype=np.float32)
        tiles.append(Tile(y, x, crop, np.ascontiguousarray(regen[y : y + size, x : x + size], np.float32)))
    return tiles


def blend_window(size: int, overlap: int) -> np.ndarray:
    """(size, size) weights: 1 in the middle, a raised-cosine ramp over ``overlap`` at each edge. Never
    zero, so a pixel only one tile covers (the print's own border) keeps that tile's value exactly."""
    ramp = np.ones(size, np.float64)
    if overlap > 0:
        t = (np.arange(overlap) + 0.5) / overlap
        ramp[:overlap] = 0.5 - 0.5 * np.cos(np.pi * t)
        ramp[-overlap:] = ramp[:overlap][::-1]
    return np.outer(ramp, ramp)


def blend_tiles(
    image: np.ndarray, tiles: list[Tile], restored: list[np.ndarray], keep: np.ndarray | None, overlap: int
) -> np.ndarray:
    """Put the restored tiles back into ``image``: window-weighted average where tiles overlap, the
    luminance of the result with the print's own colour, and ``keep`` (faces) untouched."""
    h, w = image.shape[:2]
    if not tiles:
        return image
    size = tiles[0].crop.shape[0]
    window = blend_window(size, overlap)
    acc = np.zeros((h, w, 3), np.float64)
    weight = np.zeros((h, w), np.float64)
    for tile, out in zip(tiles, restored, strict=True):
        th, tw = min(size, h - tile.y), min(size, w - tile.x)
        acc[tile.y : tile.y + th, tile.x : tile.x + tw] += out[:th, :tw] * window[:th, :tw, None]
        weight[tile.y : tile.y + th, tile.x : tile.x + tw] += window[:th, :tw]
    merged = (acc / weight[..., None]).astype(np.float32)
    result = keep_colour(image, merged)
    if keep is not None:
        k = np.clip(keep, 0.0, 1.0)[..., None]
        result = image + (1.0 - k) * (result - image)
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def keep_colour(original: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """``restored``'s lightness with ``original``'s chroma (CIE Lab), so grey stays grey."""
    lab_o = cv2.cvtColor(original.astype(np.float32), cv2.COLOR_RGB2Lab)
    lab_r = cv2.cvtColor(restored.astype(np.float32), cv2.COLOR_RGB2Lab)
    lab_o[..., 0] = lab_r[..., 0]
    out = cv2.cvtColor(lab_o, cv2.COLOR_Lab2RGB)
    if _is_grey(original):
        out = np.repeat(out.mean(axis=2, keepdims=True), 3, axis=2)
    return out


def _is_grey(image: np.ndarray) -> bool:
    return bool(np.ptp(image, axis=2).max() < 1e-4)
