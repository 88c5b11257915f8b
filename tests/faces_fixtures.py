"""Shared, process-wide cached inputs of the faces tests (detection on the real photos runs once)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from albumd.pipeline.faces import Face, FacesParams, find_faces
from albumd.pipeline.imageio import load_image
from albumd.pipeline.stage import StageRecord

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "photos"


@cache
def manifest() -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for line in (PHOTOS / "MANIFEST.tsv").read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("file\t"):
            continue
        name, lo, hi, *_ = line.split("\t")
        out[name] = (int(lo), int(hi))
    return out


@cache
def photo(name: str) -> np.ndarray:
    img = load_image((PHOTOS / name).read_bytes()).pixels
    img.setflags(write=False)
    return img


@cache
def detected(name: str) -> tuple[list[Face], StageRecord]:
    """``find_faces`` with the default settings on a test photo (cached for the whole session)."""
    return find_faces(photo(name), FacesParams())
