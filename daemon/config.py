"""The configuration: a YAML file validated by pydantic, every key overridable from the environment.

``ALBUMD_<KEY>`` overrides a top-level key, ``ALBUMD_<SECTION>__<KEY>`` a nested one; values are parsed
as YAML so ``ALBUMD_BATCH_SIZE=4`` is a number and ``ALBUMD_PROCESSING_WINDOW=null`` clears the window.
Every invalid value is reported with its dotted key and where it came from (file or variable).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import time
from pathlib import Path
from typing import Any, Literal

import yaml
from albumd.pipeline.diffusion.params import ModelConfig
from albumd.pipeline.imageio import DEFAULT_PNG_COMPRESS_LEVEL
from albumd.pipeline.photo import PipelineSettings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "ALBUMD_"
CONFIG_ENV = "ALBUMD_CONFIG"
DEFAULT_PATHS = (Path("/etc/albumd/config.yaml"), Path("config.yaml"))

DEFAULT_IGNORE = [
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "desktop.ini",
    "@eaDir",
    "#recycle",
    ".*",  # hidden files: scanners and copy tools write their partial files as dotfiles
    "*.part",
    "*.partial",
    "*.tmp",
    "*.temp",
    "*.crdownload",
    "*.download",
    "*.swp",
    "~$*",
]
SUPPORTED_EXTENSIONS = [".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"]


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key, where it came from, and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WatcherSettings(_Strict):
    stable_s: float = Field(5.0, ge=0, description="a file counts once its size and mtime held this long")
    empty_stable_s: float = Field(
        120.0,
        ge=0,
        description="an empty file counts only once it stayed empty this long (scanners and copy tools "
        "create the file first and write it later); then it fails as empty",
    )
    rescan_interval_s: float = Field(300.0, gt=0, description="full rescan of the inbox (also at start)")
    mode: Literal["auto", "native", "polling"] = Field(
        "auto", description="auto: inotify on local disks, polling on network mounts (nfs, cifs, ...)"
    )
    polling_interval_s: float = Field(5.0, gt=0, description="how often polled folders are checked")
    folder_modes: dict[str, Literal["native", "polling"]] = Field(
        default_factory=dict, description="per-folder override of the detected mode, keyed by path"
    )
    ignore: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE),
        description="glob patterns of file and folder names never taken (partial files, NAS metadata)",
    )
    extensions: list[str] = Field(
        default_factory=lambda: list(SUPPORTED_EXTENSIONS), description="file types taken as photos"
    )

    @field_validator("extensions")
    @classmethod
    def _lower_dotted(cls, v: list[str]) -> list[str]:
        return [e.lower() if e.startswith(".") else "." + e.lower() for e in v]


class Config(_Strict):
    inbox: Path = Field(description="the folder scanners write into; subfolders are albums")
    archive: Path = Field(description="where restored photos, originals and audit records go")
    state_dir: Path = Field(description="the job database (SQLite) and caches")
    database_url: str | None = Field(None, description="default: SQLite file albumd.db in state_dir")
    default_album: str = Field("unsorted", min_length=1, description="album for photos in the inbox root")
    archive_template: str = Field(
        "{album}/{stem}", description="archive path of a photo, from {album} {stem}"
    )
    inbox_after: Literal["keep", "delete"] = Field(
        "keep", description="delete inbox files only once their archived copy is durable and verified"
    )
    processing_window: str | None = Field(None, description='e.g. "22:00-06:00"; none: work at any time')
    batch_size: int = Field(8, ge=1, le=256, description="photos claimed together by a worker")
    prepare_processes: int | None = Field(
        None,
        ge=1,
        le=64,
        description="processes running a batch's CPU stages (decode, tone, defects, face detection) in "
        "parallel; 1: in the worker itself; none: one per core but one, at most 4",
    )
    lease_s: float = Field(
        600.0, ge=5, description="a claimed job returns to the queue this long after the last heartbeat"
    )
    heartbeat_s: float = Field(20.0, gt=0, description="how often a worker renews its leases")
    max_attempts: int = Field(3, ge=1, description="tries for transient errors before a job fails")
    retry_backoff_s: float = Field(30.0, ge=0, description="first retry delay; doubles on each attempt")
    retry_backoff_max_s: float = Field(3600.0, ge=0, description="longest retry delay")
    crash_limit: int = Field(2, ge=1, description="a job whose worker died this often is quarantined")
    reaper_interval_s: float = Field(60.0, gt=0, description="how often expired leases are returned")
    idle_poll_s: float = Field(
        1.0,
        gt=0,
        description="how often an idle worker looks for jobs queued elsewhere (other hosts, `albumd retry`); "
        "files from its own inbox wake it at once",
    )
    max_image_pixels: int = Field(200_000_000, ge=1, description="decompression-bomb limit")
    output_format: Literal["png", "tif"] = Field("png", description="format of the restored photo")
    png_compress_level: int = Field(
        DEFAULT_PNG_COMPRESS_LEVEL,
        ge=0,
        le=9,
        description="zlib level of the PNGs written, lossless at every level: 9 smallest and slowest; "
        "grainy scans shrink little past 4",
    )
    compare_max_side: int = Field(2400, ge=64, description="longest side of the before|after sheet")
    face_crops: bool = Field(
        False, description="also write each face's before|after crop (<stem>.face<N>.jpg) for review"
    )
    umask: str = Field("027", pattern=r"^0?[0-7]{3}$", description="file mode mask for archive files (octal)")
    log_format: Literal["text", "json"] = Field(
        "text", description="one line per event: key=value text or JSON"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="least severe level logged"
    )
    watcher: WatcherSettings = Field(default_factory=WatcherSettings)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)

    @field_validator("processing_window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None:
            parse_window(v)
        return v

    @model_validator(mode="after")
    def _template(self) -> Config:
        try:
            self.archive_template.format(album="a", stem="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"archive_template may only use {{album}} and {{stem}}: {exc}") from exc
        if "{stem}" not in self.archive_template:
            raise ValueError("archive_template must contain {stem} so that photos get their own names")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'albumd.db'}"

    @property
    def window(self) -> tuple[time, time] | None:
        return parse_window(self.processing_window) if self.processing_window else None

    def fingerprint(self) -> str:
        """sha256 of the effective configuration, recorded in every audit record."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_window(text: str) -> tuple[time, time]:
    m = _WINDOW.match(text)
    if not m:
        raise ValueError(f'processing window {text!r} is not of the form "HH:MM-HH:MM"')
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if not (0 <= h1 <= 23 and 0 <= h2 <= 23 and 0 <= m1 <= 59 and 0 <= m2 <= 59):
        raise ValueError(f"processing window {text!r} has an impossible time")
    if (h1, m1) == (h2, m2):
        raise ValueError(f"processing window {text!r} is empty (start equals end)")
    return time(h1, m1), time(h2, m2)


def find_config_path(explicit: Path | None, environ: dict[str, str] | None = None) -> Path | None:
    if explicit is not None:
        return explicit
    env = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if env:
        return Path(env)
    for candidate in DEFAULT_PATHS:
        if candidate.exists():
            return candidate
    return None


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load the file (if any), apply ALBUMD_* overrides, validate. Raises ConfigError."""
    environ = dict(os.environ if environ is None else environ)
    path = find_config_path(path, environ)
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    if path is not None:
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(loaded).__name__}")
        data = loaded
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part)
        if not keys:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        _set_nested(data, keys, value, name)
        sources[keys] = f"environment variable {name}"
    unknown = _unknown_keys(Config, data, ())
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, sources, unknown)) from exc
    if unknown:
        raise ConfigError(_explain(None, path, sources, unknown))
    return config


def _unknown_keys(model: type[BaseModel], data: Any, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Keys that no setting has, at any depth (the pipeline sections come from the pipeline package,
    whose models ignore unknown keys; a misspelt key must not be silently ignored)."""
    if not isinstance(data, dict):
        return []
    found: list[tuple[str, ...]] = []
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None:
            if model.model_config.get("extra") != "forbid":
                found.append((*prefix, str(key)))
            continue
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            found += _unknown_keys(sub, value, (*prefix, str(key)))
    return found


def _set_nested(data: dict[str, Any], keys: tuple[str, ...], value: Any, name: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{name} sets a key inside {key!r}, which is not a section")
        node = child
    node[keys[-1]] = value


def _explain(
    exc: ValidationError | None,
    path: Path | None,
    sources: dict[tuple[str, ...], str],
    unknown: list[tuple[str, ...]] = (),  # type: ignore[assignment]
) -> str:
    lines = ["invalid configuration:"]
    errors: list[Any] = list(exc.errors()) if exc is not None else []
    errors += [{"loc": loc, "type": "extra_forbidden", "msg": ""} for loc in unknown]
    for err in errors:
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        source = next(
            (src for keys, src in sources.items() if loc[: len(keys)] == keys),
            f"config file {path}" if path else "defaults (no config file found)",
        )
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against config.example.yaml)"
        value = err.get("input")
        shown = "" if err["type"] in ("missing",) or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  - {key}: {msg}{shown} [from {source}]")
    return "\n".join(lines)
