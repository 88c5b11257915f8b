"""Plans the optional whole-print pass (``pipeline.diffusion.background``) for the prints of a GPU batch.

The tiles of every print in the batch join the faces in one GPU call (see FaceStage.run); this module cuts
them, gives each a reproducible seed, and puts the results back into the print with its audit record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from albumd.pipeline.diffusion import DiffusionParams, RestoreItem, seed_for
from albumd.pipeline.diffusion.tiles import Tile, blend_tiles, cut_tiles, plan_tiles
from albumd.pipeline.faces import photo_matte
from albumd.pipeline.photo import PreparedPrint
from albumd.pipeline.stage import StageRecord, skipped

from .process import Prepared

# Tile seeds live far above any face's place (print * 1000 + face index) so the two never share one.
TILE_SEED_BASE = 10_000_000


@dataclass
class BackgroundPlan:
    print_: PreparedPrint
    params: DiffusionParams
    tiles: list[Tile]
    keep: np.ndarray | None
    items: list[RestoreItem] = field(default_factory=list)

    def apply(self, restored: list[np.ndarray], seconds: float) -> None:
        """Blend the restored tiles into the print and record the pass."""
        bg = self.params.background
        before = self.print_.image
        self.print_.image = blend_tiles(before, self.tiles, restored, self.keep, bg.overlap)
        changed = np.abs(self.print_.image - before).mean(axis=2)
        self.print_.stages.append(
            StageRecord(
                name="background",
                seconds=seconds,
                parameters=bg.model_dump(mode="json") | {"tile_size": self.params.crop_size},
                result={
                    "tiles": len(self.tiles),
                    "seeds": [it.seed for it in self.items],
                    "faces_kept_out": len(self.print_.found_faces),
                    "mean_abs_change": round(float(changed.mean()), 5),
                },
            )
        )


def background_tiles(batch: list[Prepared], params: DiffusionParams) -> list[BackgroundPlan]:
    """One plan per print of the batch that gets the pass; prints over ``max_tiles`` get a skip record."""
    bg = params.background
    size = params.crop_size
    plans = []
    for prep in batch:
        for p in prep.photo.prints:
            h, w = p.image.shape[:2]
            count = len(plan_tiles(h, w, size, bg.overlap))
            if count > bg.max_tiles:
                reason = (
                    f"{w}x{h} print needs {count} tiles of {size} px, more than "
                    f"pipeline.diffusion.background.max_tiles={bg.max_tiles}"
                )
                p.stages.append(skipped("background", reason, bg.model_dump(mode="json")))
                continue
            keep = photo_matte(p.image.shape, p.found_faces) if p.found_faces else None
            tiles = cut_tiles(p.image, keep, size, bg.overlap)
            plan = BackgroundPlan(p, params, tiles, keep)
            for n, tile in enumerate(tiles):
                place = TILE_SEED_BASE + p.index * 100_000 + n
                plan.items.append(
                    RestoreItem(
                        crop=tile.crop,
                        matte=tile.matte,
                        prompt=bg.prompt,
                        negative_prompt=bg.negative_prompt,
                        seed=seed_for(prep.job.sha256, place),
                        strength=bg.strength,
                        key=f"{prep.job.sha256[:12]}:tile{p.index}.{n}",
                    )
                )
            plans.append(plan)
    return plans
