"""Loading SD 1.5 from local files only, hashing the weights, and checking the configuration."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _offline
from .params import DiffusionParams, ModelConfig

SHIPPED_CONFIG = Path(__file__).resolve().parent / "sd15_config"
SAFE_SUFFIXES = {".safetensors"}
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
HASH_CACHE_NAME = "model_sha256.json"
_CHUNK = 8 << 20


class ModelError(Exception):
    """The configured model cannot be used; the message says what to change."""


@dataclass
class LoadedModel:
    """A ready SD 1.5 pipeline plus what the audit needs to know about it."""

    pipe: Any  # diffusers.StableDiffusionPipeline
    path: Path
    sha256: str | None
    vae_path: Path | None
    vae_sha256: str | None
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    compiled: bool = False
    channels_last: bool = False

    def audit(self) -> dict[str, Any]:
        """The audit record's ``model`` object."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "vae_path": str(self.vae_path) if self.vae_path else None,
            "vae_sha256": self.vae_sha256,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "compiled": self.compiled,
        }


# --------------------------------------------------------------------------------------------- hashing
def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    suffixes = SAFE_SUFFIXES | PICKLE_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)


def weights_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """sha256 of a weights file; for a diffusers folder, of the sorted ``"<relpath> <sha256>"`` lines of its
    weight files. Each file's digest is cached in ``cache_dir/model_sha256.json`` keyed by
    path + size + mtime, so multi-GB weights are read once, not on every start."""
    path = Path(path).resolve()
    cache_file = cache_dir / HASH_CACHE_NAME if cache_dir is not None else None
    cache: dict[str, str] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            loaded = json.loads(cache_file.read_text())
            cache = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            cache = {}
    dirty = False

    def one(p: Path) -> str:
        nonlocal dirty
        st = p.stat()
        key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
        if key not in cache:
            cache[key] = _file_sha256(p)
            dirty = True
        return cache[key]

    if path.is_dir():
        lines = [f"{p.relative_to(path).as_posix()} {one(p)}" for p in _weight_files(path)]
        digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    else:
        digest = one(path)
    if dirty and cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".model_sha256.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, indent=1, sort_keys=True)
        os.replace(tmp, cache_file)
    return digest


# --------------------------------------------------------------------------------------------- checks
def _pickle_refusal(path: Path) -> str:
    return (
        f"{path} is a pickle file ({path.suffix}); albumd refuses pickle weights because unpickling "
        "can run arbitrary code from the file. Use a `.safetensors` version of the model, or, only if you "
        "trust where the file came from, set `model.allow_pickle: true`."
    )


def _folder_problems(folder: Path, allow_pickle: bool, what: str) -> list[str]:
    problems: list[str] = []
    if not (folder / "model_index.json").is_file():
        return [f"{what} {folder} is a folder but has no model_index.json (not a diffusers pipeline folder)."]
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (folder / sub).is_dir():
            problems.append(f"{what} {folder} has no `{sub}/` subfolder.")
    for sub in ("unet", "vae", "text_encoder"):
        d = folder / sub
        if not d.is_dir():
            continue
        files = _weight_files(d)
        safe = [p for p in files if p.suffix in SAFE_SUFFIXES]
        if not files:
            problems.append(f"{what} {d} holds no weights.")
        elif not safe and not allow_pickle:
            problems.append(_pickle_refusal(files[0]))
    return problems


def _checkpoint_problems(path: Path) -> list[str]:
    """Read only the safetensors header: is this an SD 1.x checkpoint?"""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as exc:
        return [
            f"{path} cannot be read as safetensors ({exc}); the file may be truncated or not safetensors."
        ]
    if any(k.startswith("cond_stage_model.model.") or k.startswith("conditioner.") for k in keys):
        return [f"{path} looks like SD 2.x/SDXL (OpenCLIP text encoder); albumd needs an SD 1.x checkpoint."]
    missing = [
        part
        for part, prefix in (
            ("UNet", "model.diffusion_model."),
            ("VAE", "first_stage_model."),
            ("CLIP text encoder", "cond_stage_model.transformer."),
        )
        if not any(k.startswith(prefix) for k in keys)
    ]
    if missing:
        return [f"{path} lacks the {', '.join(missing)} weights of an SD 1.x checkpoint."]
    return []


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )


def check_model(config: ModelConfig) -> list[str]:
    """What is wrong with the ``model:`` section, each with how to fix it; ``[]`` when usable (or unset).

    Cheap: reads safetensors headers and folder listings, never the weights. For ``albumd doctor``."""
    problems: list[str] = []
    if config.path is None:
        return problems
    path = Path(config.path).expanduser()
    if not path.exists():
        return [
            f"model.path {path} does not exist; point it at an SD 1.5 diffusers folder or .safetensors file."
        ]
    if path.is_dir():
        problems += _folder_problems(path, config.allow_pickle, "model.path")
    elif path.suffix in PICKLE_SUFFIXES:
        if not config.allow_pickle:
            problems.append(_pickle_refusal(path))
    elif path.suffix in SAFE_SUFFIXES:
        problems += _checkpoint_problems(path)
        cfg = Path(config.config_path).expanduser() if config.config_path else SHIPPED_CONFIG
        if not (cfg / "model_index.json").is_file():
            problems.append(
                f"model.config_path {cfg} has no model_index.json (needs a diffusers config folder)."
            )
        tok = Path(config.tokenizer_path).expanduser() if config.tokenizer_path else cfg / "tokenizer"
        if not _has_tokenizer(tok):
            problems.append(
                f"tokenizer folder {tok} has neither tokenizer.json nor vocab.json + merges.txt; "
                "set model.tokenizer_path to a CLIP tokenizer folder."
            )
    else:
        problems.append(
            f"model.path {path} has an unknown suffix {path.suffix!r}; "
            "expected a folder or a .safetensors file."
        )
    if config.vae_path is not None:
        vae = Path(config.vae_path).expanduser()
        if not vae.exists():
            problems.append(f"model.vae_path {vae} does not exist.")
        elif vae.is_file() and vae.suffix in PICKLE_SUFFIXES and not config.allow_pickle:
            problems.append(_pickle_refusal(vae))
        elif vae.is_file() and vae.suffix not in SAFE_SUFFIXES | PICKLE_SUFFIXES:
            problems.append(f"model.vae_path {vae} has an unknown suffix {vae.suffix!r}.")
    return problems


def doctor_text(config: ModelConfig) -> list[str]:
    """Lines for ``albumd doctor``'s model section (state, problems, and how to configure a model)."""
    if config.path is None:
        return [
            "model: none configured -- faces are not restored with diffusion (every other stage runs; the "
            "audit records the diffusion stage as skipped).",
            "  To enable it, put Stable Diffusion 1.5 weights on this machine (albumd never downloads",
            "  them) and set in the config file:",
            "      model:",
            "        path: /srv/models/v1-5-pruned-emaonly.safetensors   # a single .safetensors checkpoint",
            "        # or a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/)",
            "        # vae_path: /srv/models/vae-ft-mse-840000-ema-pruned.safetensors   (optional)",
            "  or the environment: ALBUMD_MODEL__PATH=/srv/models/v1-5-pruned-emaonly.safetensors",
            "  Pickle files (.ckpt) are refused unless model.allow_pickle is true (unpickling runs code).",
        ]
    problems = check_model(config)
    lines = [f"model: {config.path}"]
    lines += [f"  problem: {p}" for p in problems] or ["  ok (files present and in a supported format)"]
    try:
        import torch

        if not torch.cuda.is_available():
            lines.append("  note: no CUDA device; diffusion on the CPU takes minutes per face.")
    except ImportError:  # pragma: no cover
        lines.append("  problem: torch is not installed.")
    return lines


def no_model_record(params: DiffusionParams | None = None, reason: str | None = None) -> Any:
    """The stage record when no model is configured (``model.path`` unset)."""
    from ..stage import skipped

    return skipped(
        "diffusion",
        reason or "no model configured (model.path is unset); faces were not restored with diffusion",
        params,
    )


# --------------------------------------------------------------------------------------------- loading
def _resolve_device_dtype(config: ModelConfig) -> tuple[Any, Any]:
    import torch

    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    if config.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, config.dtype)
    return device, dtype


def _load_vae(vae_path: Path, config_dir: Path, dtype: Any) -> Any:
    from diffusers import AutoencoderKL

    if vae_path.is_dir():
        sub = "vae" if (vae_path / "vae" / "config.json").is_file() else None
        return AutoencoderKL.from_pretrained(
            str(vae_path), subfolder=sub, local_files_only=True, torch_dtype=dtype
        )
    return AutoencoderKL.from_single_file(
        str(vae_path), config=str(config_dir), subfolder="vae", local_files_only=True, torch_dtype=dtype
    )


def prepare_pipeline(pipe: Any, device: Any, dtype: Any, *, channels_last: bool, compile_unet: bool) -> Any:
    """DDIM scheduler, SDPA attention, device/dtype, channels_last, optional torch.compile."""
    import torch
    from diffusers import DDIMScheduler
    from diffusers.models.attention_processor import AttnProcessor2_0

    # The restore math is DDIM; SD 1.5 folders ship PNDM, whose config lacks clip_sample (DDIM's default
    # True would clip latents), so force it off.
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    if pipe.unet.dtype != dtype or pipe.vae.dtype != dtype or pipe.text_encoder.dtype != dtype:
        pipe.to(dtype=dtype)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    if channels_last and device.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval()
        module.requires_grad_(False)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    return pipe


def load_pipeline(config: ModelConfig, *, cache_dir: Path | None = None) -> LoadedModel:
    """Load the configured SD 1.5 model from local files only (never the network).

    ``cache_dir`` holds the weights' sha256 cache (see :func:`weights_sha256`)."""
    _offline.force_offline()
    if config.path is None:
        raise ModelError("no model configured (model.path is unset)")
    problems = check_model(config)
    if problems:
        raise ModelError("; ".join(problems))

    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    path = Path(config.path).expanduser().resolve()
    config_dir = Path(config.config_path).expanduser().resolve() if config.config_path else SHIPPED_CONFIG
    device, dtype = _resolve_device_dtype(config)
    load_dtype = dtype if device.type == "cuda" else None  # CPU: load as saved (fp32 math), cast after
    extra: dict[str, Any] = {}
    vae_path = Path(config.vae_path).expanduser().resolve() if config.vae_path else None
    if vae_path is not None:
        extra["vae"] = _load_vae(vae_path, config_dir, load_dtype)
    if config.tokenizer_path is not None:
        extra["tokenizer"] = CLIPTokenizer.from_pretrained(
            str(Path(config.tokenizer_path).expanduser()), local_files_only=True
        )
    common: dict[str, Any] = {
        "local_files_only": True,
        "torch_dtype": load_dtype,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    if path.is_dir():
        pipe = StableDiffusionPipeline.from_pretrained(
            str(path), use_safetensors=None if config.allow_pickle else True, **common, **extra
        )
    else:
        pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config_dir), **common, **extra)
    prepare_pipeline(pipe, device, dtype, channels_last=config.channels_last, compile_unet=config.compile)
    return LoadedModel(
        pipe=pipe,
        path=path,
        sha256=weights_sha256(path, cache_dir),
        vae_path=vae_path,
        vae_sha256=weights_sha256(vae_path, cache_dir) if vae_path is not None else None,
        device=device,
        dtype=dtype,
        compiled=config.compile,
        channels_last=config.channels_last and device.type == "cuda",
    )
