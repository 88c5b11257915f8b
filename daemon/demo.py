"""`albumd demo`: the whole daemon, once, on a sample album it makes itself.

The sample photos are real photographs that scikit-image ships (astronaut, camera man, coffee, cat),
aged with fade, a colour cast, grain, scratches and dust by the project's degradation model, and written
as the formats scanners produce (JPEG, PNG, 16-bit TIFF, greyscale).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import yaml
from albumd.pipeline.degrade import age_photo
from albumd.pipeline.imageio import encode_image
from rich.console import Console
from rich.table import Table

from .config import load_config
from .logs import setup_logging
from .service import Daemon

ALBUM = "Grandma's album 1962"
ROLE_TEXT = {
    "restored": "the restored photo (same bit depth, ICC profile and EXIF as the scan)",
    "original": "byte-identical copy of the scan as it arrived",
    "compare": "before | after, side by side, for a quick look",
    "audit": "JSON audit record: input hash, every stage with its parameters and timing, outputs",
    "defect_mask": "where dust and scratches were found and repaired",
}


def sample_photos() -> dict[str, tuple[np.ndarray, str, int]]:
    """name -> (aged pixels, format, bit depth)."""
    from skimage import data

    def rgb(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32) / 255.0
        return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]

    return {
        "astronaut.jpg": (age_photo(rgb(data.astronaut()), seed=1), "jpg", 8),
        "camera man.png": (
            age_photo(rgb(data.camera()), seed=2).mean(axis=2, keepdims=True).repeat(3, 2),
            "png",
            8,
        ),
        "coffee.tif": (age_photo(rgb(data.coffee()), seed=3), "tif", 16),
        "chelsea.png": (age_photo(rgb(data.chelsea()), seed=4), "png", 8),
    }


def make_sample_album(inbox: Path) -> list[Path]:
    album = inbox / ALBUM
    album.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (pixels, fmt, depth) in sample_photos().items():
        grey = bool(np.allclose(pixels[..., 0], pixels[..., 1]))
        path = album / name
        path.write_bytes(encode_image(pixels, fmt, bit_depth=depth, greyscale=grey))  # type: ignore[arg-type]
        paths.append(path)
    return paths


def run_demo(folder: Path | None, console: Console) -> int:
    base = folder or Path(tempfile.mkdtemp(prefix="albumd-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    inbox, archive, state = base / "inbox", base / "archive", base / "state"
    for d in (inbox, archive, state):
        d.mkdir(exist_ok=True)
    console.print(f"[bold]albumd demo[/bold] in {base}")
    photos = make_sample_album(inbox)
    console.print(f"made {len(photos)} aged sample photos in {inbox / ALBUM}")
    config_path = base / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "inbox": str(inbox),
                "archive": str(archive),
                "state_dir": str(state),
                "watcher": {"stable_s": 0.5},
            }
        )
    )
    config = load_config(config_path, environ={})
    setup_logging("text", "WARNING")
    console.print("running the daemon once (ingest, queue, restore, archive)...")
    code = Daemon(config, once=True).run()
    if code != 0:
        console.print(f"[red]the daemon exited with {code}[/red]")
        return code
    table = Table(title=f"results in {archive}")
    table.add_column("file", overflow="fold")
    table.add_column("what it is", overflow="fold")
    audits = sorted(archive.rglob("*.audit.json"))
    for audit_path in audits:
        audit = json.loads(audit_path.read_text())
        for out in audit["outputs"] + [{"role": "audit", "path": str(audit_path.relative_to(archive))}]:
            table.add_row(out["path"], ROLE_TEXT.get(out["role"], out["role"]))
    console.print(table)
    if len(audits) != len(photos):
        console.print(f"[red]expected {len(photos)} archived photos, found {len(audits)}[/red]")
        return 1
    console.print(
        "The diffusion (face) stage was skipped: no SD 1.5 weights are configured (see `albumd doctor`).\n"
        f"Config used: {config_path}. Run `albumd --config {config_path} status` to see the job table."
    )
    return 0
