"""The job store's tables. The schema changes only through the Alembic migrations in migrations/."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class DateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive text, so normalise to UTC there)."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def __init__(self, timezone: bool = True, **kw: Any) -> None:
        super().__init__(**kw)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the job store; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    QUARANTINED = "quarantined"


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One photo, keyed by the sha256 of its bytes: the same photo dropped twice is one job."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    album: Mapped[str] = mapped_column(String(255), nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)  # inbox-relative path it was first seen at
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Reserved archive name (template applied, collisions resolved) so reruns write the same files.
    archive_key: Mapped[str] = mapped_column(String(1024), unique=True, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default=JobState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    crashes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(16))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    progress: Mapped[str | None] = mapped_column(String(255))
    audit_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_jobs_state_not_before", "state", "not_before", "id"),
        Index("ix_jobs_lease", "state", "lease_expires_at"),
    )


class JobSource(Base):
    """Every inbox path a job's bytes were seen at (the same photo under two names is one job)."""

    __tablename__ = "job_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    mtime_ns: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("job_id", "path", name="uq_job_sources_job_path"),
        Index("ix_job_sources_path", "path"),
    )


class Worker(Base):
    """A running daemon's worker: what `albumd status` shows as the current batch."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    state: Mapped[str] = mapped_column(String(32), nullable=False)
    current_batch: Mapped[str | None] = mapped_column(Text)  # JSON: job ids and progress


class Person(Base):
    """Someone recognised across the archive: faces whose identity embeddings cluster together."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(String(255))
    prompt: Mapped[str | None] = mapped_column(Text)  # used in this person's face prompts
    centroid: Mapped[str] = mapped_column(Text, nullable=False)  # JSON list of 128 floats
    face_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    thumbnail: Mapped[str | None] = mapped_column(Text)  # image file of one of their faces
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class FaceRow(Base):
    """One face of one archived photo, with its identity embedding and the person it belongs to."""

    __tablename__ = "faces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    print_index: Mapped[int] = mapped_column(Integer, nullable=False)
    face_index: Mapped[int] = mapped_column(Integer, nullable=False)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id", ondelete="SET NULL"))
    distance: Mapped[float | None] = mapped_column(Float)
    embedding: Mapped[str] = mapped_column(Text, nullable=False)  # JSON list of 128 floats
    box: Mapped[str] = mapped_column(Text, nullable=False)  # JSON [x, y, w, h] in the print
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("job_id", "print_index", "face_index", name="uq_faces_job_print_face"),
        Index("ix_faces_person", "person_id"),
    )
