"""`albumd`: the command line (typer), output through rich."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import Config, ConfigError, load_config
from .logs import setup_logging

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Restore scanned family photos into an archive."
)
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(db_app, name="db")
# Soft wrap: a path or an error message must reach a log or a script on one line, whatever the width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class State:
    config_path: Path | None = None
    log_format: str | None = None


def _config() -> Config:
    try:
        config = load_config(State.config_path)
    except ConfigError as exc:
        # markup off: the message holds "[from ...]", which rich would take for a style tag
        err_console.print(f"albumd: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    if State.log_format:
        config = config.model_copy(update={"log_format": State.log_format})
    return config


@app.callback()
def main_options(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="config file (default: $ALBUMD_CONFIG, /etc/albumd/config.yaml, ./config.yaml)",
        ),
    ] = None,
    log_format: Annotated[str | None, typer.Option("--log-format", help="text or json")] = None,
) -> None:
    State.config_path = config
    if log_format not in (None, "text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    State.log_format = log_format


@app.command()
def run(
    once: Annotated[bool, typer.Option("--once", help="ingest the inbox, drain the queue, exit")] = False,
) -> None:
    """Run the daemon in the foreground (systemd runs this)."""
    from .service import Daemon

    config = _config()
    setup_logging(config.log_format, config.log_level)
    raise typer.Exit(Daemon(config, once=once).run())


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Counts by state, the current batch, and failures with their error text."""
    from .reporting import collect_status

    config = _config()
    report = collect_status(config)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        return
    table = Table(title="albumd jobs")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state, n in report["counts"].items():
        table.add_row(state, str(n))
    console.print(table)
    for w in report["workers"]:
        batch = w["current_batch"]
        line = f"worker {w['id']}: {w['state']}"
        if batch:
            line += f", batch {batch['done']}/{batch['total']} (jobs {', '.join(map(str, batch['job_ids']))})"
        console.print(line, markup=False, highlight=False)
    for r in report["running"]:
        console.print(
            f"running: job {r['job_id']} {r['path']} — {r['progress']}", markup=False, highlight=False
        )
    if report["failed"]:
        ft = Table(title="failed and quarantined")
        for col in ("job", "state", "path", "error"):
            ft.add_column(col, overflow="fold")
        for f in report["failed"]:
            ft.add_row(str(f["job_id"]), f["state"], escape(f["path"]), escape(f["error"]))
        console.print(ft)


@app.command()
def retry(
    job_ids: Annotated[list[int] | None, typer.Argument(help="job ids to retry")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="retry every failed and quarantined job")] = False,
) -> None:
    """Put failed or quarantined jobs back in the queue."""
    from . import db
    from .jobstore import JobStore

    if not job_ids and not failed:
        err_console.print("albumd retry: name job ids or pass --failed")
        raise typer.Exit(2)
    config = _config()
    engine = db.make_engine(config.db_url)
    db.upgrade(engine)
    n = JobStore(db.make_sessionmaker(engine)).retry(job_ids, failed=failed)
    console.print(f"{n} job(s) queued again")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the newest migration."""
    from . import db

    config = _config()
    engine = db.make_engine(config.db_url)
    before, after = db.upgrade(engine)
    console.print(
        f"database {engine.url.render_as_string(hide_password=True)}: {before or 'empty'} -> {after}"
    )


@app.command()
def doctor() -> None:
    """Check config, database, GPU, model and disk; say what is wrong and how to fix it."""
    from .doctor import run_checks

    try:
        config: Config | None = load_config(State.config_path)
        config_error = None
    except ConfigError as exc:
        config, config_error = None, str(exc)
    results = run_checks(config, config_error)
    table = Table(title="albumd doctor")
    for col in ("check", "status", "detail"):
        table.add_column(col, overflow="fold")
    colours = {"ok": "green", "warn": "yellow", "fail": "red"}
    for r in results:
        table.add_row(r.name, f"[{colours[r.status]}]{r.status}[/]", r.detail)
    console.print(table)
    raise typer.Exit(1 if any(r.status == "fail" for r in results) else 0)


@app.command()
def restore(
    files: Annotated[list[Path], typer.Argument(help="photos to restore", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
) -> None:
    """Restore files once, without the queue: same pipeline, same outputs and audit records."""
    from .oneshot import restore_files

    config = _config() if State.config_path or _has_default_config() else None
    failures = restore_files(files, out, config, console)
    raise typer.Exit(1 if failures else 0)


def _has_default_config() -> bool:
    from .config import find_config_path

    return find_config_path(None) is not None


people_app = typer.Typer(help="People recognised across the archive: list, name, prompt.")
app.add_typer(people_app, name="people")


def _people():  # type: ignore[no-untyped-def]
    from . import db
    from .people import PeopleStore

    config = _config()
    engine = db.make_engine(config.db_url)
    db.upgrade(engine)
    return PeopleStore(db.make_sessionmaker(engine), config.state_dir / "people")


@people_app.callback(invoke_without_command=True)
def people_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the people found, with a face thumbnail and the photos they are in."""
    if ctx.invoked_subcommand is not None:
        return
    people = _people().list()
    if as_json:
        sys.stdout.write(json.dumps(people, indent=2, ensure_ascii=False) + "\n")
        return
    table = Table(title="people")
    for col in ("id", "name", "faces", "prompt", "thumbnail", "photos"):
        table.add_column(col, overflow="fold")
    for p in people:
        photos = ", ".join(p["photos"][:5]) + (
            f" (+{len(p['photos']) - 5} more)" if len(p["photos"]) > 5 else ""
        )
        table.add_row(
            str(p["person_id"]),
            escape(p["name"] or "-"),
            str(p["faces"]),
            escape(p["prompt"] or "-"),
            escape(p["thumbnail"] or "-"),
            escape(photos),
        )
    console.print(table)


@people_app.command("name")
def people_name(person_id: int, name: str) -> None:
    """Name a person (e.g. albumd people name 3 "Grandma Rose")."""
    if not _people().update(person_id, name=name.strip() or None):
        err_console.print(f"albumd: no person {person_id} (see `albumd people`)")
        raise typer.Exit(1)
    console.print(f"person {person_id} is now {name!r}", markup=False)


@people_app.command("prompt")
def people_prompt(
    person_id: int,
    prompt: Annotated[str, typer.Argument(help='e.g. "elderly woman, grey curly hair"; "" clears it')],
) -> None:
    """Give a person a prompt; their faces are restored with it from now on."""
    if not _people().update(person_id, prompt=prompt.strip() or None):
        err_console.print(f"albumd: no person {person_id} (see `albumd people`)")
        raise typer.Exit(1)
    console.print(
        f"person {person_id}: prompt {'cleared' if not prompt.strip() else repr(prompt)}", markup=False
    )


@app.command()
def demo(
    keep: Annotated[
        Path | None, typer.Option("--dir", help="use this folder instead of a temporary one")
    ] = None,
) -> None:
    """Run the whole daemon once on a built-in sample album and show where the results are."""
    from .demo import run_demo

    raise typer.Exit(run_demo(keep, console))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
