"""Alembic environment: migrations run on the connection Keel hands over (never from a URL)."""

from __future__ import annotations

from alembic import context

from keel.metadata.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Keel migrations run through keel.metadata.migrate, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
