"""The stage interface every restoration step follows, and a helper that times a stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

Image = np.ndarray
"""(H, W, 3) float32 in [0, 1]; greyscale photos are still three equal channels."""


@dataclass
class StageRecord:
    """What one stage did to one image; serialised into the audit record's ``stages`` list."""

    name: str
    seconds: float = 0.0
    parameters: dict[str, Any] = field(default_factory=dict)
    # Measured outcomes (e.g. coverage of a defect mask, the cast that was removed).
    result: dict[str, Any] = field(default_factory=dict)
    # Why the stage did nothing (disabled in config, nothing to do, no model configured); None if it ran.
    skipped: str | None = None
    # Extra images the stage wants archived beside the outputs (e.g. a defect mask), keyed by role.
    # Arrays are (H, W) or (H, W, 3) float32 in [0, 1]; the archive writer names and hashes them.
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 4),
            "parameters": _jsonable(self.parameters),
            "result": _jsonable(self.result),
            "skipped": self.skipped,
        }


P_contra = TypeVar("P_contra", contravariant=True)


class Stage(Protocol[P_contra]):
    def __call__(self, image: Image, params: P_contra, /) -> tuple[Image, StageRecord]: ...


@contextmanager
def timed(record: StageRecord) -> Iterator[StageRecord]:
    """Fill ``record.seconds`` with the wall time of the block."""
    start = time.perf_counter()
    try:
        yield record
    finally:
        record.seconds = time.perf_counter() - start


def skipped(name: str, reason: str, params: Any = None) -> StageRecord:
    return StageRecord(name=name, parameters=_jsonable(params) if params is not None else {}, skipped=reason)


def run_stages(
    image: Image, stages: list[tuple[Callable[[Image, Any], tuple[Image, StageRecord]], Any]]
) -> tuple[Image, list[StageRecord]]:
    """Apply stages in order, collecting their records."""
    records: list[StageRecord] = []
    for stage, params in stages:
        image, record = stage(image, params)
        records.append(record)
    return image, records


def _jsonable(value: Any) -> Any:
    """Turn dataclasses, pydantic models, numpy scalars and arrays into plain JSON values."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if hasattr(value, "model_dump"):
        return _jsonable(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return str(value)


jsonable = _jsonable
