"""`keel features ...`: register feature views and browse their versions."""

from __future__ import annotations

from pathlib import Path

import typer

from keel.cli.context import JSON_OPTION, project_session

app = typer.Typer(no_args_is_help=True)


@app.command("apply")
def apply(
    file: Path | None = typer.Argument(None, help="Definitions file (default: features.py)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Validate the feature views of FILE and register a new version of each changed one."""
    from keel.cli.output import print_json, print_table
    from keel.features.registry import apply_definitions

    with project_session() as project:
        results = apply_definitions(project, file)
    if as_json:
        print_json(results)
        return
    rows = [(r.name, r.status, r.version[:12], (r.previous or "")[:12]) for r in results]
    print_table("Applied feature views", ["name", "status", "version", "previous"], rows)


@app.command("list")
def list_cmd(as_json: bool = JSON_OPTION) -> None:
    """List registered feature views with their owner and current version."""
    from keel.cli.output import print_json, print_table
    from keel.core.timeutil import iso
    from keel.features.registry import list_feature_views

    with project_session() as project:
        views = list_feature_views(project)
    if as_json:
        print_json(views)
        return
    rows = [
        (v.name, v.current_version[:12], v.owner, v.description, iso(v.updated_at)) for v in views
    ]
    print_table("Feature views", ["name", "version", "owner", "description", "updated"], rows)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Feature view name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a feature view: owner, description, current definition and every version."""
    from keel.cli.output import print_fields, print_json, print_table
    from keel.core.timeutil import iso
    from keel.features.registry import find_version, get_feature_view

    with project_session() as project:
        info = get_feature_view(project, name)
    if as_json:
        print_json(info)
        return
    current = find_version(info, info.current_version).definition
    features = [f["name"] + ":" + f["dtype"] for f in current["features"]]
    features += [a["name"] + ":" + a["function"] for a in current["aggregations"]]
    print_fields(
        f"Feature view {info.name}",
        [
            ("version", info.current_version),
            ("owner", info.owner),
            ("description", info.description),
            ("entity", current["entity"]["name"]),
            ("source", current["source"]["path"]),
            ("ttl (s)", current["ttl_seconds"]),
            ("features", ", ".join(features)),
        ],
    )
    rows = [(v.version[:12], iso(v.created_at), v.created_by) for v in info.versions]
    print_table("Versions", ["version", "created", "by"], rows)


@app.command("diff")
def diff(
    name: str = typer.Argument(..., help="Feature view name."),
    old: str | None = typer.Argument(None, help="Older version (hash prefix)."),
    new: str | None = typer.Argument(None, help="Newer version (hash prefix)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show what changed between two versions (default: previous and current)."""
    from keel.cli.output import console, print_json, print_table
    from keel.features.registry import diff_versions

    with project_session() as project:
        changes = diff_versions(project, name, old, new)
    if as_json:
        print_json(changes)
        return
    if not changes:
        console.print("no differences")
        return
    print_table(
        f"Changes to {name}", ["path", "old", "new"], [(c.path, c.old, c.new) for c in changes]
    )
