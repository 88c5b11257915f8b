"""The diffusion stage's record for the audit, built from a batch's guarded results."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..stage import StageRecord
from .guard import GuardedResult
from .loading import LoadedModel
from .params import DiffusionParams


def stage_record(
    model: LoadedModel, params: DiffusionParams, results: Sequence[GuardedResult], seconds: float = 0.0
) -> StageRecord:
    """One ``diffusion`` StageRecord for the faces of one photo (pass that photo's results and its share of
    the batch time). Per-face details (prompt, seed, strength, attempts) go in the audit's ``faces`` via
    :meth:`GuardedResult.audit`; this record carries the parameters, the model and the counts."""
    actions = Counter(r.action for r in results)
    return StageRecord(
        name="diffusion",
        seconds=seconds,
        parameters={**params.model_dump(mode="json"), "model": model.audit()},
        result={
            "faces": len(results),
            "restored": actions.get("restored", 0) + actions.get("restored_unchecked", 0),
            "kept_original": actions.get("kept_original", 0),
            "unchecked": actions.get("restored_unchecked", 0),
            "attempts": sum(len(r.attempts) for r in results),
            "faces_detail": [{"key": r.key, **r.audit()} for r in results],
        },
    )
