"""`keel lineage ...`"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `lineage` command to the root app."""
