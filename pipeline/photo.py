"""One photo through the CPU stages: the orchestration the daemon and `albumd restore` share.

The work is split in two so that a worker can batch the GPU stage across photos:
``prepare_photo`` runs everything up to (and including) finding the faces; the GPU stage works on the
faces of many prepared photos at once; ``finish_photo`` puts the results back into each print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from .defects import DefectParams, repair_defects
from .denoise import DenoiseParams, denoise_sharpen
from .imageio import LoadedImage
from .split import SplitParams, split_prints
from .stage import Image, StageRecord
from .tone import ToneParams, correct_tone


class PipelineSettings(BaseModel):
    """Every tunable of the restoration, grouped by stage (the `pipeline:` section of the config)."""

    split: SplitParams = Field(default_factory=SplitParams)
    tone: ToneParams = Field(default_factory=ToneParams)
    defects: DefectParams = Field(default_factory=DefectParams)
    denoise: DenoiseParams = Field(default_factory=DenoiseParams)


@dataclass
class PreparedPrint:
    """One print of a photo (the whole photo when the scan holds a single print)."""

    index: int
    """1-based print number when a scan was split into several prints, 0 when it was not."""
    image: Image
    box: list[int] | None = None
    """[x, y, w, h] of the print in the upright source image; None when the whole image is the print."""
    angle: float = 0.0
    """Degrees the print was rotated by to deskew it."""
    stages: list[StageRecord] = field(default_factory=list)
    faces: list[dict[str, Any]] = field(default_factory=list)
    """Audit records of the faces found on this print."""
    before: Image | None = None
    """The print as cut from the scan, before any restoration (the left half of the compare sheet)."""


@dataclass
class PreparedPhoto:
    source: LoadedImage
    prints: list[PreparedPrint]
    stages: list[StageRecord] = field(default_factory=list)
    """Stages that ran on the whole scan before it was split."""


def prepare_photo(source: LoadedImage, settings: PipelineSettings) -> PreparedPhoto:
    """Split the scan into prints, then per print: tone, dust and scratches, denoise and sharpen.

    The splitter sees the untouched scanner background; tone comes before defect detection so the
    detector works on normalised contrast; inpainting comes before denoising so specks are not smeared
    into halos; sharpening is last.
    """
    cuts, split_record = split_prints(source.pixels, settings.split)
    several = len(cuts) > 1
    prints: list[PreparedPrint] = []
    for n, cut in enumerate(cuts, start=1):
        whole = cut.shape == "whole"
        p = PreparedPrint(
            index=n if several else 0,
            image=cut.image,
            box=None if whole else cut.box,
            angle=cut.angle,
            before=cut.image,
        )
        p.image, tone = correct_tone(p.image, settings.tone)
        p.image, defects = repair_defects(p.image, settings.defects)
        p.image, denoise = denoise_sharpen(p.image, settings.denoise)
        p.stages += [tone, defects, denoise]
        prints.append(p)
    return PreparedPhoto(source=source, prints=prints, stages=[split_record])


def finish_photo(prepared: PreparedPhoto) -> PreparedPhoto:
    """Complete each print after the GPU stage (paste-back of restored faces)."""
    return prepared
