"""Model loading from local files: diffusers folder and single original-layout safetensors, pickle refusal,
weights hashing, the shipped SD 1.5 config, no network, and the no-model path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import diffusion_fixtures
import pytest
import torch
from albumd.pipeline.diffusion import (
    SHIPPED_CONFIG,
    DiffusionParams,
    ModelConfig,
    ModelError,
    build_prompt,
    check_model,
    doctor_text,
    load_pipeline,
    no_model_record,
    seed_for,
    weights_sha256,
)
from albumd.pipeline.diffusion import loading as loading_mod
from albumd.pipeline.diffusion.tiny import TinyModelFiles
from diffusion_fixtures import block_network
from safetensors.torch import save_file

tiny_files = diffusion_fixtures.tiny_files
tiny_model = diffusion_fixtures.tiny_model


def _state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_single_file_and_folder_load_the_same_weights_offline(
    tiny_files: TinyModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = block_network(monkeypatch)
    folder = load_pipeline(ModelConfig(path=tiny_files.folder), cache_dir=tmp_path)
    single = load_pipeline(
        ModelConfig(path=tiny_files.single_file, config_path=tiny_files.config_dir), cache_dir=tmp_path
    )
    assert attempts == []
    # from_single_file really converted the original SD key layout (model.diffusion_model.*, ...)
    from safetensors import safe_open

    with safe_open(str(tiny_files.single_file), framework="pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in keys)
    assert any(k.startswith("first_stage_model.encoder.down.0.block.0.") for k in keys)
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)
    for name in ("unet", "vae", "text_encoder"):
        _state_dicts_equal(getattr(folder.pipe, name), getattr(single.pipe, name))
    assert type(single.pipe.scheduler).__name__ == "DDIMScheduler"
    assert single.pipe.scheduler.config.clip_sample is False
    audit = single.audit()
    assert audit["sha256"] == weights_sha256(tiny_files.single_file) and len(audit["sha256"]) == 64
    assert audit["device"] == "cpu" and audit["dtype"] == "float32"
    assert folder.audit()["sha256"] != audit["sha256"]


def test_custom_vae_from_single_file(tiny_files: TinyModelFiles, tmp_path: Path) -> None:
    vae_sd = {k: v for k, v in _load(tiny_files.single_file).items() if k.startswith("first_stage_model.")}
    vae_file = tmp_path / "vae.safetensors"
    save_file(vae_sd, str(vae_file))
    cfg = ModelConfig(path=tiny_files.folder, vae_path=vae_file, config_path=tiny_files.config_dir)
    model = load_pipeline(cfg, cache_dir=tmp_path)
    ref = load_pipeline(ModelConfig(path=tiny_files.folder), cache_dir=tmp_path)
    _state_dicts_equal(model.pipe.vae, ref.pipe.vae)
    assert model.audit()["vae_sha256"] == weights_sha256(vae_file)


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_weights_hash_is_cached_by_path_size_mtime(
    tiny_files: TinyModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = loading_mod._file_sha256

    def counting(p: Path) -> str:
        calls.append(p)
        return real(p)

    monkeypatch.setattr(loading_mod, "_file_sha256", counting)
    f = tmp_path / "w.safetensors"
    shutil.copy(tiny_files.single_file, f)
    first = weights_sha256(f, tmp_path / "cache")
    assert weights_sha256(f, tmp_path / "cache") == first and len(calls) == 1
    cache = json.loads((tmp_path / "cache" / "model_sha256.json").read_text())
    assert list(cache.values()) == [first]
    f.write_bytes(f.read_bytes() + b"\0")  # size and mtime change -> hashed again
    assert weights_sha256(f, tmp_path / "cache") != first and len(calls) == 2
    folder_hash = weights_sha256(tiny_files.folder, tmp_path / "cache")
    assert weights_sha256(tiny_files.folder, tmp_path / "cache") == folder_hash


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_checkpoint_refused_unless_allowed(tmp_path: Path, suffix: str) -> None:
    ckpt = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {}}, ckpt)
    problems = check_model(ModelConfig(path=ckpt))
    assert len(problems) == 1 and "arbitrary code" in problems[0] and "allow_pickle" in problems[0]
    with pytest.raises(ModelError, match="arbitrary code"):
        load_pipeline(ModelConfig(path=ckpt))
    assert check_model(ModelConfig(path=ckpt, allow_pickle=True)) == []


def test_folder_with_only_pickle_weights_refused(tiny_files: TinyModelFiles, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_files.folder, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(_load(weights), folder / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    problems = check_model(ModelConfig(path=folder))
    assert any("arbitrary code" in p for p in problems)
    assert check_model(ModelConfig(path=folder, allow_pickle=True)) == []


def test_check_model_reports_what_to_fix(tmp_path: Path, tiny_files: TinyModelFiles) -> None:
    assert check_model(ModelConfig()) == []
    assert check_model(ModelConfig(path=tiny_files.folder)) == []
    assert check_model(ModelConfig(path=tiny_files.single_file, config_path=tiny_files.config_dir)) == []
    assert "does not exist" in check_model(ModelConfig(path=tmp_path / "nope.safetensors"))[0]
    sd2 = tmp_path / "sd2.safetensors"
    save_file({"cond_stage_model.model.positional_embedding": torch.zeros(2)}, str(sd2))
    assert "SD 2.x" in check_model(ModelConfig(path=sd2))[0]
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    assert "cannot be read" in check_model(ModelConfig(path=junk))[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "model_index.json" in check_model(ModelConfig(path=empty))[0]
    bad_vae = ModelConfig(path=tiny_files.folder, vae_path=tmp_path / "vae.ckpt")
    assert "does not exist" in check_model(bad_vae)[0]


def test_no_model_configured_is_a_skipped_stage_and_doctor_explains() -> None:
    record = no_model_record(DiffusionParams())
    assert record.name == "diffusion" and record.skipped and "model.path" in record.skipped
    assert record.to_json()["skipped"] == record.skipped
    text = "\n".join(doctor_text(ModelConfig()))
    assert "model:" in text and "path:" in text and ".safetensors" in text and "ALBUMD_MODEL__PATH" in text
    with pytest.raises(ModelError):
        load_pipeline(ModelConfig())


def test_shipped_sd15_config_and_clip_tokenizer() -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(SHIPPED_CONFIG / "tokenizer"), local_files_only=True)
    assert len(tok) == 49408
    # ids of openai/clip-vit-large-patch14: <|startoftext|> a photo of <|endoftext|>
    assert tok("a photo of").input_ids == [49406, 320, 1125, 539, 49407]
    assert UNet2DConditionModel.load_config(str(SHIPPED_CONFIG / "unet"))["block_out_channels"] == [
        320,
        640,
        1280,
        1280,
    ]
    assert AutoencoderKL.load_config(str(SHIPPED_CONFIG / "vae"))["scaling_factor"] == 0.18215
    assert CLIPTextConfig.from_pretrained(str(SHIPPED_CONFIG / "text_encoder")).hidden_size == 768
    index = json.loads((SHIPPED_CONFIG / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["scheduler"] == ["diffusers", "DDIMScheduler"]


def test_prompts_and_seeds() -> None:
    p = DiffusionParams()
    prompt, negative = build_prompt(p)
    assert "a person" in prompt and negative == p.negative_prompt
    named, _ = build_prompt(
        p, "Grandma Rose, an elderly woman", {"hair": "curly grey hair", "acc": "glasses"}
    )
    assert "Grandma Rose, an elderly woman, curly grey hair, glasses" in named
    custom = p.model_copy(update={"prompt_template": "portrait of {subject}", "default_subject": "someone"})
    assert build_prompt(custom)[0] == "portrait of someone"
    sha = "ab" * 32
    assert seed_for(sha, 0) == seed_for(sha.upper(), 0)
    assert len({seed_for(sha, i) for i in range(100)}) == 100
    assert 0 <= seed_for(sha, 3) < 2**63
    assert seed_for(sha, 0) != seed_for("cd" * 32, 0)
