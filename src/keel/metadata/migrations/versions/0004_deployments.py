"""deployment state and its history

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("endpoint", name=op.f("pk_deployments")),
    )
    op.create_table(
        "deployment_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("author", sa.String(length=256), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_events")),
        sa.UniqueConstraint(
            "endpoint", "version", name=op.f("uq_deployment_events_endpoint_version")
        ),
    )
    op.create_index("ix_deployment_events_endpoint_at", "deployment_events", ["endpoint", "at"])


def downgrade() -> None:
    op.drop_index("ix_deployment_events_endpoint_at", table_name="deployment_events")
    op.drop_table("deployment_events")
    op.drop_table("deployments")
