"""Settings of the faces stage (the ``pipeline.faces`` section of the user's config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DetectParams(BaseModel):
    min_detect_px: int = Field(
        36,
        ge=16,
        description="Smallest face (box side, photo pixels) searched for; smaller faces are not found.",
    )
    min_restore_px: int = Field(
        40,
        ge=16,
        description="Faces smaller than this (box side, photo pixels) are recorded in the audit "
        "but not restored.",
    )
    hog_pixel_budget: int = Field(
        3_000_000,
        ge=100_000,
        description="Most pixels of the working copy the HOG proposal passes run on (caps the upsampling).",
    )
    hog_threshold: float = Field(
        -0.5,
        description="HOG score above which a window becomes a candidate for CNN verification "
        "(low on purpose: the CNN decides, HOG only proposes).",
    )
    hog_angles: list[float] = Field(
        default_factory=lambda: [0.0, -20.0, 20.0],
        description="Rotations (degrees) of the photo the HOG proposal pass runs on, for tilted heads.",
    )
    tilted_scale: float = Field(
        0.8,
        gt=0,
        le=1,
        description="The tilted HOG passes run at this fraction of the upright pass's scale (they are for "
        "heads tilted in faces a little larger than the smallest).",
    )
    try_orientations: bool = Field(
        True,
        description="When nothing is found upright, also look at the photo turned 90, 270 and 180 degrees "
        "(prints scanned sideways).",
    )
    orientation_hog_threshold: float = Field(
        0.0,
        description="HOG score a candidate needs in the sideways/upside-down retries (a face in a turned "
        "print is as clear as an upright one; this keeps the retries cheap on photos without faces).",
    )
    cnn_pixel_budget: int = Field(
        150_000,
        ge=0,
        description="Pixels of the downscaled copy the whole-photo CNN (MMOD) pass runs on; it finds large "
        "faces in any pose that HOG misses. 0 disables the pass.",
    )
    cnn_threshold: float = Field(
        0.6,
        description="Least MMOD confidence for a face to be kept (a verified candidate or a CNN-pass face).",
    )
    max_candidates: int = Field(12, ge=1, description="Most HOG candidates verified with the CNN per photo.")
    time_budget_s: float = Field(
        12.0,
        gt=0,
        description="Soft limit on one photo's detection time: once spent, remaining candidates and "
        "orientation retries are skipped (and the record says so).",
    )
    nms_iou: float = Field(0.3, ge=0, le=1, description="Boxes overlapping more than this are the same face.")


class AlignParams(BaseModel):
    crop_size: int = Field(512, ge=64, description="Side of the aligned face crop handed to the restorer.")
    padding: Literal["reflect", "edge", "constant"] = Field(
        "reflect", description="How a crop is filled where it reaches past the photo's edge."
    )


class MatteParams(BaseModel):
    guided_radius: int = Field(
        8, ge=1, description="Guided-filter radius in crop pixels (512 crop) for refining the face mask."
    )
    guided_eps: float = Field(
        1e-3, gt=0, description="Guided-filter regulariser; smaller follows the photo's edges more closely."
    )
    feather: float = Field(
        0.10, gt=0, le=0.5, description="Width of the soft band of the face mask, as a fraction of the crop."
    )


class PasteParams(BaseModel):
    color_match: bool = Field(True, description="Match the restored face's tone and colour to the original.")
    grain_match: bool = Field(True, description="Add the photo's grain to a restored face that is smoother.")
    ownership_band: float = Field(
        0.08,
        gt=0,
        description="Where two faces' regions meet, each matte fades out over this band (in face-ellipse "
        "radii) before the border, so no face's pixels cover another's.",
    )


class FacesParams(BaseModel):
    """Detection, alignment, identity, matte and paste-back of faces."""

    enabled: bool = Field(True, description="Find faces at all (off: no face is restored).")
    embed: bool = Field(True, description="Compute the 128-d identity embedding of each face.")
    detect: DetectParams = Field(default_factory=DetectParams)
    align: AlignParams = Field(default_factory=AlignParams)
    matte: MatteParams = Field(default_factory=MatteParams)
    paste: PasteParams = Field(default_factory=PasteParams)
