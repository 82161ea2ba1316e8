"""feature definition kinds and materialization runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 05:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feature_views") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="batch")
        )
    op.create_table(
        "feature_materializations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("view", sa.String(length=256), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("start_us", sa.BigInteger(), nullable=True),
        sa.Column("end_us", sa.BigInteger(), nullable=False),
        sa.Column("watermark", sa.JSON(), nullable=False),
        sa.Column("rows_read", sa.BigInteger(), nullable=False),
        sa.Column("rows_written", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=False),
        sa.Column("author", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_materializations")),
    )
    op.create_index(
        "ix_feature_materializations_view",
        "feature_materializations",
        ["view", "finished_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_feature_materializations_view", table_name="feature_materializations")
    op.drop_table("feature_materializations")
    with op.batch_alter_table("feature_views") as batch:
        batch.drop_column("kind")
