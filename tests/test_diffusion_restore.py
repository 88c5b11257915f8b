"""restore_batch on the tiny random-weight SD 1.5: cross-photo batches with per-face prompts, seeds and
strengths; determinism; the DDIM-inversion property against the img2img baseline; OOM backoff."""

from __future__ import annotations

import diffusion_fixtures
import numpy as np
import pytest
from albumd.pipeline.diffusion import (
    DiffusionOOMError,
    DiffusionParams,
    LoadedModel,
    RestoreItem,
    choose_batch_size,
    restore_batch,
)
from diffusion_fixtures import CROP, face_matte, latent_outside, make_items

tiny_files = diffusion_fixtures.tiny_files
tiny_model = diffusion_fixtures.tiny_model

PARAMS = DiffusionParams(steps=10, crop_size=CROP, guidance_scale=4.0, cpu_batch_size=4)


def test_batch_is_deterministic_and_per_item(tiny_model: LoadedModel) -> None:
    items = make_items(5)
    first = restore_batch(tiny_model, items, PARAMS)
    again = restore_batch(tiny_model, items, PARAMS)
    assert [o.key for o in first] == [it.key for it in items]
    for a, b, it in zip(first, again, items, strict=True):
        assert a.restored.shape == (CROP, CROP, 3) and a.restored.dtype == np.float32
        assert a.restored.min() >= 0.0 and a.restored.max() <= 1.0
        assert a.restored.tobytes() == b.restored.tobytes()
        assert a.steps_run == int(PARAMS.steps * it.strength) and a.seed == it.seed
        assert {"encode_s", "invert_s", "denoise_s", "decode_s", "batch_s"} <= set(a.timings)
    assert {o.batch_size for o in first} == {4, 1}  # 5 faces at batch size 4


def test_result_does_not_depend_on_batch_companions(tiny_model: LoadedModel) -> None:
    """A face's output is its own: other faces' prompts, seeds and strengths do not leak into it."""
    items = make_items(4)
    together = restore_batch(tiny_model, items, PARAMS)
    alone = restore_batch(tiny_model, [items[2]], PARAMS)[0]
    np.testing.assert_allclose(together[2].restored, alone.restored, atol=2e-4)


def test_prompt_and_seed_matter(tiny_model: LoadedModel) -> None:
    base = make_items(1, [0.6])[0]
    p = PARAMS.model_copy(update={"method": "img2img"})
    a = restore_batch(tiny_model, [base], p)[0].restored
    other_seed = restore_batch(tiny_model, [RestoreItem(**{**base.__dict__, "seed": 7})], p)[0].restored
    other_prompt = restore_batch(tiny_model, [RestoreItem(**{**base.__dict__, "prompt": "an old man"})], p)[0]
    assert not np.array_equal(a, other_seed)
    assert not np.array_equal(a, other_prompt.restored)


def test_diir_keeps_outside_of_matte_on_inverted_trajectory_img2img_does_not(tiny_model: LoadedModel) -> None:
    items = make_items(4, [0.4, 0.6, 0.8, 0.5])
    diir = restore_batch(tiny_model, items, PARAMS, keep_latents=True)
    img2img = restore_batch(
        tiny_model, items, PARAMS.model_copy(update={"method": "img2img"}), keep_latents=True
    )
    for d, g, it in zip(diir, img2img, items, strict=True):
        assert d.latent_input is not None and d.latent_final is not None
        assert g.latent_input is not None and g.latent_final is not None
        z0 = latent_outside(d.latent_input, it.matte)
        assert z0.size > 0
        diir_err = np.abs(latent_outside(d.latent_final, it.matte) - z0).mean()
        img2img_err = np.abs(latent_outside(g.latent_final, it.matte) - z0).mean()
        assert diir_err < 1e-5  # outside the matte DIIR ends exactly on the photo's own latent
        assert img2img_err > 0.05 and img2img_err > 1000 * diir_err
        # and the face itself was regenerated
        inside = face_matte(d.latent_final.shape[-1]) > 0.99
        assert np.abs(d.latent_final[:, inside] - d.latent_input[:, inside]).mean() > 0.01
    # in pixels, outside the matte, DIIR stays nearer the input than img2img does (random VAE: loosely)
    outside = face_matte() == 0
    diir_px = np.mean(
        [np.abs(d.restored - it.crop)[outside].mean() for d, it in zip(diir, items, strict=True)]
    )
    g_px = np.mean(
        [np.abs(g.restored - it.crop)[outside].mean() for g, it in zip(img2img, items, strict=True)]
    )
    assert diir_px <= g_px * 1.05


def test_zero_strength_returns_the_crop(tiny_model: LoadedModel) -> None:
    items = make_items(2, [0.0, 0.5])
    out = restore_batch(tiny_model, items, PARAMS)
    assert np.array_equal(out[0].restored, items[0].crop) and out[0].steps_run == 0
    assert not np.array_equal(out[1].restored, items[1].crop)


class FakeOOM(RuntimeError):
    pass


def test_oom_halves_the_batch_and_retries(tiny_model: LoadedModel) -> None:
    items = make_items(5)
    reference = restore_batch(tiny_model, items, PARAMS.model_copy(update={"batch_size": 2}))
    seen: list[int] = []
    raised = []

    def before_chunk(size: int) -> None:
        seen.append(size)
        if size > 2 and not raised:
            raised.append(size)
            raise FakeOOM("CUDA out of memory (fake)")

    out = restore_batch(
        tiny_model,
        items,
        PARAMS.model_copy(update={"batch_size": 4}),
        is_oom=lambda e: isinstance(e, FakeOOM),
        before_chunk=before_chunk,
    )
    assert seen == [4, 2, 2, 1]
    assert all(o.oom_backoffs == 1 for o in out)
    for a, b in zip(out, reference, strict=True):
        np.testing.assert_allclose(a.restored, b.restored, atol=2e-4)


def test_oom_at_batch_one_tries_slicing_then_gives_up(tiny_model: LoadedModel) -> None:
    def always(size: int) -> None:
        raise FakeOOM("out of memory")

    with pytest.raises(DiffusionOOMError):
        restore_batch(
            tiny_model, make_items(2), PARAMS, is_oom=lambda e: isinstance(e, FakeOOM), before_chunk=always
        )
    # a different error is not swallowed
    with pytest.raises(ValueError, match="boom"):
        restore_batch(
            tiny_model,
            make_items(1),
            PARAMS,
            before_chunk=lambda s: (_ for _ in ()).throw(ValueError("boom")),
        )


def test_batch_size_from_free_vram(tiny_model: LoadedModel) -> None:
    import torch

    fake_cuda = LoadedModel(
        pipe=None, path=tiny_model.path, sha256=None, vae_path=None, vae_sha256=None,
        device=torch.device("cuda"), dtype=torch.float16,
    )  # fmt: skip
    p = DiffusionParams()
    gib = 2**30
    assert choose_batch_size(fake_cuda, p, 100, 512, lambda: (int(20 * gib), 80 * gib)) == int(
        (20 - 1.5) / 0.9
    )
    assert (
        choose_batch_size(fake_cuda, p, 100, 512, lambda: (int(70 * gib), 80 * gib)) == 32
    )  # max_batch_size
    assert choose_batch_size(fake_cuda, p, 3, 512, lambda: (int(70 * gib), 80 * gib)) == 3
    assert choose_batch_size(fake_cuda, p, 10, 512, lambda: (int(1 * gib), 80 * gib)) == 1
    assert choose_batch_size(tiny_model, p, 10, 512) == p.cpu_batch_size
    assert choose_batch_size(tiny_model, p.model_copy(update={"batch_size": 7}), 10, 512) == 7


def test_bad_items_are_rejected(tiny_model: LoadedModel) -> None:
    item = make_items(1)[0]
    with pytest.raises(ValueError, match="matte shape"):
        restore_batch(tiny_model, [RestoreItem(**{**item.__dict__, "matte": item.matte[:10]})], PARAMS)
    with pytest.raises(ValueError, match="strength"):
        restore_batch(tiny_model, [RestoreItem(**{**item.__dict__, "strength": 1.5})], PARAMS)
    assert restore_batch(tiny_model, [], PARAMS) == []


def test_ddim_inversion_reconstructs_far_better_than_img2img(tiny_model: LoadedModel) -> None:
    """With the whole crop in the matte and no guidance, DIIR's inversion + denoise returns near its start
    (the DDIM-inversion property); img2img from random noise does not."""
    items = make_items(2, [0.3, 0.6])
    for it in items:
        it.matte = np.ones_like(it.matte)
    p = PARAMS.model_copy(update={"guidance_scale": 1.0})
    diir = restore_batch(tiny_model, items, p, keep_latents=True)
    img2img = restore_batch(tiny_model, items, p.model_copy(update={"method": "img2img"}), keep_latents=True)
    for d, g in zip(diir, img2img, strict=True):
        assert d.latent_final is not None and d.latent_input is not None and g.latent_final is not None
        d_err = np.abs(d.latent_final - d.latent_input).mean()
        g_err = np.abs(g.latent_final - d.latent_input).mean()
        assert d_err * 3 < g_err


@pytest.mark.slow
def test_full_size_512_crops(tiny_model: LoadedModel) -> None:
    """The code path at the real crop size (slow on a CPU: ~10 s per face with the tiny model)."""
    items = make_items(2, [0.3, 0.5], size=512)
    out = restore_batch(
        tiny_model, items, PARAMS.model_copy(update={"steps": 6, "crop_size": 512}), keep_latents=True
    )
    for o, it in zip(out, items, strict=True):
        assert o.restored.shape == (512, 512, 3) and o.latent_final is not None
        assert o.latent_final.shape == (4, 64, 64)
        outside = latent_outside(o.latent_final, it.matte)
        assert o.latent_input is not None
        assert np.abs(outside - latent_outside(o.latent_input, it.matte)).max() < 1e-4
