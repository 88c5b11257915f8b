"""The physical floor of SD 1.5 face restoration: FLOPs per face, GPU peaks, VRAM, and 12 GB cards.

    python bench/bench_gpu_floor.py [--steps 30] [--strength 0.35] [--guidance 5] [--crop 512]
                                    [--fraction F] [--out DIR]

Runs on any machine in well under a minute and needs no GPU. What it measures:

- **FLOPs of one forward** of each full-size SD 1.5 component (UNet per latent sample at the crop's latent
  size, VAE encode and decode per image, CLIP text encoder per prompt), counted by torch's
  ``FlopCounterMode`` (matmuls, convolutions, attention) on the *meta* device: the shipped SD 1.5 configs,
  no weights, no arithmetic.
- **How many forwards one face costs**, counted with forward hooks on a real run of albumd's DIIR restore
  (``restore_batch``) and of diffusers' stock ``StableDiffusionImg2ImgPipeline``, on the tiny model: the
  number of calls depends on steps, strength and guidance, not on the model's size.
- **Activation memory** of each component for a given batch, fp16, from torch's ``MemTracker`` on the meta
  device: the bytes of live tensors at the peak of a forward. It knows nothing of the CUDA caching
  allocator's rounding, the CUDA context or cuDNN/cuBLAS workspaces, so it is a lower bound of what
  ``torch.cuda.max_memory_allocated`` reports; ``bench_gpu_faces.py`` prints the measured figure on CUDA.

From these: TFLOP per face, the floor (faces/s at a GPU's dense fp16/bf16 tensor peak) for the GPUs in
:data:`PEAKS`, the VRAM estimate per batch size, and for 12 GB cards the batch size albumd's defaults pick
and the faces/s to expect (an estimate: peak x an assumed fraction of it, until a GPU run measures the
fraction; ``--fraction`` takes the one a GPU run of ``bench_gpu_faces.py`` measured). Writes
``bench/results/gpu-floor-sd15.json``. ``bench_gpu_faces.py`` imports these functions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30

# Dense (no sparsity) FP16/BF16 tensor-core TFLOPS with FP32 accumulate -- what PyTorch's fp16/bf16
# matmuls and convolutions use -- at the boost clock, from NVIDIA's datasheets and architecture
# whitepapers (Ampere GA102, Ada, Hopper). GeForce cards run FP32-accumulate at half their
# FP16-accumulate rate, which is why an RTX 4090 is 165, not the 330 of its spec sheet. First match wins,
# so more specific names come first; laptop parts are left out on purpose (their clocks vary by model).
PEAKS: tuple[tuple[str, str, float], ...] = (  # (label, pattern of the torch name, TFLOPS)
    ("B200", r"\bB200\b", 2250.0),
    ("H200 NVL", r"\bH200 NVL\b", 835.5),
    ("H200", r"\bH200\b", 989.4),
    ("GH200", r"\bGH200\b", 989.4),
    ("H100 NVL", r"\bH100 NVL\b", 835.5),
    ("H100 PCIe", r"\bH100 PCIe\b", 756.5),
    ("H100 SXM", r"\bH100\b", 989.4),  # torch calls it "NVIDIA H100 80GB HBM3"
    ("A100", r"\bA100\b", 312.0),
    ("A800", r"\bA800\b", 312.0),
    ("L40S", r"\bL40S\b", 362.1),
    ("L40", r"\bL40\b", 181.0),
    ("L4", r"\bL4\b", 121.0),
    ("A10", r"\bA10\b", 125.0),
    ("V100 PCIe", r"\bV100[- ]PCIE", 112.0),
    ("V100", r"\bV100\b", 125.0),
    ("T4", r"\bT4\b", 65.0),
    ("RTX 6000 Ada", r"RTX 6000 Ada", 364.2),
    ("RTX A6000", r"RTX A6000", 154.8),
    ("RTX 5090", r"RTX 5090", 209.5),
    ("RTX 4090", r"RTX 4090", 165.2),
    ("RTX 4080 SUPER", r"RTX 4080 SUPER", 104.4),
    ("RTX 4080", r"RTX 4080", 97.5),
    ("RTX 4070 Ti SUPER", r"RTX 4070 Ti SUPER", 88.2),
    ("RTX 4070 Ti", r"RTX 4070 Ti", 80.2),
    ("RTX 4070 SUPER", r"RTX 4070 SUPER", 71.0),
    ("RTX 4070", r"RTX 4070", 58.3),
    ("RTX 4060 Ti", r"RTX 4060 Ti", 44.1),
    ("RTX 4060", r"RTX 4060", 30.2),
    ("RTX 3090 Ti", r"RTX 3090 Ti", 80.0),
    ("RTX 3090", r"RTX 3090", 71.2),
    ("RTX 3080 Ti", r"RTX 3080 Ti", 68.2),
    ("RTX 3080", r"RTX 3080", 59.5),
    ("RTX 3070", r"RTX 3070", 40.6),
    ("RTX 3060 Ti", r"RTX 3060 Ti", 32.4),
    ("RTX 3060", r"RTX 3060", 25.5),
)

# The 12 GB consumer cards the small-card estimate is made for (name as torch reports it, memory in GiB).
SMALL_CARDS: tuple[tuple[str, float], ...] = (
    ("NVIDIA GeForce RTX 3060", 12.0),
    ("NVIDIA GeForce RTX 4070", 12.0),
)
# Assumptions of the small-card estimate, stated in the output: memory the CUDA context, cuDNN and cuBLAS
# take outside torch's allocator, the margin on top of the meta-device activation figure for the
# allocator's rounding and fragmentation, and the fraction of the tensor peak a well-batched SD 1.5 UNet
# reaches on such a card (to be replaced by the fraction a GPU run measures).
CUDA_CONTEXT_GIB = 0.6
ALLOCATOR_MARGIN = 0.25
ASSUMED_FRACTIONS = (0.3, 0.5)


def peak_tflops(device_name: str) -> float | None:
    """The dense fp16/bf16 tensor peak (FP32 accumulate) of a GPU by its torch name, or None if unknown."""
    if "laptop" in device_name.lower():
        return None
    for _label, pattern, tflops in PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return tflops
    return None


# --------------------------------------------------------------------------------------------- models
def sd15_meta(dtype_name: str = "float16") -> tuple[Any, Any, Any]:
    """Full-size SD 1.5 UNet, VAE and CLIP text encoder from the shipped configs, on the meta device."""
    import torch
    from albumd.pipeline.diffusion.loading import SHIPPED_CONFIG
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTextConfig, CLIPTextModel

    dtype = getattr(torch, dtype_name)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(str(SHIPPED_CONFIG / "unet"))
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(SHIPPED_CONFIG / "vae")))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(SHIPPED_CONFIG / "text_encoder")))
    # (no requires_grad_(False): MemTracker hooks the parameters; the forwards run under inference_mode)
    for m in (unet, vae, text_encoder):
        m.to(dtype=dtype).eval()
    # albumd runs SDPA (prepare_pipeline); the meta kernels then take the memory-efficient path too.
    unet.set_attn_processor(AttnProcessor2_0())
    vae.set_attn_processor(AttnProcessor2_0())
    return unet, vae, text_encoder


def _base(module: Any) -> Any:
    """The eager module behind a torch.compile wrapper."""
    return getattr(module, "_orig_mod", module)


def _vae_factor(vae: Any) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _inputs(unet: Any, vae: Any, text_encoder: Any, crop: int, n: int) -> dict[str, Callable[[], Any]]:
    """One forward of each component on ``n`` items, as closures (inputs made inside, on the modules'
    device and dtype)."""
    import torch

    p = next(_base(unet).parameters())
    device, dtype = p.device, p.dtype
    lat = crop // _vae_factor(vae)
    seq = int(text_encoder.config.max_position_embeddings)
    ctx = int(_base(unet).config.cross_attention_dim)
    ch = int(_base(unet).config.in_channels)

    def run_unet() -> Any:
        z = torch.zeros(n, ch, lat, lat, device=device, dtype=dtype)
        emb = torch.zeros(n, seq, ctx, device=device, dtype=dtype)
        return unet(z, 500, encoder_hidden_states=emb).sample

    def run_encode() -> Any:
        return vae.encode(torch.zeros(n, 3, crop, crop, device=device, dtype=dtype)).latent_dist.mean

    def run_decode() -> Any:
        return vae.decode(
            torch.zeros(n, int(vae.config.latent_channels), lat, lat, device=device, dtype=dtype)
        )

    def run_text() -> Any:
        return text_encoder(torch.zeros(n, seq, dtype=torch.long, device=device))[0]

    return {"unet": run_unet, "vae_encode": run_encode, "vae_decode": run_decode, "text_encoder": run_text}


def component_tflops(unet: Any, vae: Any, text_encoder: Any, crop: int) -> dict[str, float]:
    """TFLOP of one forward per item: UNet per latent sample, VAE encode/decode per image, text per prompt."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    out: dict[str, float] = {}
    with torch.inference_mode():
        for name, fn in _inputs(unet, vae, text_encoder, crop, 1).items():
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            out[name] = round(counter.get_total_flops() / 1e12, 5)
    return out


def param_counts(unet: Any, vae: Any, text_encoder: Any) -> dict[str, int]:
    return {
        name: sum(p.numel() for p in _base(m).parameters())
        for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))
    }


def activation_gib(fn: Callable[[], Any]) -> float | None:
    """Peak bytes of tensors created by ``fn`` and alive at once (GiB), from torch's MemTracker.

    None where this torch build has no MemTracker (it lives in torch.distributed._tools)."""
    import torch

    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:
        return None
    tracker = MemTracker()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.inference_mode(), tracker:
            result = fn()
    del result
    peak = 0.0
    for per_device in tracker.get_tracker_snapshot("peak").values():
        # the snapshot is taken at the moment of the peak total; weights are accounted for separately
        fixed = sum(
            float(v) for k, v in per_device.items() if str(getattr(k, "value", k)) in ("Parameter", "Buffer")
        )
        peak = max(peak, float(per_device.get("Total", 0)) - fixed)
    return peak / GIB


def vram_estimate(
    unet: Any,
    vae: Any,
    text_encoder: Any,
    crop: int,
    batch_sizes: Sequence[int],
    *,
    vae_batch_size: int = 8,
    steps: int = 30,
    strength: float = 0.35,
    cfg: bool = True,
    weight_bytes: int = 2,
) -> dict[str, Any]:
    """Estimated peak VRAM (GiB, torch allocations only) of one ``restore_batch`` call per batch size.

    Peak = weights + the largest activation peak of the phases a batch of B faces goes through, as
    ``restore_batch`` runs them: VAE encode of ``min(B, vae_batch_size)`` crops, the UNet on B latents
    (inversion) and 2B (denoising with CFG), VAE decode of ``min(B, vae_batch_size)``, text encoder on 2B
    prompts; plus the per-face state kept for the whole batch (crops, the inverted trajectory, prompt
    embeddings, decoded images). Activations come from MemTracker on the modules' device (meta)."""
    params = param_counts(unet, vae, text_encoder)
    weights_gib = sum(params.values()) * weight_bytes / GIB
    lat = crop // _vae_factor(vae)
    seq = int(text_encoder.config.max_position_embeddings)
    ctx = int(_base(unet).config.cross_attention_dim)
    n_traj = int(steps * strength) + 1
    # fp16 crop on the device, fp32 latents of the trajectory, cond+uncond embeddings, fp32 decoded image
    per_face_state = (
        3 * crop * crop * weight_bytes
        + n_traj * 4 * lat * lat * 4
        + 2 * seq * ctx * weight_bytes
        + 3 * crop * crop * 4
    ) / GIB
    rows = []
    cache: dict[tuple[str, int], float | None] = {}

    def act(name: str, n: int) -> float | None:
        if (name, n) not in cache:
            cache[(name, n)] = activation_gib(_inputs(unet, vae, text_encoder, crop, n)[name])
        return cache[(name, n)]

    for b in batch_sizes:
        vb = min(b, vae_batch_size)
        phases = {
            "vae_encode": act("vae_encode", vb),
            "unet_inversion": act("unet", b),
            "unet_denoise": act("unet", 2 * b if cfg else b),
            "vae_decode": act("vae_decode", vb),
            "text_encoder": act("text_encoder", 2 * b if cfg else b),
        }
        known = {k: v for k, v in phases.items() if v is not None}
        if not known:
            rows.append({"batch_size": b, "peak_gib": None})
            continue
        worst = max(known, key=lambda k: known[k])
        rows.append(
            {
                "batch_size": b,
                "peak_gib": round(weights_gib + known[worst] + b * per_face_state, 3),
                "largest_phase": worst,
                "phases_activation_gib": {k: round(v, 4) for k, v in known.items()},
            }
        )
    return {
        "method": "weights (parameter count x bytes) + the largest per-phase activation peak of the batch "
        "(torch MemTracker on the meta device: live tensors only; no allocator rounding, CUDA context or "
        "cuDNN/cuBLAS workspace) + per-face state; a lower bound of torch.cuda.max_memory_allocated",
        "params": params,
        "weights_gib": round(weights_gib, 3),
        "per_face_state_gib": round(per_face_state, 5),
        "vae_batch_size": vae_batch_size,
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------- counting
def count_forwards(pipe: Any, run: Callable[[], int]) -> dict[str, float]:
    """Items through each component per face while ``run()`` works (it returns how many faces it did):
    UNet latent samples (CFG's doubled batch counts twice), VAE encoder and decoder images, prompts."""
    counts = {"unet_samples": 0, "vae_encode_images": 0, "vae_decode_images": 0, "text_prompts": 0}

    def hook(key: str) -> Callable[..., None]:
        def pre(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            first = args[0] if args else next(iter(kwargs.values()))
            counts[key] += int(first.shape[0])

        return pre

    unet = _base(pipe.unet)
    handles = [
        unet.register_forward_pre_hook(hook("unet_samples"), with_kwargs=True),
        pipe.vae.encoder.register_forward_pre_hook(hook("vae_encode_images"), with_kwargs=True),
        pipe.vae.decoder.register_forward_pre_hook(hook("vae_decode_images"), with_kwargs=True),
        pipe.text_encoder.register_forward_pre_hook(hook("text_prompts"), with_kwargs=True),
    ]
    try:
        faces = run()
    finally:
        for h in handles:
            h.remove()
    return {k: v / faces for k, v in counts.items()}


def count_diir_and_stock(
    pipe: Any, model: Any, crop: int, steps: int, strength: float, guidance: float
) -> dict[str, dict[str, float]]:
    """Forwards per face of albumd's DIIR restore (2 faces with distinct prompts, one batch) and of the
    stock img2img pipeline (one face), on ``pipe``/``model`` as they are."""
    import numpy as np
    import torch
    from albumd.pipeline.diffusion import DiffusionParams, RestoreItem, restore_batch

    rng = np.random.default_rng(0)
    crops = [rng.uniform(0, 1, (crop, crop, 3)).astype(np.float32) for _ in range(2)]
    matte = np.ones((crop, crop), np.float32)
    params = DiffusionParams(
        steps=steps, strength=strength, guidance_scale=guidance, crop_size=crop, batch_size=2
    )
    items = [
        RestoreItem(
            crop=c, matte=matte, prompt=f"face {i}", negative_prompt="blurry", seed=i, strength=strength
        )
        for i, c in enumerate(crops)
    ]

    def diir() -> int:
        restore_batch(model, items, params)
        return len(items)

    stock = stock_img2img(pipe)

    def img2img() -> int:
        stock(
            prompt="face 0",
            negative_prompt="blurry",
            image=crops[0][None],
            strength=strength,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
        )
        return 1

    return {"diir": count_forwards(pipe, diir), "stock_img2img": count_forwards(pipe, img2img)}


def stock_img2img(pipe: Any) -> Any:
    """diffusers' StableDiffusionImg2ImgPipeline over the same (eager) components."""
    from diffusers import StableDiffusionImg2ImgPipeline

    stock = StableDiffusionImg2ImgPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=_base(pipe.unet),
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    stock.set_progress_bar_config(disable=True)
    return stock


def tflop_per_face(component: dict[str, float], per_face: dict[str, float]) -> float:
    return round(
        component["unet"] * per_face["unet_samples"]
        + component["vae_encode"] * per_face["vae_encode_images"]
        + component["vae_decode"] * per_face["vae_decode_images"]
        + component["text_encoder"] * per_face["text_prompts"],
        4,
    )


def floor_block(component: dict[str, float], per_face: dict[str, dict[str, float]]) -> dict[str, Any]:
    """TFLOP per face of DIIR and of the stock baseline, and the floor (faces/s at peak) for known GPUs."""
    diir = tflop_per_face(component, per_face["diir"])
    stock = tflop_per_face(component, per_face["stock_img2img"])
    return {
        "component_tflop": component,
        "forwards_per_face": per_face,
        "tflop_per_face": diir,
        "baseline_tflop_per_face": stock,
        "diir_over_baseline_flops": round(diir / stock, 4),
        "floor_faces_per_s_at_peak": {label: round(tflops / diir, 3) for label, _pattern, tflops in PEAKS},
    }


# --------------------------------------------------------------------------------------------- small cards
def default_batch_size(card_gib: float, weights_gib: float, crop: int) -> int:
    """The batch albumd's defaults pick on a card with ``card_gib`` (the real ``choose_batch_size`` with
    a ``mem_get_info`` that reports the card's free memory after the CUDA context and the weights)."""
    import torch
    from albumd.pipeline.diffusion import DiffusionParams, LoadedModel, choose_batch_size

    free = int((card_gib - CUDA_CONTEXT_GIB - weights_gib) * GIB)
    model = LoadedModel(
        pipe=None,
        path=Path("estimate"),
        sha256=None,
        vae_path=None,
        vae_sha256=None,
        device=torch.device("cuda"),
        dtype=torch.float16,
        compiled=False,
        channels_last=True,
    )
    return choose_batch_size(model, DiffusionParams(), 1000, crop, lambda: (free, int(card_gib * GIB)))


def small_cards(
    estimate: dict[str, Any], crop: int, diir_tflop: float, fraction: float | None = None
) -> list[dict[str, Any]]:
    """Batch size and expected faces/s on 12 GB cards, from a :func:`vram_estimate` (estimates; see the
    constants above). ``fraction`` of the peak: measured on a GPU, else the assumed range."""
    by_b = {r["batch_size"]: r["peak_gib"] for r in estimate["rows"]}
    sizes = sorted(b for b, v in by_b.items() if v is not None)
    out = []
    for name, card_gib in SMALL_CARDS:
        peak = peak_tflops(name)
        assert peak is not None, name
        default_b = default_batch_size(card_gib, estimate["weights_gib"], crop)
        default_peak = _with_margin(by_b.get(default_b) or _interp(by_b, default_b))
        fits = [b for b in sizes if _with_margin(by_b[b]) <= card_gib]
        fractions = (fraction,) if fraction is not None else ASSUMED_FRACTIONS
        out.append(
            {
                "card": name,
                "memory_gib": card_gib,
                "peak_tflops": peak,
                "default_batch_size": default_b,
                "estimated_vram_at_default_gib": round(default_peak, 2),
                "room_to_spare_gib": round(card_gib - default_peak, 2),
                "largest_batch_that_fits": max(fits) if fits else None,
                "floor_faces_per_s": round(peak / diir_tflop, 3),
                "expected_faces_per_s": {
                    f"{f:.0%} of peak": round(peak * f / diir_tflop, 3) for f in fractions
                },
                "fraction_source": "measured on a GPU" if fraction is not None else "assumed",
            }
        )
    return out


def _with_margin(peak_gib: float) -> float:
    return peak_gib * (1 + ALLOCATOR_MARGIN) + CUDA_CONTEXT_GIB


def _interp(by_b: dict[int, float | None], b: int) -> float:
    known = sorted((k, v) for k, v in by_b.items() if v is not None)
    lo = max((kv for kv in known if kv[0] <= b), default=known[0])
    hi = min((kv for kv in known if kv[0] >= b), default=known[-1])
    if hi[0] == lo[0]:
        return lo[1]
    return lo[1] + (hi[1] - lo[1]) * (b - lo[0]) / (hi[0] - lo[0])


# --------------------------------------------------------------------------------------------- main
def sd15_floor(
    steps: int,
    strength: float,
    guidance: float,
    crop: int,
    per_face: dict[str, dict[str, float]] | None = None,
    fraction: float | None = None,
) -> dict[str, Any]:
    """FLOP model, VRAM estimate and small cards for the full-size SD 1.5 at ``crop``.

    ``per_face`` (forwards per face) is counted on the tiny model when not given."""
    unet, vae, te = sd15_meta()
    component = component_tflops(unet, vae, te, crop)
    if per_face is None:
        per_face = count_on_tiny(steps, strength, guidance)
    floor = floor_block(component, per_face)
    vram = vram_estimate(unet, vae, te, crop, [1, 2, 4, 8, 16, 32], steps=steps, strength=strength)
    return {
        "model": "SD 1.5 (shipped configs), fp16, counted on the meta device",
        "crop_size": crop,
        "steps": steps,
        "strength": strength,
        "guidance_scale": guidance,
        **floor,
        "vram_estimate": vram,
        "small_cards": small_cards(vram, crop, floor["tflop_per_face"], fraction),
        "small_card_assumptions": {
            "cuda_context_gib": CUDA_CONTEXT_GIB,
            "allocator_margin": ALLOCATOR_MARGIN,
            "fraction_of_peak": [fraction] if fraction is not None else list(ASSUMED_FRACTIONS),
        },
    }


def count_on_tiny(steps: int, strength: float, guidance: float) -> dict[str, dict[str, float]]:
    import torch
    from albumd.pipeline.diffusion.loading import LoadedModel, prepare_pipeline
    from albumd.pipeline.diffusion.tiny import TINY_CROP, build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=0)
    device = torch.device("cpu")
    prepare_pipeline(pipe, device, torch.float32, channels_last=False, compile_unet=False)
    model = LoadedModel(
        pipe=pipe,
        path=Path("tiny-random-sd15"),
        sha256=None,
        vae_path=None,
        vae_sha256=None,
        device=device,
        dtype=torch.float32,
        compiled=False,
        channels_last=False,
    )
    return count_diir_and_stock(pipe, model, TINY_CROP, steps, strength, guidance)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--strength", type=float, default=0.35)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument(
        "--fraction", type=float, default=None, help="fraction of the tensor peak a GPU run measured (0..1)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the counting run is tiny; threads only fight on a shared machine
    result = {
        "benchmark": "bench_gpu_floor",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/bench_gpu_floor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "peaks_tflops": {label: t for label, _pattern, t in PEAKS},
        "peaks_note": "dense fp16/bf16 tensor TFLOPS with FP32 accumulate at boost clock (NVIDIA datasheets "
        "and whitepapers); GeForce cards run FP32-accumulate at half their FP16-accumulate rate",
        **sd15_floor(args.steps, args.strength, args.guidance, args.crop, fraction=args.fraction),
        "versions": {"torch": torch.__version__},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "gpu-floor-sd15.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    f = result
    print(
        f"TFLOP per face: DIIR {f['tflop_per_face']}, stock img2img {f['baseline_tflop_per_face']} "
        f"(UNet {f['component_tflop']['unet']} per sample)"
    )
    print("forwards per face:", json.dumps(f["forwards_per_face"]))
    for row in f["vram_estimate"]["rows"]:
        print(
            f"batch {row['batch_size']:2d}: estimated peak {row['peak_gib']} GiB ({row.get('largest_phase')})"
        )
    for card in f["small_cards"]:
        print(json.dumps(card))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
