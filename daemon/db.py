"""Database engines and schema upgrades.

SQLite is the embedded default: WAL so readers never block the writer, a busy timeout so short write
transactions queue instead of failing, and every transaction opened with ``BEGIN IMMEDIATE`` so a writer
takes the write lock up front (no deadlock between two deferred transactions upgrading to write locks).
PostgreSQL is the scale-out store: claims use ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_IDLE_IN_TRANSACTION_MS = 60_000
# An arbitrary constant shared by every albumd process: the PostgreSQL advisory lock that serialises
# schema upgrades when several daemons start at once.
PG_MIGRATION_LOCK = 0x616C62756D64


def unavailable(exc: BaseException) -> bool:
    """The database could not be reached or used just now (connection cut, server restarting, SQLite
    locked past its busy timeout): no fault of the photo being processed."""
    return isinstance(exc, (OperationalError, InterfaceError))


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _sqlite_pragmas(engine)
        return engine
    # A worker frozen inside a transaction (SIGSTOP, a hung NFS read under a lock) would hold its row
    # locks for ever and the reaper, which skips locked rows, could never return its jobs: the server
    # ends such a transaction after PG_IDLE_IN_TRANSACTION_MS. albumd's transactions are all short.
    connect_args = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["options"] = f"-c idle_in_transaction_session_timeout={PG_IDLE_IN_TRANSACTION_MS}"
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, connect_args=connect_args)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself instead of pysqlite's implicit one.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config(url: str) -> AlembicConfig:
    spec = importlib.util.find_spec("albumd.migrations")
    assert spec is not None and spec.submodule_search_locations, "albumd.migrations is not installed"
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", next(iter(spec.submodule_search_locations)))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(_alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Bring the schema to the newest migration. Returns (revision before, revision after)."""
    cfg = _alembic_config(engine.url.render_as_string(hide_password=False))
    with _migration_lock(engine) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Any]:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATION_LOCK})
            conn.commit()
            try:
                yield conn
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATION_LOCK})
                conn.commit()
        else:
            yield conn
            conn.commit()
