"""The optional whole-print pass: tiles cover the print, blend back without seams, keep the faces and the
print's colour, and ride in the faces' GPU batch (tiny random-weight model, real diffusers UNet/VAE)."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import diffusion_fixtures
import numpy as np
import pytest
from albumd.daemon.background_stage import background_tiles
from albumd.daemon.config import Config
from albumd.daemon.face_stage import FaceStage
from albumd.daemon.process import PhotoJob, prepare
from albumd.pipeline.diffusion import LoadedModel, restore_with_guard
from albumd.pipeline.diffusion.tiles import blend_tiles, blend_window, cut_tiles, plan_tiles
from albumd.pipeline.faces import photo_matte
from albumd.pipeline.photo import PreparedPrint, finish_photo
from hypothesis import given, settings
from hypothesis import strategies as st

tiny_files = diffusion_fixtures.tiny_files
tiny_model = diffusion_fixtures.tiny_model


@settings(deadline=None, max_examples=60)  # a loaded CI machine must not fail on time
@given(st.integers(1, 900), st.integers(1, 900), st.sampled_from([64, 160, 512]), st.integers(0, 63))
def test_tiles_cover_every_pixel_and_never_hang_over_the_edge(
    h: int, w: int, size: int, overlap: int
) -> None:
    covered = np.zeros((h, w), np.int32)
    for y, x in plan_tiles(h, w, size, overlap):
        assert (y == 0 or y + size <= h) and (x == 0 or x + size <= w)
        covered[y : y + size, x : x + size] += 1
    assert covered.min() >= 1


def test_tiles_overlap_at_least_as_asked() -> None:
    ys = sorted({y for y, _ in plan_tiles(1000, 50, 160, 40)})
    assert all(b - a <= 160 - 40 for a, b in itertools.pairwise(ys))
    assert ys[-1] + 160 == 1000


def _photo(seed: int = 0, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.random((300, 420, 3)).astype(np.float32)
    img = (
        np.asarray([[np.sin(x / 40.0) * 0.3 + 0.5 for x in range(420)]] * 300, np.float32)[..., None]
        * np.array([1.0, 0.8, 0.6], np.float32)
        + 0.05 * img
    )
    if grey:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(img, 0, 1).astype(np.float32)


def test_unchanged_tiles_blend_back_to_the_same_photo() -> None:
    img = _photo()
    tiles = cut_tiles(img, None, 128, 32)
    out = blend_tiles(img, tiles, [t.crop for t in tiles], None, 32)
    assert np.abs(out - img).max() < 2e-3


def test_blend_hides_tile_edges_keeps_faces_and_grey() -> None:
    img = _photo(grey=True)
    keep = np.zeros(img.shape[:2], np.float32)
    keep[100:180, 150:230] = 1.0
    tiles = cut_tiles(img, keep, 128, 32)
    rng = np.random.default_rng(3)
    # every tile brightened by its own amount and tinted: worst case for seams and colour
    changed = [np.clip(t.crop * rng.uniform(0.8, 1.2) + [0.05, 0.0, -0.05], 0, 1) for t in tiles]
    out = blend_tiles(img, tiles, changed, keep, 32)
    assert np.array_equal(out[100:180, 150:230], img[100:180, 150:230])  # faces are not the pass's
    assert np.abs(out[..., 0] - out[..., 1]).max() < 1e-5  # a grey print stays grey
    # no tile edge: the largest step between neighbouring pixels of the change stays small, where pasting
    # the same tiles without blending (last tile wins) shows their edges
    hard = img.copy()
    for t, c in zip(tiles, changed, strict=True):
        th, tw = min(128, img.shape[0] - t.y), min(128, img.shape[1] - t.x)
        hard[t.y : t.y + th, t.x : t.x + tw] = c[:th, :tw]
    # (the kept box has a hard edge in this test; a real face matte is soft)
    assert _largest_step(out, img, keep) < 0.02 < 0.04 < _largest_step(hard, img, keep)
    window = blend_window(128, 32)
    assert window.min() > 0 and window.max() == 1.0


def _largest_step(out: np.ndarray, img: np.ndarray, keep: np.ndarray) -> float:
    diff = (out - img).mean(axis=2)
    near_keep = cv2.dilate((keep > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    diff[near_keep] = np.nan
    return float(max(np.nanmax(np.abs(np.diff(diff, axis=0))), np.nanmax(np.abs(np.diff(diff, axis=1)))))


def test_tiles_ride_in_the_faces_batch_unguarded(tiny_model: LoadedModel) -> None:
    params = Config.model_validate(
        {"inbox": "/i", "archive": "/a", "state_dir": "/s", "pipeline": {"diffusion": {"steps": 4}}}
    ).pipeline.diffusion
    faces = diffusion_fixtures.make_items(2)
    tiles = diffusion_fixtures.make_items(3, strengths=[0.25] * 3)
    sizes: list[int] = []
    results = restore_with_guard(
        tiny_model,
        faces,
        params.model_copy(update={"batch_size": 8}),
        diffusion_fixtures.ThumbnailEmbedder(),
        unguarded=tiles,
        before_chunk=sizes.append,
    )
    assert len(results) == 5
    assert sizes[0] == 5  # one GPU batch for faces and tiles together
    assert all(r.action == "restored_unchecked" and "tile" in r.reason for r in results[2:])
    assert all(r.attempts for r in results[:2])  # the faces went through the guard


@pytest.mark.timeout(600)
def test_face_stage_runs_the_pass_on_a_real_photo(tiny_model: LoadedModel, photos_dir: Path) -> None:
    config = Config.model_validate(
        {
            "inbox": "/i",
            "archive": "/a",
            "state_dir": "/s",
            "pipeline": {
                "faces": {"align": {"crop_size": 160}},
                "diffusion": {"steps": 4, "crop_size": 160, "background": {"enabled": True, "overlap": 32}},
            },
        }
    )
    data = (photos_dir / "pair_a.png").read_bytes()
    prep = prepare(PhotoJob(data=data, rel_path="A/pair_a.png", album="A", archive_key="A/pair_a"), config)
    p = prep.photo.prints[0]
    before = p.image.copy()
    keep = _faces_matte(p)
    plans = background_tiles([prep], config.pipeline.diffusion)
    assert len(plans) == 1 and len(plans[0].items) == len(plan_tiles(*before.shape[:2], 160, 32))
    assert len({it.seed for it in plans[0].items}) == len(plans[0].items)

    FaceStage(config, tiny_model).run([prep])
    record = next(s for s in p.stages if s.name == "background")
    assert record.skipped is None and record.result["tiles"] == len(plans[0].items)
    assert record.result["mean_abs_change"] > 0
    assert p.image.shape == before.shape
    untouched = keep > 0.999
    assert untouched.any() and np.abs(p.image[untouched] - before[untouched]).max() < 2e-3
    assert np.abs(p.image - before)[~untouched].mean() > 0
    finish_photo(prep.photo, config.pipeline)

    small = config.model_copy(deep=True)
    small.pipeline.diffusion.background.max_tiles = 1
    prep2 = prepare(PhotoJob(data=data, rel_path="A/pair_a.png", album="A", archive_key="A/pair_a"), small)
    assert background_tiles([prep2], small.pipeline.diffusion) == []
    skip = next(s for s in prep2.photo.prints[0].stages if s.name == "background")
    assert "max_tiles=1" in (skip.skipped or "")


def _faces_matte(p: PreparedPrint) -> np.ndarray:
    assert p.found_faces
    return photo_matte(p.image.shape, p.found_faces)
