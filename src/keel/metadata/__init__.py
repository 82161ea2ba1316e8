"""Metadata backend: SQLAlchemy 2 over SQLite (embedded default) or PostgreSQL."""

from keel.metadata.store import MetadataStore

__all__ = ["MetadataStore"]
