"""One photo from bytes to archived outputs and audit record; shared by the worker and `albumd restore`.

Split in three so a worker can batch the GPU stage across photos: ``prepare`` (decode + CPU stages),
the GPU stage over many prepared photos, and ``write`` (encode, write atomically, audit last).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from albumd.pipeline.faces import align_face
from albumd.pipeline.imageio import encode_image, load_image, thumbnail
from albumd.pipeline.photo import PreparedPhoto, PreparedPrint, finish_photo, prepare_photo
from albumd.pipeline.stage import StageRecord, jsonable

from .archive import ArchiveWriter, Written
from .config import Config
from .models import utcnow

SCHEMA_VERSION = 1
SOFTWARE_PACKAGES = (
    "albumd", "numpy", "pillow", "opencv-python-headless", "scikit-image", "scipy", "dlib-bin",
    "torch", "diffusers", "transformers",
)  # fmt: skip


@dataclass
class PhotoJob:
    """What the pipeline needs to know about a photo besides its bytes."""

    data: bytes
    rel_path: str
    album: str
    archive_key: str
    job_id: int | None = None
    sha256: str = ""
    started_at: datetime = field(default_factory=utcnow)
    """When work on this photo began (its bytes read, decoding next): the audit's ``started_at``. In a batch
    the photo then waits for the others' CPU stages and the shared GPU stage before it is written, so
    ``finished_at - started_at`` is not its own work time; ``stages[].seconds`` are."""

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = hashlib.sha256(self.data).hexdigest()


@dataclass
class Prepared:
    job: PhotoJob
    photo: PreparedPhoto
    errors: list[str] = field(default_factory=list)
    decode: StageRecord | None = None
    """The decode, timed like a stage so that the audit says where all of the photo's time went."""


def prepare(job: PhotoJob, config: Config) -> Prepared:
    """Decode and run the CPU stages. Raises ImageDecodeError for a file that is not a usable photo."""
    start = time.perf_counter()
    loaded = load_image(job.data, max_pixels=config.max_image_pixels)
    decode = StageRecord(
        name="decode",
        seconds=time.perf_counter() - start,
        parameters={"max_image_pixels": config.max_image_pixels},
        result={
            "format": loaded.format,
            "width": loaded.width,
            "height": loaded.height,
            "bit_depth": loaded.bit_depth,
        },
    )
    photo = prepare_photo(loaded, config.pipeline)
    return Prepared(job=job, photo=photo, decode=decode)


class _Recorder(ArchiveWriter):
    """A photo's writer that notes each archive path as soon as its file is in place."""

    def __init__(self, writer: ArchiveWriter, written: list[str]) -> None:
        super().__init__(writer.root)
        self.file_mode, self.dir_mode = writer.file_mode, writer.dir_mode
        self.written = written

    def write(self, role: str, relpath: str, data: bytes) -> Written:
        out = super().write(role, relpath, data)
        self.written.append(relpath)
        return out


def write(
    prep: Prepared,
    config: Config,
    writer: ArchiveWriter,
    model_info: dict[str, Any],
    written: list[str] | None = None,
) -> str:
    """Encode and write every output, the audit record last. Returns the audit's archive path.

    ``written`` receives each archive path the moment its file is in place, so a caller whose write
    failed halfway knows which files no audit record vouches for and can take them back.
    """
    if written is not None:
        writer = _Recorder(writer, written)
    photo = finish_photo(prep.photo, config.pipeline)
    # Timed from here to the audit: encoding, the atomic writes and their fsyncs (the `write` stage).
    write_start = time.perf_counter()
    job = prep.job
    src = photo.source
    key = job.archive_key
    folder = writer.target(key).parent
    # A rerun after a crash overwrites the same names; drop what an interrupted write left behind.
    writer.remove_temp_files(folder)
    outputs: list[Written] = []
    ext = PurePosixPath(job.rel_path).suffix.lower() or ".bin"
    outputs.append(writer.write("original", f"{key}.original{ext}", job.data))
    split = len(photo.prints) > 1 or any(p.index > 0 for p in photo.prints)
    prints_audit: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = [dict(r.to_json(), print=None) for r in photo.stages]
    if prep.decode is not None:
        stages.insert(0, dict(prep.decode.to_json(), print=None))
    faces: list[dict[str, Any]] = []
    for p in photo.prints:
        base = f"{key}_p{p.index}" if split else key
        print_outputs = _write_print(
            p, base, src.bit_depth, src.greyscale, src.icc_profile, src.exif, config, writer
        )
        outputs.extend(print_outputs)
        stages.extend(dict(r.to_json(), print=p.index) for r in p.stages)
        faces.extend(dict(f, print=p.index) for f in p.faces)
        prints_audit.append(
            {
                "index": p.index,
                "box": p.box,
                "angle": round(float(p.angle), 3),
                "width": int(p.image.shape[1]),
                "height": int(p.image.shape[0]),
                "outputs": [o.path for o in print_outputs],
            }
        )
    audit = {
        "schema_version": SCHEMA_VERSION,
        "job_id": job.job_id,
        "status": "done",
        "input": {
            "path": job.rel_path,
            "album": job.album,
            "sha256": job.sha256,
            "bytes": len(job.data),
            "width": src.width,
            "height": src.height,
            "bit_depth": src.bit_depth,
            "format": src.format,
            "mode": src.mode,
            "greyscale": src.greyscale,
            "frames": src.frames,
            "icc_profile": src.icc_profile is not None,
            "exif": src.exif is not None,
        },
        "prints": prints_audit,
        "outputs": [{"role": o.role, "path": o.path, "sha256": o.sha256, "bytes": o.bytes} for o in outputs],
        "faces": faces,
        "stages": [*stages, _write_record(config, outputs, time.perf_counter() - write_start)],
        "model": model_info,
        "software": software_versions(),
        "config_sha256": config.fingerprint(),
        "started_at": job.started_at.isoformat(),
        "finished_at": utcnow().isoformat(),
        "notes": list(src.notes),
        "errors": list(prep.errors),
    }
    audit_path = f"{key}.audit.json"
    writer.write("audit", audit_path, json.dumps(jsonable(audit), indent=2, ensure_ascii=False).encode())
    return audit_path


def _write_record(config: Config, outputs: list[Written], seconds: float) -> dict[str, Any]:
    """The `write` stage: every output but the audit itself encoded, written atomically and fsynced."""
    params = {"output_format": config.output_format, "png_compress_level": config.png_compress_level}
    result = {"outputs": len(outputs), "bytes": sum(o.bytes for o in outputs)}
    return dict(
        StageRecord(name="write", seconds=seconds, parameters=params, result=result).to_json(), print=None
    )


def _write_print(
    p: PreparedPrint,
    base: str,
    bit_depth: int,
    greyscale: bool,
    icc: bytes | None,
    exif: bytes | None,
    config: Config,
    writer: ArchiveWriter,
) -> list[Written]:
    fmt = config.output_format
    out = [
        writer.write(
            "restored",
            f"{base}.restored.{fmt}",
            encode_image(
                p.image,
                fmt,
                bit_depth=bit_depth,
                greyscale=greyscale,
                icc_profile=icc,
                exif=exif,
                png_compress_level=config.png_compress_level,
            ),
        )
    ]
    before = p.before if p.before is not None else p.image
    out.append(
        writer.write(
            "compare", f"{base}.compare.jpg", compare_sheet(before, p.image, config.compare_max_side, icc)
        )
    )
    if config.face_crops:
        for face in p.found_faces:
            crop_before = align_face(before, face.landmarks5, config.pipeline.faces.align).crop
            crop_after = align_face(p.image, face.landmarks5, config.pipeline.faces.align).crop
            sheet = compare_sheet(crop_before, crop_after, 2 * crop_after.shape[1] + 16, icc)
            out.append(writer.write("face_crops", f"{base}.face{face.index}.jpg", sheet))
    # Several stages may produce the same kind of artifact (the face matte is found, then pasted):
    # the last one describes the output.
    artifacts = {role: arr for record in p.stages for role, arr in record.artifacts.items()}
    for role, arr in artifacts.items():
        data = encode_image(arr, "png", greyscale=arr.ndim == 2, png_compress_level=config.png_compress_level)
        out.append(writer.write(role, f"{base}.{role}.png", data))
    return out


def compare_sheet(before: np.ndarray, after: np.ndarray, max_side: int, icc: bytes | None) -> bytes:
    """Before | after, side by side at the same height, as a JPEG for a quick morning review."""
    # Both sides are brought to the sheet's height first (at most max_side): a full-size sheet of a
    # 1 x 20,000,000 strip would need terabytes for its gap column alone.
    h = min(max(before.shape[0], after.shape[0]), max_side)
    a = _fit_height(before, h)
    b = _fit_height(after, h)
    gap = np.ones((h, max(4, h // 100), 3), np.float32)
    sheet = thumbnail(np.concatenate([a, gap, b], axis=1), max_side)
    return encode_image(sheet, "jpg", icc_profile=icc, quality=88)


def _fit_height(img: np.ndarray, h: int) -> np.ndarray:
    if img.shape[0] == h:
        return img
    import cv2

    w = max(1, round(img.shape[1] * h / img.shape[0]))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in SOFTWARE_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def short_error(exc: BaseException) -> str:
    """The error text recorded on a job: type and message, plus where it happened for unexpected ones."""
    text = f"{type(exc).__name__}: {exc}"
    tb = traceback.extract_tb(exc.__traceback__)
    if tb:
        last = tb[-1]
        text += f" (at {PurePosixPath(last.filename).name}:{last.lineno} in {last.name})"
    return text[:2000]
