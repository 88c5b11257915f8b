"""Random-weight SD 1.5-architecture pipelines built on the fly: a tiny one for tests and the demo, and the
full-size one for GPU benchmarks. Nothing is downloaded.

The tiny pipeline is saved two ways so both loading paths are exercised for real: as a diffusers folder
and as a single ``.safetensors`` in the *original* SD checkpoint key layout (``model.diffusion_model.*``,
``first_stage_model.*``, ``cond_stage_model.transformer.*``), which diffusers' ``from_single_file``
converts back with its own converters. :func:`to_original_sd_state_dict` is the inverse of those
converters (diffusers' ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``,
``convert_ldm_clip_checkpoint``), written for any SD 1.x-shaped config.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _offline  # noqa: F401
from .loading import SHIPPED_CONFIG

TINY_CROP = 64  # crop size the tiny model is exercised at (VAE factor 8 -> 8x8 latents)

TINY_UNET: dict[str, Any] = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 32,
}
TINY_VAE: dict[str, Any] = {
    "block_out_channels": (8, 16, 16, 16),
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": TINY_CROP,
    "scaling_factor": 0.18215,
}
TINY_MERGES = ["t h", "i n", "e r", "o n", "a n", "th e</w>", "o f</w>"]


@dataclass
class TinyModelFiles:
    folder: Path  # diffusers folder (safetensors weights)
    single_file: Path  # original-layout single .safetensors
    config_dir: Path  # config-only diffusers folder for from_single_file (no weights)


# --------------------------------------------------------------------------------------------- tokenizer
def _bytes_to_unicode() -> dict[int, str]:
    from .make_tokenizer_files import bytes_to_unicode

    return bytes_to_unicode()


def write_tiny_tokenizer(folder: Path) -> Path:
    """A CLIP-style BPE tokenizer with a ~520-token vocabulary (bytes, bytes+</w>, a few merges)."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in TINY_MERGES]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(
        json.dumps({t: i for i, t in enumerate(vocab_list)}, ensure_ascii=False)
    )
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(SHIPPED_CONFIG / "tokenizer" / name, folder / name)
    return folder


# --------------------------------------------------------------------------------------------- builders
def build_tiny_pipeline(seed: int = 0, workdir: Path | None = None) -> Any:
    """A tiny random-weight ``StableDiffusionPipeline`` (SD 1.5 architecture), deterministic from ``seed``."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = write_tiny_tokenizer(
        (workdir or Path(tempfile.mkdtemp(prefix="albumd-tinytok-"))) / "tokenizer"
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=32,
            bos_token_id=len(tokenizer) - 2,
            eos_token_id=len(tokenizer) - 1,
            pad_token_id=len(tokenizer) - 1,
        )
    )
    scheduler = DDIMScheduler.from_pretrained(
        str(SHIPPED_CONFIG), subfolder="scheduler", local_files_only=True
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sd15_random(seed: int = 0, device: str = "cpu", dtype: Any = None) -> Any:
    """Full-size SD 1.5 (shipped configs, real tokenizer) with random weights, for benchmarks."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = SHIPPED_CONFIG
    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(cfg / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(cfg / "vae")))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(cfg / "text_encoder")))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(str(cfg / "tokenizer"), local_files_only=True),
        unet=unet,
        scheduler=DDIMScheduler.from_pretrained(str(cfg), subfolder="scheduler", local_files_only=True),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    if dtype is not None:
        pipe.to(dtype=dtype)
    return pipe


def save_tiny_model(root: Path, seed: int = 0) -> TinyModelFiles:
    """Build the tiny pipeline and save it as a diffusers folder, a single original-layout safetensors
    file, and a config-only folder (what ``model.config_path`` points at for the single file)."""
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pipe = build_tiny_pipeline(seed, workdir=root)
    folder = root / "tiny-sd15"
    pipe.save_pretrained(str(folder), safe_serialization=True)
    single = root / "tiny-sd15.safetensors"
    save_file(to_original_sd_state_dict(pipe), str(single))
    config_dir = root / "tiny-sd15-config"
    if config_dir.exists():
        shutil.rmtree(config_dir)
    shutil.copytree(folder, config_dir, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return TinyModelFiles(folder=folder, single_file=single, config_dir=config_dir)


# --------------------------------------------------------------------------------------------- conversion
_RESNET_LDM = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
]
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _unet_prefix_map(cfg: Any) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, ldm prefix, is_resnet) for every block of an SD 1.x-shaped UNet."""
    lpb = int(cfg.layers_per_block)
    n_down, n_up = len(cfg.down_block_types), len(cfg.up_block_types)
    rules: list[tuple[str, str, bool]] = [(d, ld, False) for d, ld in _UNET_TOP.items()]
    for b in range(n_down):
        for layer in range(lpb):
            i = 1 + b * (lpb + 1) + layer
            rules.append((f"down_blocks.{b}.resnets.{layer}", f"input_blocks.{i}.0", True))
            rules.append((f"down_blocks.{b}.attentions.{layer}", f"input_blocks.{i}.1", False))
        if b < n_down - 1:
            i = 1 + b * (lpb + 1) + lpb
            rules.append((f"down_blocks.{b}.downsamplers.0.conv", f"input_blocks.{i}.0.op", False))
    rules += [
        ("mid_block.resnets.0", "middle_block.0", True),
        ("mid_block.attentions.0", "middle_block.1", False),
        ("mid_block.resnets.1", "middle_block.2", True),
    ]
    for b in range(n_up):
        has_attn = "CrossAttn" in cfg.up_block_types[b]
        for layer in range(lpb + 1):
            i = b * (lpb + 1) + layer
            rules.append((f"up_blocks.{b}.resnets.{layer}", f"output_blocks.{i}.0", True))
            rules.append((f"up_blocks.{b}.attentions.{layer}", f"output_blocks.{i}.1", False))
        if b < n_up - 1:
            i = b * (lpb + 1) + lpb
            rules.append(
                (f"up_blocks.{b}.upsamplers.0.conv", f"output_blocks.{i}.{2 if has_attn else 1}.conv", False)
            )
    return rules


def _convert_by_prefix(
    key: str, rules: list[tuple[str, str, bool]], resnet_names: list[tuple[str, str]]
) -> str:
    for d_prefix, l_prefix, is_resnet in rules:
        if key.startswith(d_prefix + "."):
            rest = key[len(d_prefix) + 1 :]
            if is_resnet:
                head, _, tail = rest.partition(".")
                rest = dict(resnet_names).get(head, head) + "." + tail
            return f"{l_prefix}.{rest}"
    raise KeyError(f"no original-layout name for {key}")


def _vae_prefix_map(cfg: Any) -> list[tuple[str, str, bool]]:
    n_down, n_up = len(cfg.down_block_types), len(cfg.up_block_types)
    rules: list[tuple[str, str, bool]] = []
    for part in ("encoder", "decoder"):
        rules += [
            (f"{part}.conv_in", f"{part}.conv_in", False),
            (f"{part}.conv_out", f"{part}.conv_out", False),
            (f"{part}.conv_norm_out", f"{part}.norm_out", False),
            (f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", True),
            (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", True),
            (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", False),
        ]
    for i in range(n_down):
        rules.append((f"encoder.down_blocks.{i}.resnets", f"encoder.down.{i}.block", False))
        rules.append(
            (f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", False)
        )
    for i in range(n_up):
        j = n_up - 1 - i
        rules.append((f"decoder.up_blocks.{i}.resnets", f"decoder.up.{j}.block", False))
        rules.append((f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{j}.upsample.conv", False))
    rules += [("quant_conv", "quant_conv", False), ("post_quant_conv", "post_quant_conv", False)]
    return rules


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def to_original_sd_state_dict(pipe: Any) -> dict[str, Any]:
    """The pipeline's weights in the original SD 1.x checkpoint layout (as ``v1-5-pruned.safetensors``)."""
    out: dict[str, Any] = {}
    urules = _unet_prefix_map(pipe.unet.config)
    for k, v in pipe.unet.state_dict().items():
        out["model.diffusion_model." + _convert_by_prefix(k, urules, _RESNET_LDM)] = v.detach().clone()
    vrules = _vae_prefix_map(pipe.vae.config)
    for k, v in pipe.vae.state_dict().items():
        name = _convert_by_prefix(k, vrules, [])
        t = v.detach().clone()
        if ".mid.attn_1." in name:
            head, _, leaf = name.rpartition(".")  # e.g. encoder.mid.attn_1.to_out.0 / weight
            for d_name, l_name in _VAE_ATTN.items():
                if head.endswith("." + d_name):
                    head = head[: -len(d_name)] + l_name
                    break
            name = f"{head}.{leaf}"
            if leaf == "weight" and t.ndim == 2:  # LDM's attention projections are 1x1 convs
                t = t[:, :, None, None]
        name = name.replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + name] = t
    te_sd = pipe.text_encoder.state_dict()
    for k, v in te_sd.items():
        if k.endswith("position_ids"):
            continue
        key = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + key] = v.detach().clone()
    return {k: v.contiguous() for k, v in out.items()}
