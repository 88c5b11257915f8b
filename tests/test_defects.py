"""Defects: the mask finds scratches and dust, inpainting brings the damaged pixels back, grain is spared."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from albumd.pipeline.defects import DefectParams, repair_defects
from albumd.pipeline.degrade import DegradeSpec, degrade
from oldphoto_helpers import clean


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-12)))


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_scratches_and_dust_found_and_repaired(name: str) -> None:
    img = clean(name)
    spec = DegradeSpec(fade=0.0, cast="none", grain=0.01, scratches=6, dust=120)
    aged, masks = degrade(img, spec, np.random.default_rng(2))
    out, record = repair_defects(aged, DefectParams())
    truth = masks["defect"] > 0
    found = record.artifacts["defect_mask"] > 0
    assert found.shape == truth.shape and record.artifacts["defect_mask"].dtype == np.float32
    near = cv2.dilate(truth.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    precision = (found & near).sum() / found.sum()
    recall = (found & truth).sum() / truth.sum()
    assert precision > 0.4 and recall > 0.35
    assert _psnr(out[truth], img[truth]) > _psnr(aged[truth], img[truth]) + 2.5
    assert record.result["coverage_percent"] == pytest.approx(found.mean() * 100, abs=1e-3)


def test_grain_is_not_a_scratch() -> None:
    rng = np.random.default_rng(0)
    img = np.clip(0.5 + rng.normal(0, 0.03, (256, 256)), 0, 1).astype(np.float32)
    img = np.repeat(img[:, :, None], 3, axis=2)
    _, record = repair_defects(img, DefectParams())
    assert record.result["coverage_percent"] < 0.5


def test_halftone_screen_is_not_dust() -> None:
    yy, xx = np.mgrid[0:256, 0:256]
    dots = 0.5 + 0.25 * np.sin(xx * 2 * np.pi / 4) * np.sin(yy * 2 * np.pi / 4)
    img = np.repeat(dots[:, :, None], 3, axis=2).astype(np.float32)
    _, record = repair_defects(img, DefectParams())
    assert record.result["coverage_percent"] < 1.0


def test_protect_keeps_faces_conservative() -> None:
    img = clean("astronaut")
    spec = DegradeSpec(fade=0.0, cast="none", grain=0.01, scratches=6, dust=120)
    aged, _ = degrade(img, spec, np.random.default_rng(3))
    protect = np.zeros(img.shape[:2], np.float32)
    protect[60:260, 150:330] = 1.0
    _, free = repair_defects(aged, DefectParams())
    _, guarded = repair_defects(aged, DefectParams(), protect=protect)
    inside = protect > 0
    assert guarded.artifacts["defect_mask"][inside].sum() < free.artifacts["defect_mask"][inside].sum()
    assert np.array_equal(
        guarded.artifacts["defect_mask"][~inside] > 0, free.artifacts["defect_mask"][~inside] > 0
    ) or (
        guarded.artifacts["defect_mask"][~inside].sum() >= 0.9 * free.artifacts["defect_mask"][~inside].sum()
    )


@pytest.mark.parametrize("shape", [(1, 1, 3), (8, 8, 3), (64, 64, 3)])
def test_small_and_blank_inputs(shape: tuple[int, int, int]) -> None:
    for value in (0.0, 1.0):
        img = np.full(shape, value, np.float32)
        out, record = repair_defects(img, DefectParams())
        assert out.shape == shape and record.artifacts["defect_mask"].shape == shape[:2]
        assert record.result["coverage_percent"] == 0.0
