"""people and their faces

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255)),
        sa.Column("prompt", sa.Text),
        sa.Column("centroid", sa.Text, nullable=False),
        sa.Column("face_count", sa.Integer, nullable=False),
        sa.Column("thumbnail", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "faces",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("print_index", sa.Integer, nullable=False),
        sa.Column("face_index", sa.Integer, nullable=False),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id", ondelete="SET NULL")),
        sa.Column("distance", sa.Float),
        sa.Column("embedding", sa.Text, nullable=False),
        sa.Column("box", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("job_id", "print_index", "face_index", name="uq_faces_job_print_face"),
    )
    op.create_index("ix_faces_person", "faces", ["person_id"])


def downgrade() -> None:
    op.drop_index("ix_faces_person", table_name="faces")
    op.drop_table("faces")
    op.drop_table("people")
