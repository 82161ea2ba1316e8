"""The project every CLI command works on: keel.yaml here or above (or $KEEL_PROJECT_DIR)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.project import Project


def current_project() -> Project:
    from keel.project import Project

    return Project.discover()
