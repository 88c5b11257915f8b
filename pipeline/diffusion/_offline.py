"""Force the Hugging Face libraries offline before they are imported: albumd never fetches anything."""

from __future__ import annotations

import os


def force_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DISABLE_TELEMETRY"] = "1"
    try:  # the constant is read at import time; patch it in case the hub library was imported first
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
        hub_constants.HF_HUB_DISABLE_TELEMETRY = True
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of diffusers
        pass


force_offline()
