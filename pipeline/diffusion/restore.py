"""Face restoration with SD 1.5 in cross-photo batches: DDIM-inversion restore (FPGA's DIIR) or img2img.

DIIR, per face crop ``x`` with matte ``m`` and strength ``s`` over a DDIM grid of ``steps`` timesteps:

1. ``z0 = VAE.encode(x)`` (sampled with the face's own generator);
2. invert ``z0`` with deterministic DDIM (no guidance, the face prompt) up the last ``n = int(steps*s)``
   timesteps of the grid, keeping every latent ``inv[t]`` of that trajectory;
3. from ``inv[t_top]`` denoise back with classifier-free guidance and the face prompt; after each step
   ``z = m*z_denoised + (1-m)*inv[t_next]`` (``inv[0] = z0``), so everything outside the face matte stays
   on the photo's own trajectory and ends exactly at ``z0``: hair edges, background and framing are the
   photo's, only the face's detail is regenerated.

Img2img (the baseline) starts from ``z0`` noised with random noise to ``t_top`` and denoises without the
matte blend, as diffusers' ``StableDiffusionImg2ImgPipeline`` does.

Batching: items from many photos go through together, each with its own prompt, negative prompt, seed
(one ``torch.Generator`` each), strength and matte. All faces share one timestep grid, so faces with
different strengths run in lock-step aligned at the end of the schedule: at any step every active face is
at the same timestep, and a face joins the batch when the grid reaches its own starting timestep (no
wasted UNet evaluations, no grouping needed). The batch size comes from free VRAM and halves on OOM.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from . import _offline  # noqa: F401
from .loading import LoadedModel
from .params import DiffusionParams


@dataclass
class RestoreItem:
    """One aligned face crop to restore."""

    crop: np.ndarray  # (S, S, 3) float32 in [0, 1]
    matte: np.ndarray  # (S, S) float32 in [0, 1]: 1 = face (regenerated), 0 = keep the photo's
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    strength: float = 0.35
    key: str = ""  # the caller's id, e.g. f"{photo_sha256}:{face_index}"


@dataclass
class RestoreOutcome:
    key: str
    restored: np.ndarray  # (S, S, 3) float32 in [0, 1]
    seed: int
    strength: float
    steps_run: int  # denoising steps actually run (int(steps * strength))
    method: str
    batch_size: int  # size of the GPU batch this face ran in
    oom_backoffs: int  # how often the batch size was halved before this face's batch succeeded
    # The face's share of its batch's wall time per phase (phase seconds / faces in the batch), and the
    # batch's total, in seconds.
    timings: dict[str, float] = field(default_factory=dict)
    # With ``keep_latents=True``: the encoded input latent z0 and the final latent, (4, h, w) float32.
    latent_input: np.ndarray | None = None
    latent_final: np.ndarray | None = None


class DiffusionOOMError(RuntimeError):
    """Out of memory even at batch size 1 with attention slicing."""


def is_cuda_oom(exc: BaseException) -> bool:
    """Default OOM detector: torch's CUDA OOM error, or a RuntimeError saying so (older builds)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def choose_batch_size(
    model: LoadedModel,
    params: DiffusionParams,
    n_items: int,
    crop_size: int,
    mem_get_info: Callable[[], tuple[int, int]] | None = None,
) -> int:
    """Batch size for ``n_items`` faces: fixed if configured, on CUDA from free VRAM, else ``cpu_batch_size``.

    ``mem_get_info`` replaces ``torch.cuda.mem_get_info`` (free, total bytes), e.g. in tests."""
    if n_items <= 0:
        return 1
    if params.batch_size is not None:
        return max(1, min(params.batch_size, n_items))
    if model.device.type != "cuda":
        return max(1, min(params.cpu_batch_size, n_items))
    if mem_get_info is None:
        import torch

        def mem_get_info() -> tuple[int, int]:
            return torch.cuda.mem_get_info(model.device)

    free_bytes, _total = mem_get_info()
    per_face = params.vram_per_face_gb * (crop_size / 512) ** 2 * (2.0 if model.dtype.itemsize >= 4 else 1.0)
    usable = free_bytes / 2**30 - params.vram_reserve_gb
    fit = int(usable // per_face) if usable > 0 else 1
    return max(1, min(fit, params.max_batch_size, n_items))


def restore_batch(
    model: LoadedModel,
    items: Sequence[RestoreItem],
    params: DiffusionParams,
    *,
    is_oom: Callable[[BaseException], bool] = is_cuda_oom,
    before_chunk: Callable[[int], None] | None = None,
    mem_get_info: Callable[[], tuple[int, int]] | None = None,
    keep_latents: bool = False,
) -> list[RestoreOutcome]:
    """Restore every item; outcomes in the order of ``items``.

    Faces are sorted by strength (so a GPU batch holds similar schedules) and cut into batches of the size
    :func:`choose_batch_size` picks. A batch that runs out of memory (``is_oom``) is retried at half the
    size; at size 1 attention slicing is switched on and it is tried once more before
    :class:`DiffusionOOMError`. ``before_chunk(batch_size)`` is called before each batch runs (a test hook;
    it may raise). ``keep_latents`` fills the outcomes' latent fields (for tests and diagnostics)."""
    if not items:
        return []
    size = _check_items(items)
    bs = choose_batch_size(model, params, len(items), size, mem_get_info)
    order = sorted(range(len(items)), key=lambda i: (-items[i].strength, i))
    outcomes: list[RestoreOutcome | None] = [None] * len(items)
    backoffs = 0
    slicing = False
    pos = 0
    while pos < len(order):
        chunk = order[pos : pos + bs]
        try:
            if before_chunk is not None:
                before_chunk(len(chunk))
            results = _run_chunk(model, [items[i] for i in chunk], params, keep_latents)
        except Exception as exc:
            if not is_oom(exc):
                raise
            _free_cuda_cache(model)
            if bs > 1:
                bs = max(1, bs // 2)
                backoffs += 1
                continue
            if not slicing:
                model.pipe.enable_attention_slicing()
                slicing = True
                backoffs += 1
                continue
            raise DiffusionOOMError(f"out of memory restoring one {size}px face even with slicing") from exc
        for i, out in zip(chunk, results, strict=True):
            out.oom_backoffs = backoffs
            outcomes[i] = out
        pos += len(chunk)
    if slicing:
        model.pipe.disable_attention_slicing()
    return [o for o in outcomes if o is not None]


# --------------------------------------------------------------------------------------------- internals
def _check_items(items: Sequence[RestoreItem]) -> int:
    size = items[0].crop.shape[0]
    for it in items:
        if it.crop.shape != (size, size, 3):
            raise ValueError(f"item {it.key!r}: crop shape {it.crop.shape}, expected ({size}, {size}, 3)")
        if it.matte.shape != (size, size):
            raise ValueError(f"item {it.key!r}: matte shape {it.matte.shape}, expected ({size}, {size})")
        if not 0.0 <= it.strength <= 1.0:
            raise ValueError(f"item {it.key!r}: strength {it.strength} outside [0, 1]")
    return size


def _free_cuda_cache(model: LoadedModel) -> None:
    import torch

    if model.device.type == "cuda":
        torch.cuda.empty_cache()


def _sync(model: LoadedModel) -> None:
    import torch

    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def _encode_prompts(pipe: Any, prompts: list[str], device: Any) -> Any:
    import torch

    tok = pipe.tokenizer
    unique = list(dict.fromkeys(prompts))
    ids = tok(
        unique, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)
    emb = pipe.text_encoder(ids)[0]
    index = torch.tensor([unique.index(p) for p in prompts], device=device)
    return emb[index]


def _timestep_grid(pipe: Any, steps: int) -> tuple[list[int], Any, float]:
    """DDIM grid (descending), alphas_cumprod (float64 CPU) and the alpha of the clean end."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    grid = [int(t) for t in sched.timesteps]
    alphas = sched.alphas_cumprod.double()
    return grid, alphas, float(sched.final_alpha_cumprod)


def _x0_eps(model_out: Any, z: Any, alpha: float, prediction_type: str) -> tuple[Any, Any]:
    """Predicted clean latent and noise from the UNet output at a level with alpha_cumprod ``alpha``."""
    a, b = math.sqrt(alpha), math.sqrt(1.0 - alpha)
    if prediction_type == "epsilon":
        eps = model_out
        return (z - b * eps) / a, eps
    if prediction_type == "v_prediction":
        return a * z - b * model_out, a * model_out + b * z
    if prediction_type == "sample":
        x0 = model_out
        return x0, (z - a * x0) / b
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def _mattes_to_latent(items: Sequence[RestoreItem], latent_size: int) -> np.ndarray:
    out = np.empty((len(items), 1, latent_size, latent_size), np.float32)
    for i, it in enumerate(items):
        m = np.clip(it.matte.astype(np.float32), 0.0, 1.0)
        out[i, 0] = cv2.resize(m, (latent_size, latent_size), interpolation=cv2.INTER_AREA)
    return out


def _run_chunk(
    model: LoadedModel, items: list[RestoreItem], params: DiffusionParams, keep_latents: bool = False
) -> list[RestoreOutcome]:
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    pipe, device, dtype = model.pipe, model.device, model.dtype
    unet, vae = pipe.unet, pipe.vae
    n_items = len(items)
    times: dict[str, float] = {}
    t_all = time.perf_counter()

    with torch.inference_mode():
        # ---- encode crops and prompts
        t0 = time.perf_counter()
        gens = [torch.Generator(device="cpu").manual_seed(int(it.seed)) for it in items]
        x = torch.from_numpy(np.stack([it.crop for it in items]).astype(np.float32)).permute(0, 3, 1, 2)
        x = (x * 2.0 - 1.0).to(device=device, dtype=dtype)
        if device.type == "cuda" and model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z0_parts = []
        for s in range(0, n_items, params.vae_batch_size):
            dist = vae.encode(x[s : s + params.vae_batch_size]).latent_dist
            z0_parts.append(dist.sample(generator=gens[s : s + params.vae_batch_size]))
        z0 = torch.cat(z0_parts).float() * float(vae.config.scaling_factor)
        latent_size = z0.shape[-1]
        cond = _encode_prompts(pipe, [it.prompt for it in items], device)
        use_cfg = params.guidance_scale > 1.0
        uncond = _encode_prompts(pipe, [it.negative_prompt for it in items], device) if use_cfg else None
        mask = torch.from_numpy(_mattes_to_latent(items, latent_size)).to(device)
        _sync(model)
        times["encode"] = time.perf_counter() - t0

        # ---- schedules: every face uses the tail of one shared grid
        grid, alphas, final_alpha = _timestep_grid(pipe, params.steps)
        n_total = len(grid)
        n_steps = [min(int(n_total * it.strength), n_total) for it in items]
        n_max = max(n_steps)
        first = [n_total - n for n in n_steps]  # grid index where each face starts denoising
        pred_type = pipe.scheduler.config.prediction_type

        def alpha_at(k: int) -> float:  # k == n_total is the clean end
            return final_alpha if k >= n_total else float(alphas[grid[k]])

        def unet_eps(z: Any, t: int, emb: Any) -> Any:
            zin = z.to(dtype)
            if device.type == "cuda" and model.channels_last:
                zin = zin.contiguous(memory_format=torch.channels_last)
            return unet(zin, t, encoder_hidden_states=emb).sample.float()

        # ---- starting latents: DDIM inversion (diir) or random noise (img2img)
        t0 = time.perf_counter()
        traj: dict[int, Any] = {n_total: z0.clone()}  # grid index -> latents of all faces (rows of inactive
        # faces are left as they are)
        z = z0.clone()
        if params.method == "diir" and n_max > 0:
            for k in range(n_total - 1, n_total - n_max - 1, -1):
                active = [i for i in range(n_items) if k >= first[i]]
                idx = torch.tensor(active, device=device)
                out = unet_eps(z[idx], grid[k], cond[idx])
                x0, eps = _x0_eps(out, z[idx], alpha_at(k + 1), pred_type)
                a_t = alpha_at(k)
                z[idx] = math.sqrt(a_t) * x0 + math.sqrt(1.0 - a_t) * eps
                traj[k] = z.clone()
        elif params.method == "img2img":
            for i in range(n_items):
                if n_steps[i] == 0:
                    continue
                noise = randn_tensor(tuple(z0[i : i + 1].shape), generator=gens[i], device=device)
                a_t = alpha_at(first[i])
                z[i] = math.sqrt(a_t) * z0[i] + math.sqrt(1.0 - a_t) * noise[0].float()
        start = [traj[first[i]][i] if params.method == "diir" else z[i] for i in range(n_items)]
        z = torch.stack(start) if n_items else z
        _sync(model)
        times["invert" if params.method == "diir" else "noise"] = time.perf_counter() - t0

        # ---- denoise with CFG; diir keeps the outside of the matte on the inverted trajectory
        t0 = time.perf_counter()
        for k in range(n_total - n_max, n_total):
            active = [i for i in range(n_items) if k >= first[i]]
            idx = torch.tensor(active, device=device)
            zi = z[idx]
            if use_cfg:
                assert uncond is not None
                out_u, out_c = unet_eps(
                    torch.cat([zi, zi]), grid[k], torch.cat([uncond[idx], cond[idx]])
                ).chunk(2)
                out = out_u + params.guidance_scale * (out_c - out_u)
            else:
                out = unet_eps(zi, grid[k], cond[idx])
            x0, eps = _x0_eps(out, zi, alpha_at(k), pred_type)
            a_prev = alpha_at(k + 1)
            znew = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
            if params.method == "diir":
                m = mask[idx]
                znew = m * znew + (1.0 - m) * traj[k + 1][idx]
            z[idx] = znew
        _sync(model)
        times["denoise"] = time.perf_counter() - t0

        # ---- decode
        t0 = time.perf_counter()
        imgs = []
        zdec = (z / float(vae.config.scaling_factor)).to(dtype)
        for s in range(0, n_items, params.vae_batch_size):
            imgs.append(vae.decode(zdec[s : s + params.vae_batch_size]).sample.float())
        img = ((torch.cat(imgs) + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()
        times["decode"] = time.perf_counter() - t0

        z0_np = z0.cpu().numpy() if keep_latents else None
        zf_np = z.cpu().numpy() if keep_latents else None
    batch_seconds = time.perf_counter() - t_all
    share = {f"{k}_s": v / n_items for k, v in times.items()}
    outcomes = []
    for i, it in enumerate(items):
        restored = img[i].astype(np.float32) if n_steps[i] > 0 else it.crop.astype(np.float32).copy()
        outcomes.append(
            RestoreOutcome(
                key=it.key,
                restored=restored,
                seed=int(it.seed),
                strength=float(it.strength),
                steps_run=n_steps[i],
                method=params.method,
                batch_size=n_items,
                oom_backoffs=0,
                timings={**share, "batch_s": batch_seconds},
                latent_input=z0_np[i] if z0_np is not None else None,
                latent_final=zf_np[i] if zf_np is not None else None,
            )
        )
    return outcomes
