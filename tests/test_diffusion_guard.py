"""Identity guard on the tiny random-weight model with a stand-in embedding function (test double for the
faces stage's embed_aligned_crop)."""

from __future__ import annotations

import diffusion_fixtures
import numpy as np
from albumd.pipeline.diffusion import DiffusionParams, LoadedModel, restore_with_guard, stage_record
from diffusion_fixtures import CROP, ThumbnailEmbedder, make_items

tiny_files = diffusion_fixtures.tiny_files
tiny_model = diffusion_fixtures.tiny_model

PARAMS = DiffusionParams(steps=10, crop_size=CROP, cpu_batch_size=4)


def test_random_weights_change_identity_so_originals_are_kept(tiny_model: LoadedModel) -> None:
    items = make_items(3, [0.8, 0.6, 0.4])
    calls: list[int] = []
    results = restore_with_guard(
        tiny_model, items, PARAMS, ThumbnailEmbedder(), before_chunk=lambda n: calls.append(n)
    )
    assert calls == [3, 3, 3]  # each retry round is one cross-photo batch
    for r, it in zip(results, items, strict=True):
        assert r.action == "kept_original" and np.array_equal(r.face, it.crop)
        assert [a.strength for a in r.attempts] == [it.strength, it.strength * 0.5, it.strength * 0.25]
        assert all(
            a.decision == "rejected" and a.distance is not None and a.distance > 0.45 for a in r.attempts
        )
        assert "original face kept" in r.reason
        audit = r.audit()
        assert audit["action"] == "kept_original" and len(audit["attempts"]) == 3
        assert (
            audit["seed"] == it.seed and audit["prompt"] == it.prompt and audit["identity_threshold"] == 0.45
        )


def test_same_identity_is_accepted_at_first_attempt(tiny_model: LoadedModel) -> None:
    items = make_items(2)
    const = np.ones(128)
    results = restore_with_guard(tiny_model, items, PARAMS, lambda crop: const)
    for r, it in zip(results, items, strict=True):
        assert r.action == "restored" and r.distance == 0.0 and r.strength == it.strength
        assert not np.array_equal(r.face, it.crop)
        assert [a.decision for a in r.attempts] == ["accepted"]
        assert r.outcome is not None and r.outcome.steps_run > 0


def test_retry_at_lower_strength_can_be_accepted(tiny_model: LoadedModel) -> None:
    """Rejected at full strength, accepted at half: the retry result is the one kept."""
    items = make_items(1, [0.8])
    embed = ThumbnailEmbedder()
    originals = [embed(items[0].crop)]
    p = PARAMS.model_copy(update={"guard": PARAMS.guard.model_copy(update={"threshold": 0.5})})

    class Counter:
        calls = 0

    def counted(a: np.ndarray, b: np.ndarray) -> float:
        Counter.calls += 1
        return 0.9 if Counter.calls == 1 else 0.3

    results = restore_with_guard(tiny_model, items, p, embed, original_embeddings=originals, distance=counted)
    r = results[0]
    assert [(a.strength, a.decision) for a in r.attempts] == [(0.8, "rejected"), (0.4, "accepted")]
    assert r.action == "restored" and r.strength == 0.4 and r.distance == 0.3


def test_no_face_in_restored_crop_is_a_failed_attempt(tiny_model: LoadedModel) -> None:
    items = make_items(2, [0.8, 0.6])
    embed = ThumbnailEmbedder(none_for_restored=True)
    embed.originals = {it.crop.tobytes() for it in items}
    results = restore_with_guard(tiny_model, items, PARAMS, embed)
    for r in results:
        assert r.action == "kept_original"
        assert [a.decision for a in r.attempts] == ["no_face"] * 3
        assert "no face found" in r.reason


def test_unverifiable_original_and_disabled_guard(tiny_model: LoadedModel) -> None:
    items = make_items(2)
    kept = restore_with_guard(tiny_model, items, PARAMS, lambda crop: None)
    assert all(r.action == "kept_original" and r.attempts == [] for r in kept)
    off = PARAMS.model_copy(update={"guard": PARAMS.guard.model_copy(update={"enabled": False})})
    unchecked = restore_with_guard(tiny_model, items, off, ThumbnailEmbedder())
    assert all(r.action == "restored_unchecked" and r.distance is None for r in unchecked)
    no_embed = restore_with_guard(tiny_model, items, PARAMS, None)
    assert all(r.action == "restored_unchecked" for r in no_embed)
    record = stage_record(tiny_model, PARAMS, kept + unchecked, seconds=1.5)
    j = record.to_json()
    assert j["name"] == "diffusion" and j["result"]["faces"] == 4 and j["result"]["kept_original"] == 2
    assert j["parameters"]["model"]["sha256"] == tiny_model.sha256


def test_strength_too_low_for_one_step_keeps_original(tiny_model: LoadedModel) -> None:
    items = make_items(2, [0.05, 0.5])  # 0.05 x 10 steps = no step
    results = restore_with_guard(tiny_model, items, PARAMS, lambda crop: np.zeros(128))
    assert results[0].action == "kept_original" and results[0].attempts == []
    assert "no denoising step" in results[0].reason
    assert results[1].action == "restored"
