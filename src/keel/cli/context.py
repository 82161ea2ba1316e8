"""The project every CLI command works on: keel.yaml here or above (or $KEEL_PROJECT_DIR)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from keel.project import Project

JSON_OPTION = typer.Option(False, "--json", help="Print plain JSON instead of a table.")


def current_project() -> Project:
    from keel.project import Project

    return Project.discover()


@contextmanager
def project_session() -> Iterator[Project]:
    """The current project, closed afterwards so no database connection is left open."""
    project = current_project()
    try:
        yield project
    finally:
        project.close()
