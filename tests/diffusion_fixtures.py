"""Shared fixtures for the diffusion tests: the tiny random-weight SD 1.5 model, built once per session.

Bind the fixtures in a test module with ``tiny_model = diffusion_fixtures.tiny_model`` (an assignment, so
linters see no shadowed import); the model is built once per session whichever module asks first.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from albumd.pipeline.diffusion import LoadedModel, ModelConfig, RestoreItem, load_pipeline
from albumd.pipeline.diffusion.tiny import TINY_CROP, TinyModelFiles, save_tiny_model

# 2 CPU cores shared by several jobs: OpenMP threads spinning against each other make a tiny UNet call
# 30x slower than one thread does.
torch.set_num_threads(1)

CROP = TINY_CROP


_SESSION: dict[str, object] = {}  # built once per test session, whichever module asks first


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> TinyModelFiles:
    if "files" not in _SESSION:
        _SESSION["files"] = save_tiny_model(tmp_path_factory.mktemp("tiny-sd15"), seed=1234)
    files = _SESSION["files"]
    assert isinstance(files, TinyModelFiles)
    return files


@pytest.fixture(scope="session")
def tiny_model(tiny_files: TinyModelFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedModel]:
    if "model" not in _SESSION:
        cache = tmp_path_factory.mktemp("cache")
        _SESSION["model"] = load_pipeline(ModelConfig(path=tiny_files.folder), cache_dir=cache)
    model = _SESSION["model"]
    assert isinstance(model, LoadedModel)
    yield model


def face_matte(size: int = CROP) -> np.ndarray:
    """An elliptical face matte with a soft edge, like the faces stage's."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    r = np.sqrt((xx - 0.5) ** 2 / 0.22**2 + (yy - 0.5) ** 2 / 0.3**2)
    return np.clip((1.15 - r) / 0.3, 0.0, 1.0).astype(np.float32)


def synthetic_face(seed: int, size: int = CROP) -> np.ndarray:
    """A smooth synthetic 'photo' with a face-like blob, eyes and a mouth; deterministic from seed."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    base = rng.uniform(0.2, 0.8, 3)[None, None, :] * (0.6 + 0.4 * xx[..., None])
    face = face_matte(size)[..., None] * (np.array([0.85, 0.68, 0.58]) - base)
    img = base + face
    for cx in (0.4, 0.6):
        img[((xx - cx) ** 2 + (yy - 0.42) ** 2) < 0.0016] = 0.1
    img[(np.abs(xx - 0.5) < 0.08) & (np.abs(yy - 0.65) < 0.015)] = 0.3
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def make_items(n: int, strengths: list[float] | None = None, size: int = CROP) -> list[RestoreItem]:
    strengths = strengths or [0.3, 0.5, 0.8, 0.4, 0.6, 0.7][:n]
    return [
        RestoreItem(
            crop=synthetic_face(100 + i, size),
            matte=face_matte(size),
            prompt=f"the photo of person {i}",
            negative_prompt="blurry" if i % 2 else "",
            seed=1000 + i,
            strength=strengths[i % len(strengths)],
            key=f"photo{i // 2}:{i % 2}",
        )
        for i in range(n)
    ]


class ThumbnailEmbedder:
    """Test double for the faces stage's ``embed_aligned_crop`` (a system edge this package takes as a
    parameter): an 8x8 luminance thumbnail of the crop's centre as the "identity" vector. Identical
    crops give distance 0; unrelated images (what a random-weight model produces) give distances > 1."""

    def __init__(self, none_for_restored: bool = False) -> None:
        self.calls = 0
        self.none_for_restored = none_for_restored
        self.originals: set[bytes] = set()

    def __call__(self, crop: np.ndarray) -> np.ndarray | None:
        self.calls += 1
        if self.none_for_restored and crop.tobytes() not in self.originals:
            return None
        s = crop.shape[0]
        centre = crop[s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].mean(axis=2)
        k = centre.shape[0] // 8
        return centre[: 8 * k, : 8 * k].reshape(8, k, 8, k).mean(axis=(1, 3)).ravel().astype(np.float64)


def block_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every socket connect / DNS lookup fail loudly and record the attempts."""
    import socket

    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted during a test that must stay offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def latent_outside(latent: np.ndarray, matte: np.ndarray) -> np.ndarray:
    """Latent pixels whose matte (downsampled to the latent grid) is exactly 0."""
    import cv2

    h = latent.shape[-1]
    m = cv2.resize(matte, (h, h), interpolation=cv2.INTER_AREA)
    return latent[:, m == 0]
