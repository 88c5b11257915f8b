"""SD 1.5 face restoration: DDIM-inversion restore in cross-photo batches, per-face prompts, identity
guard. Importing this package does not import torch; loading a model does.

Typical use (the worker)::

    model = load_pipeline(cfg.model, cache_dir=state_dir)            # once, at start
    items = [RestoreItem(crop, matte, *build_prompt(params, person), seed=seed_for(sha, i), ...), ...]
    results = restore_with_guard(model, items, params, embed_aligned_crop, distance=identity_distance)
"""

from .guard import GuardAttempt, GuardedResult, euclidean_distance, restore_with_guard
from .loading import (
    SHIPPED_CONFIG,
    LoadedModel,
    ModelError,
    check_model,
    doctor_text,
    load_pipeline,
    no_model_record,
    weights_sha256,
)
from .params import BackgroundParams, DiffusionParams, GuardParams, ModelConfig
from .prompts import build_prompt, seed_for
from .restore import (
    DiffusionOOMError,
    RestoreItem,
    RestoreOutcome,
    choose_batch_size,
    is_cuda_oom,
    restore_batch,
)
from .stage import stage_record

__all__ = [
    "SHIPPED_CONFIG",
    "BackgroundParams",
    "DiffusionOOMError",
    "DiffusionParams",
    "GuardAttempt",
    "GuardParams",
    "GuardedResult",
    "LoadedModel",
    "ModelConfig",
    "ModelError",
    "RestoreItem",
    "RestoreOutcome",
    "build_prompt",
    "check_model",
    "choose_batch_size",
    "doctor_text",
    "euclidean_distance",
    "is_cuda_oom",
    "load_pipeline",
    "no_model_record",
    "restore_batch",
    "restore_with_guard",
    "seed_for",
    "stage_record",
    "weights_sha256",
]
