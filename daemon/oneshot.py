"""`albumd restore FILE... --out DIR`: the daemon's pipeline and audit records without the queue."""

from __future__ import annotations

from pathlib import Path

from albumd.pipeline.imageio import ImageDecodeError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from .archive import ArchiveError, ArchiveWriter
from .config import Config
from .face_stage import FaceStage
from .naming import next_free_key, safe_component
from .process import PhotoJob, prepare, short_error, write


def restore_files(files: list[Path], out: Path, config: Config | None, console: Console) -> int:
    out.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = Config(inbox=out, archive=out, state_dir=out)
    writer = ArchiveWriter(out, int(config.umask, 8))
    faces = FaceStage.from_config(config)
    failures = 0
    used: set[str] = set()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("restoring", total=len(files))
        for path in files:
            progress.update(task, description=f"restoring {path.name}")
            key = next_free_key(
                safe_component(path.stem, "photo"),
                lambda k: k in used or (out / f"{k}.audit.json").exists(),
            )
            used.add(key)
            try:
                job = PhotoJob(path.read_bytes(), path.name, "", key)
                prep = prepare(job, config)
                faces.run([prep])
                audit = write(prep, config, writer, faces.model_info())
                console.print(
                    f"[green]ok[/green] {escape(str(path))} -> {escape(str(out / audit))}", highlight=False
                )
            except (ImageDecodeError, ArchiveError, OSError) as exc:
                failures += 1
                console.print(f"[red]failed[/red] {escape(str(path))}: {escape(str(exc))}", highlight=False)
            except Exception as exc:
                failures += 1
                console.print(
                    f"[red]failed[/red] {escape(str(path))}: {escape(short_error(exc))}", highlight=False
                )
            progress.advance(task)
    return failures
