"""Helpers shared by the CPU benchmarks: machine info, result files, throw-away databases, configs.

Every benchmark writes one JSON file into ``bench/results/`` (or ``--out``) named ``cpu-<name>.json``
(``cpu-<name>-quick.json`` for ``--quick``) holding ``machine`` (what it ran on), ``settings`` (what was
asked) and ``results``. PostgreSQL runs create their own database on the server named by
``ALBUMD_BENCH_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and drop it afterwards.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PG_ADMIN = os.environ.get(
    "ALBUMD_BENCH_PG", os.environ.get("ALBUMD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
)
PACKAGES = (
    "albumd", "sqlalchemy", "alembic", "psycopg", "numpy", "opencv-python-headless", "pillow",
    "scikit-image", "scipy", "watchdog", "apscheduler", "pydantic", "torch",
)  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        fields = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
        )
        return f"{fields.get('PRETTY_NAME', '').strip(chr(34))} ({platform.platform()})"
    except OSError:
        return platform.platform()


def _fs_type(path: Path) -> str | None:
    try:
        best, fstype = "", None
        real = os.path.realpath(path)
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mnt = parts[1]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
        return fstype
    except OSError:
        return None


def _git() -> dict[str, Any]:
    """The checkout's commit and which tracked files differ from it (read-only git calls)."""
    import subprocess

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        return r.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "modified": git("diff", "--name-only").splitlines()}
    except (OSError, subprocess.SubprocessError):
        return {}


def machine_info(work_dir: Path | None = None) -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python and package versions, load at start, and the filesystem used."""
    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "ram_gib": _ram_gib(),
        "os": _os_name(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": versions,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    info["git"] = _git()
    if work_dir is not None:
        info["work_dir"] = str(work_dir)
        info["work_dir_fs"] = _fs_type(work_dir)
    return info


def postgres_version() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except Exception:
        return None


def write_result(
    name: str, settings: dict[str, Any], results: dict[str, Any], out_dir: Path, quick: bool, work_dir: Path
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"cpu-{name}{'-quick' if quick else ''}.json"
    machine = machine_info(work_dir)
    machine["postgres_server"] = postgres_version()
    doc = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine,
        "settings": settings,
        "results": results,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (SQLAlchemy URL), dropped on exit."""
    import psycopg

    name = f"albumd_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
    try:
        yield f"postgresql+psycopg://{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database(backend: str, state_dir: Path) -> Iterator[str]:
    """A SQLAlchemy URL for ``backend`` ("sqlite" file in ``state_dir``, or a fresh "postgres" database)."""
    if backend == "sqlite":
        state_dir.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{state_dir / 'albumd.db'}"
    elif backend == "postgres":
        with pg_database() as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r}")


def config_dict(folders: dict[str, Path], db_url: str | None, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "inbox": str(folders["inbox"]),
        "archive": str(folders["archive"]),
        "state_dir": str(folders["state"]),
        "database_url": db_url,
        "log_level": "WARNING",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def make_folders(base: Path) -> dict[str, Path]:
    out = {name: base / name for name in ("inbox", "archive", "state")}
    for p in out.values():
        p.mkdir(parents=True, exist_ok=True)
    return out


def daemon_env(config_path: Path) -> dict[str, str]:
    """The environment for an ``albumd`` subprocess: no inherited ALBUMD_* keys, the given config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBUMD_")}
    env["ALBUMD_CONFIG"] = str(config_path)
    return env


def rate(n: float, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("inf")


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` by linear interpolation."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
