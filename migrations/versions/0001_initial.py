"""jobs, job sources and workers

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("album", sa.String(255), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("archive_key", sa.String(1024), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("crashes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("error_kind", sa.String(16)),
        sa.Column("not_before", TS),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_expires_at", TS),
        sa.Column("progress", sa.String(255)),
        sa.Column("audit_path", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
    )
    op.create_index("ix_jobs_state_not_before", "jobs", ["state", "not_before", "id"])
    op.create_index("ix_jobs_lease", "jobs", ["state", "lease_expires_at"])
    op.create_table(
        "job_sources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("seen_at", TS, nullable=False),
        sa.UniqueConstraint("job_id", "path", name="uq_job_sources_job_path"),
    )
    op.create_index("ix_job_sources_path", "job_sources", ["path"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("current_batch", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_job_sources_path", table_name="job_sources")
    op.drop_table("job_sources")
    op.drop_index("ix_jobs_lease", table_name="jobs")
    op.drop_index("ix_jobs_state_not_before", table_name="jobs")
    op.drop_table("jobs")
