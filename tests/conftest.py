"""Shared fixtures: real folders, real SQLite files and a real PostgreSQL database per test session."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "testdata" / "photos"
PG_ADMIN = os.environ.get("ALBUMD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def manifest() -> list[dict[str, str]]:
    rows = []
    for line in (PHOTOS / "MANIFEST.tsv").read_text().splitlines():
        if line.startswith("#") or line.startswith("file\t") or not line.strip():
            continue
        name, lo, hi, defects = line.split("\t")
        rows.append({"file": name, "faces_min": lo, "faces_max": hi, "defects": defects})
    return rows


DAEMON_LOG_TAIL = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failing test that ran the daemon shows the end of its logs: a CI run on another machine leaves
    nothing else behind to find out why a photo did not arrive."""
    report = yield
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and report.when == "call" and isinstance(tmp, Path):
        for log in sorted(tmp.rglob("daemon-*.log"))[-3:]:
            lines = log.read_text(errors="replace").splitlines()[-DAEMON_LOG_TAIL:]
            report.sections.append((f"daemon log {log.relative_to(tmp)} (last lines)", "\n".join(lines)))
    return report


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    assert PHOTOS.is_dir(), f"test photos not found at {PHOTOS} (the repo's parent must hold shared/)"
    return PHOTOS


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session on the local server, dropped afterwards."""
    name = f"albumd_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied before each test."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_server_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield pg_server_url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'albumd.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("inbox", "archive", "state")}
    for p in out.values():
        p.mkdir()
    return out


def write_config(folders: dict[str, Path], **overrides: Any) -> Path:
    data: dict[str, Any] = {
        "inbox": str(folders["inbox"]),
        "archive": str(folders["archive"]),
        "state_dir": str(folders["state"]),
        "watcher": {"stable_s": 0.5, "empty_stable_s": 1, "rescan_interval_s": 60},
        "retry_backoff_s": 0.2,
        "heartbeat_s": 0.5,
        "lease_s": 5,
        "reaper_interval_s": 1,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = folders["state"].parent / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def albumd(config: Path, *args: str, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALBUMD_")}
    env["ALBUMD_CONFIG"] = str(config)
    env.update(kw.pop("env", {}))
    return subprocess.run(
        [sys.executable, "-m", "albumd.daemon.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )


def start_daemon(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALBUMD_")}
    full_env["ALBUMD_CONFIG"] = str(config)
    full_env.update(env or {})
    log = open(config.parent / f"daemon-{time.time_ns()}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "albumd.daemon.cli", "run", *args],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def audits(archive: Path) -> list[dict[str, Any]]:
    """Every audit record in the archive (one per archived photo), in path order."""
    return [json.loads(p.read_text()) for p in sorted(archive.rglob("*.audit.json"))]


def wait_for(
    predicate: Any,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
    daemon: subprocess.Popen[str] | None = None,
) -> Any:
    """Poll ``predicate`` until it is true; with ``daemon``, fail at once if that process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if daemon is not None and daemon.poll() is not None:
            raise AssertionError(f"the daemon exited ({daemon.returncode}) while waiting for {what}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
