"""The GPU stage of a batch: every restorable face of every photo in the batch through SD 1.5 together.

Each face keeps its own prompt (the person's prompt when the user gave one), seed (from the photo's sha256
and the face's place in it, so a re-run reproduces the bytes), strength and matte; the identity guard
decides per face whether the restoration is kept. Without a model the stage is skipped and every face
record says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from albumd.pipeline.diffusion import (
    LoadedModel,
    ModelError,
    RestoreItem,
    build_prompt,
    load_pipeline,
    no_model_record,
    restore_with_guard,
    seed_for,
    stage_record,
)
from albumd.pipeline.faces import embed_aligned_crop, identity_distance
from albumd.pipeline.photo import PreparedPrint

from .background_stage import background_tiles
from .config import Config
from .logs import event
from .process import Prepared

log = logging.getLogger("albumd.faces")

PersonPrompt = Callable[[Any], str | None]
"""Looks up the prompt a user gave to the person a face belongs to (None: no prompt)."""


class FaceStage:
    def __init__(self, config: Config, model: LoadedModel | None) -> None:
        self.config = config
        self.model = model

    @classmethod
    def from_config(cls, config: Config) -> FaceStage:
        """Load the configured model once. Raises ModelError with what to fix."""
        if config.model.path is None or not config.pipeline.diffusion.enabled:
            return cls(config, None)
        started = time.perf_counter()
        try:
            model = load_pipeline(config.model, cache_dir=config.state_dir)
        except ModelError:
            raise
        except Exception as exc:  # diffusers raises many kinds for a file that is not a model
            raise ModelError(f"{config.model.path} could not be loaded as SD 1.5 weights: {exc}") from exc
        event(log, "model.loaded", seconds=round(time.perf_counter() - started, 2), **model.audit())
        return cls(config, model)

    def model_info(self) -> dict[str, Any]:
        if self.model is not None:
            return {**self.model.audit(), "status": "used", "reason": None}
        return {
            "path": str(self.config.model.path) if self.config.model.path else None,
            "sha256": None,
            "dtype": None,
            "device": None,
            "status": "skipped",
            "reason": self.skip_reason(),
        }

    def skip_reason(self) -> str:
        if not self.config.pipeline.diffusion.enabled:
            return "the diffusion stage is disabled in config (pipeline.diffusion.enabled: false)"
        return "no model configured (model.path is not set); the diffusion stage was skipped"

    def run(self, batch: list[Prepared], person_prompt: PersonPrompt | None = None) -> None:
        """Restore the faces of all photos in ``batch`` together; fill each print's restored crops."""
        params = self.config.pipeline.diffusion
        if self.model is None:
            record = no_model_record(params, self.skip_reason())
            for prep in batch:
                for p in prep.photo.prints:
                    p.stages.append(record)
                    for face in p.faces:
                        face.setdefault("action", "kept_original")
                        face.setdefault("action_reason", record.skipped)
            return
        items: list[RestoreItem] = []
        owners: list[tuple[Prepared, PreparedPrint, int]] = []
        originals = []
        for prep in batch:
            for p in prep.photo.prints:
                for face in p.found_faces:
                    if not face.restorable or face.aligned is None or face.matte_crop is None:
                        continue
                    prompt, negative = build_prompt(
                        params, person=person_prompt(face) if person_prompt else None
                    )
                    # Faces of a split scan are numbered per print; keep seeds distinct across prints.
                    place = p.index * 1000 + face.index
                    items.append(
                        RestoreItem(
                            crop=face.aligned.crop,
                            matte=face.matte_crop,
                            prompt=prompt,
                            negative_prompt=negative,
                            seed=seed_for(prep.job.sha256, place),
                            strength=params.strength,
                            key=f"{prep.job.sha256[:12]}:{place}",
                        )
                    )
                    owners.append((prep, p, face.index))
                    originals.append(face.embedding)
        tiled = background_tiles(batch, params) if params.background.enabled else []
        tile_items = [item for plan in tiled for item in plan.items]
        started = time.perf_counter()
        everything = (
            restore_with_guard(
                self.model,
                items,
                params,
                embed_aligned_crop,
                original_embeddings=originals,
                distance=identity_distance,
                unguarded=tile_items,
            )
            if items or tile_items
            else []
        )
        seconds = time.perf_counter() - started
        results, tile_results = everything[: len(items)], everything[len(items) :]
        event(
            log,
            "faces.restored",
            faces=len(items),
            tiles=len(tile_items),
            photos=len(batch),
            seconds=round(seconds, 2),
        )
        share = seconds / max(1, len(items) + len(tile_items))
        pos = 0
        for plan in tiled:
            done = tile_results[pos : pos + len(plan.items)]
            pos += len(plan.items)
            plan.apply([r.face for r in done], share * len(done))
        per_print: dict[int, list[Any]] = {}
        for (_prep, p, index), result in zip(owners, results, strict=True):
            p.restored_crops[index] = result.face
            record = next(f for f in p.faces if f["index"] == index)
            audit = result.audit()
            record.update({k: v for k, v in audit.items() if k not in ("action", "reason")})
            record["action"], record["action_reason"] = audit["action"], audit["reason"]
            per_print.setdefault(id(p), []).append(result)
        for prep in batch:
            for p in prep.photo.prints:
                mine = per_print.get(id(p), [])
                p.stages.append(stage_record(self.model, params, mine, share * len(mine)))
                for face in p.faces:
                    face.setdefault("action", "kept_original")
                    face.setdefault("action_reason", face.get("reason", "not restorable"))


__all__ = ["FaceStage", "ModelError"]
