"""Configuration of the diffusion stage: the ``model:`` and ``pipeline.diffusion`` sections of the YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

DEFAULT_PROMPT_TEMPLATE = (
    "a sharp, detailed photograph of {subject}, natural skin texture, clear eyes, realistic, film grain"
)
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, lowres, jpeg artifacts, deformed, distorted face, asymmetric eyes, extra eyes, plastic skin, "
    "cartoon, painting, illustration, oversaturated, watermark, text"
)


class ModelConfig(BaseModel):
    """Where the SD 1.5 weights are and how to run them (the ``model:`` section)."""

    path: Path | None = Field(
        None,
        description="SD 1.5 weights: a local diffusers folder (model_index.json, unet/, vae/, ...) or a "
        "single `.safetensors` checkpoint. Unset: the diffusion stage is skipped and the audit says so.",
    )
    vae_path: Path | None = Field(
        None, description="Optional replacement VAE: a diffusers folder or a single `.safetensors` file."
    )
    config_path: Path | None = Field(
        None,
        description="Diffusers config folder (model_index.json, component configs, tokenizer) used to build "
        "a pipeline from a single-file checkpoint. Unset: the SD 1.5 config shipped with albumd.",
    )
    tokenizer_path: Path | None = Field(
        None,
        description="Optional CLIP tokenizer folder (vocab.json + merges.txt); default: the shipped one.",
    )
    allow_pickle: bool = Field(
        False,
        description="Allow pickle weights (`.ckpt`, `.pt`, `.pth`, `.bin`). Off: unpickling can run "
        "arbitrary code, so only `.safetensors` are loaded unless you trust the file and turn this on.",
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="auto: the first CUDA device if there is one, else the CPU (very slow)."
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="auto: float16 on CUDA, float32 on the CPU."
    )
    compile: bool = Field(False, description="torch.compile the UNet (slow first batch, faster after).")
    channels_last: bool = Field(True, description="channels_last memory format for UNet and VAE on CUDA.")


class GuardParams(BaseModel):
    """Identity guard: a restored face must still be the same person."""

    enabled: bool = Field(True, description="Compare identity embeddings of original and restored face.")
    threshold: float = Field(
        0.45,
        gt=0,
        description="Largest accepted identity distance (dlib 128-d, Euclidean) between original and "
        "restored face. dlib's same-person threshold is 0.6; a restoration of the very same photo must stay "
        "much closer, so the default is 0.45.",
    )
    retry_factors: list[float] = Field(
        default_factory=lambda: [0.5, 0.25],
        description="After a rejection, retry at strength x each factor in turn; after the last, keep the "
        "original face.",
    )
    min_strength: float = Field(0.05, ge=0, description="Retries below this strength are not attempted.")
    keep_original_if_unverifiable: bool = Field(
        True, description="Keep the original face when the original crop itself yields no identity embedding."
    )


class BackgroundParams(BaseModel):
    """The optional low-strength pass over the whole print in tiles (``pipeline.diffusion.background``)."""

    enabled: bool = Field(
        False,
        description="Also restore the whole print (not only the faces) in overlapping tiles of `crop_size`, "
        "at low strength, in the same GPU batches as the faces. Faces are left to the face restore.",
    )
    strength: float = Field(
        0.15, gt=0, le=0.5, description="Fraction of the schedule regenerated in each tile (keep it low)."
    )
    prompt: str = Field(
        "a sharp, detailed photograph, fine film grain, natural texture",
        description="Prompt for every tile.",
    )
    negative_prompt: str = Field(
        "blurry, lowres, jpeg artifacts, painting, illustration, cartoon, oversaturated, watermark, text, "
        "face",
        description="Negative prompt for every tile.",
    )
    overlap: int = Field(64, ge=0, description="Pixels by which neighbouring tiles overlap (blended).")
    max_tiles: int = Field(
        96,
        ge=1,
        description="A print that needs more tiles is not given the pass (bounds the GPU time per photo; "
        "96 tiles of 512 px with the default overlap cover about 20 MP); the audit says so.",
    )


class DiffusionParams(BaseModel):
    """How faces are restored (the ``pipeline.diffusion`` section)."""

    enabled: bool = Field(True, description="Run the face diffusion stage when a model is configured.")
    method: Literal["diir", "img2img"] = Field(
        "diir",
        description="diir: DDIM-inversion restore (FPGA's DIIR), outside the face matte stays on the "
        "inverted trajectory; img2img: plain img2img from random noise (the baseline).",
    )
    steps: int = Field(30, ge=1, le=1000, description="DDIM steps for the full schedule (strength 1.0).")
    strength: float = Field(
        0.35, gt=0, le=1, description="Fraction of the schedule inverted and regenerated (default per face)."
    )
    guidance_scale: float = Field(5.0, ge=0, description="Classifier-free guidance scale while denoising.")
    crop_size: int = Field(512, ge=64, description="Aligned face crop size the faces stage produces.")
    prompt_template: str = Field(
        DEFAULT_PROMPT_TEMPLATE,
        description="Face prompt; `{subject}` becomes the person prompt (or `default_subject`) followed by "
        "any attributes, SDFD-style (age, hairstyle, accessories, ...).",
    )
    default_subject: str = Field(
        "a person",
        description="Subject wording when no person prompt is set. Neutral on purpose: albumd never guesses "
        "ethnicity, age or gender.",
    )
    negative_prompt: str = Field(DEFAULT_NEGATIVE_PROMPT, description="Negative prompt for every face.")
    batch_size: int | None = Field(
        None, ge=1, description="Fixed GPU batch size; unset: chosen from free VRAM (then halved on OOM)."
    )
    max_batch_size: int = Field(32, ge=1, description="Upper bound of the automatic batch size.")
    cpu_batch_size: int = Field(2, ge=1, description="Batch size on the CPU.")
    vram_per_face_gb: float = Field(
        0.9, gt=0, description="Estimated VRAM per 512 px face in a batch (fp16, CFG), for the batch size."
    )
    vram_reserve_gb: float = Field(1.5, ge=0, description="Free VRAM left untouched when sizing a batch.")
    vae_batch_size: int = Field(8, ge=1, description="Faces per VAE encode/decode call (bounds the peak).")
    guard: GuardParams = Field(default_factory=GuardParams)
    background: BackgroundParams = Field(default_factory=BackgroundParams)
