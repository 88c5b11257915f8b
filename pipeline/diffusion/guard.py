"""Identity guard: a restored face must still be the same person, or the original face is kept.

Every face is restored at its strength; the restored crop's identity embedding is compared with the
original's. Above ``guard.threshold`` the face is retried at ``strength x factor`` for each of
``guard.retry_factors`` (all retries of a round go through the GPU together, across photos); when every
attempt fails the original face is kept. A restored crop with no detectable face (embedding ``None``) is a
failed attempt. Every attempt (strength, distance, decision) is recorded for the audit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from .loading import LoadedModel
from .params import DiffusionParams
from .restore import RestoreItem, RestoreOutcome, is_cuda_oom, restore_batch

EmbedFn = Callable[[np.ndarray], "np.ndarray | None"]
DistanceFn = Callable[[np.ndarray, np.ndarray], float]

Decision = Literal["accepted", "rejected", "no_face"]
Action = Literal["restored", "restored_unchecked", "kept_original"]


def euclidean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """dlib's face-descriptor distance."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


@dataclass
class GuardAttempt:
    strength: float
    distance: float | None  # None: the restored crop had no detectable face
    decision: Decision
    seconds: float = 0.0  # this face's share of the batch time


@dataclass
class GuardedResult:
    key: str
    face: np.ndarray  # the crop to paste back: the accepted restoration, or the original crop
    action: Action
    reason: str
    strength: float | None  # strength of the accepted attempt; None when the original was kept
    seed: int
    prompt: str
    distance: float | None  # identity distance of ``face`` to the original (0.0 when the original is kept)
    threshold: float
    attempts: list[GuardAttempt] = field(default_factory=list)
    outcome: RestoreOutcome | None = None  # the accepted attempt's outcome (timings, batch size)

    def audit(self) -> dict[str, Any]:
        """The face's diffusion fields for the audit record."""
        return {
            "action": self.action,
            "reason": self.reason,
            "prompt": self.prompt,
            "seed": self.seed,
            "strength": self.strength,
            "identity_distance": self.distance,
            "identity_threshold": self.threshold,
            "attempts": [
                {
                    "strength": round(a.strength, 6),
                    "distance": None if a.distance is None else round(a.distance, 6),
                    "decision": a.decision,
                    "seconds": round(a.seconds, 4),
                }
                for a in self.attempts
            ],
        }


def restore_with_guard(
    model: LoadedModel,
    items: Sequence[RestoreItem],
    params: DiffusionParams,
    embed: EmbedFn | None,
    *,
    original_embeddings: Sequence[np.ndarray | None] | None = None,
    distance: DistanceFn = euclidean_distance,
    is_oom: Callable[[BaseException], bool] = is_cuda_oom,
    before_chunk: Callable[[int], None] | None = None,
    unguarded: Sequence[RestoreItem] = (),
) -> list[GuardedResult]:
    """Restore ``items`` (faces of many photos) with the identity guard; results in the order of ``items``.

    ``embed`` is the faces stage's ``embed_aligned_crop`` (crop -> 128-d vector or None); ``distance`` its
    ``identity_distance``. ``original_embeddings`` may carry the embeddings already computed for the
    original crops (else ``embed(item.crop)`` is called). Without ``embed`` or with the guard disabled, the
    first restoration is taken unchecked.

    ``unguarded`` items (the tiles of the whole-photo pass: no identity to check) ride in the first GPU
    batch with the faces and are taken as restored; their results follow the faces' in the returned list."""
    g = params.guard
    check = g.enabled and embed is not None
    n = len(items)
    if original_embeddings is not None and len(original_embeddings) != n:
        raise ValueError("original_embeddings must have one entry per item")
    free = set(range(n, n + len(unguarded)))
    items = [*items, *unguarded]
    originals: list[np.ndarray | None] = [None] * n
    results: list[GuardedResult | None] = [None] * len(items)

    def kept(i: int, reason: str, attempts: list[GuardAttempt]) -> GuardedResult:
        it = items[i]
        return GuardedResult(
            key=it.key,
            face=it.crop.astype(np.float32).copy(),
            action="kept_original",
            reason=reason,
            strength=None,
            seed=int(it.seed),
            prompt=it.prompt,
            distance=0.0,
            threshold=g.threshold,
            attempts=attempts,
        )

    pending: list[int] = []
    for i in range(len(items)):
        if i in free:
            pending.append(i)
            continue
        if check:
            assert embed is not None
            originals[i] = original_embeddings[i] if original_embeddings is not None else embed(items[i].crop)
            if originals[i] is None and g.keep_original_if_unverifiable:
                results[i] = kept(
                    i, "no identity embedding for the original face; cannot verify a restore", []
                )
                continue
        pending.append(i)

    attempts: dict[int, list[GuardAttempt]] = {i: [] for i in range(len(items))}
    strengths = {i: float(items[i].strength) for i in pending}
    factors = [1.0, *g.retry_factors] if check else [1.0]
    for round_no, factor in enumerate(factors):
        if not pending:
            break
        batch: list[int] = []
        for i in pending:
            s = float(items[i].strength) * factor
            if int(params.steps * s) < 1 and round_no == 0:
                results[i] = kept(i, f"strength {s:.3g} gives no denoising step at {params.steps} steps", [])
            elif round_no > 0 and (s < g.min_strength or int(params.steps * s) < 1):
                results[i] = kept(i, _rejected_reason(attempts[i], g.threshold), attempts[i])
            else:
                strengths[i] = s
                batch.append(i)
        if not batch:
            break
        outs = restore_batch(
            model,
            [replace(items[i], strength=strengths[i]) for i in batch],
            params,
            is_oom=is_oom,
            before_chunk=before_chunk,
        )
        pending = []
        for i, out in zip(batch, outs, strict=True):
            secs = sum(v for k, v in out.timings.items() if k != "batch_s")
            if i in free:
                results[i] = _accepted(items[i], out, None, g.threshold, [], "restored_unchecked", "no face")
                continue
            if not check:
                results[i] = _accepted(items[i], out, None, g.threshold, attempts[i], "restored_unchecked")
                continue
            assert embed is not None
            emb = embed(out.restored)
            orig = originals[i]
            if emb is None:
                attempts[i].append(GuardAttempt(out.strength, None, "no_face", secs))
            elif orig is None:  # unverifiable but allowed by config
                attempts[i].append(GuardAttempt(out.strength, None, "accepted", secs))
                results[i] = _accepted(items[i], out, None, g.threshold, attempts[i], "restored_unchecked")
                continue
            else:
                d = distance(orig, emb)
                if d <= g.threshold:
                    attempts[i].append(GuardAttempt(out.strength, d, "accepted", secs))
                    results[i] = _accepted(items[i], out, d, g.threshold, attempts[i], "restored")
                    continue
                attempts[i].append(GuardAttempt(out.strength, d, "rejected", secs))
            pending.append(i)
    for i in pending:
        results[i] = kept(i, _rejected_reason(attempts[i], g.threshold), attempts[i])
    return [r for r in results if r is not None]


def _accepted(
    item: RestoreItem,
    out: RestoreOutcome,
    d: float | None,
    threshold: float,
    attempts: list[GuardAttempt],
    action: Action,
    why: str | None = None,
) -> GuardedResult:
    if why == "no face":
        reason = "not a face (whole-photo tile): no identity to guard"
    elif action == "restored":
        reason = f"identity distance {d:.3f} <= {threshold} at strength {out.strength:.3g}"
    else:
        reason = "identity guard off (disabled or no embedding function)"
        if attempts:
            reason = "original face has no identity embedding; accepted unverified by configuration"
    return GuardedResult(
        key=item.key,
        face=out.restored,
        action=action,
        reason=reason,
        strength=out.strength,
        seed=int(item.seed),
        prompt=item.prompt,
        distance=d,
        threshold=threshold,
        attempts=attempts,
        outcome=out,
    )


def _rejected_reason(attempts: list[GuardAttempt], threshold: float) -> str:
    parts = [
        f"{a.strength:.3g}: " + ("no face found" if a.distance is None else f"distance {a.distance:.3f}")
        for a in attempts
    ]
    return f"every attempt exceeded identity threshold {threshold} ({'; '.join(parts)}); original face kept"
