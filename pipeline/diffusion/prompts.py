"""Per-face prompts after SDFD's attribute approach: a template filled with the person's attributes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from .params import DiffusionParams


def build_prompt(
    params: DiffusionParams,
    person: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """``(prompt, negative_prompt)`` for one face.

    ``person`` is the caller's prompt for a recognised person (e.g. "an elderly woman with curly grey hair",
    set by the user who named the person); without it the neutral ``default_subject`` is used -- albumd never
    guesses ethnicity, age or gender. ``attributes`` are SDFD-style extra attributes the caller knows
    (hairstyle, accessories, medium such as "black and white photo"), appended in the order given."""
    subject = (person or "").strip() or params.default_subject
    extras = [v.strip() for v in (attributes or {}).values() if v and v.strip()]
    if extras:
        subject = ", ".join([subject, *extras])
    return params.prompt_template.format(subject=subject), params.negative_prompt


def seed_for(sha256_hex: str, face_index: int) -> int:
    """Deterministic per-face seed from the photo's sha256 and the face index (63 bits, torch-safe)."""
    digest = hashlib.sha256(f"albumd-face:{sha256_hex.lower()}:{face_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)
