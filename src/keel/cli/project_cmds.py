"""`keel init` and `keel demo`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    directory: Path = typer.Argument(Path("."), help="Folder to create the project in."),
    name: str | None = typer.Option(None, "--name", help="Project name (default: folder name)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing keel.yaml."),
) -> None:
    """Create a Keel project: keel.yaml with commented defaults, and .keel/."""
    from keel.cli.output import console
    from keel.project import init_project

    file = init_project(directory, name=name, force=force)
    console.print(f"Created {file} — edit it to point at PostgreSQL or S3; defaults are embedded.")
