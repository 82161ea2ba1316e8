"""`keel features ...`: register feature views, on-demand views and services, and browse their
versions and the model versions that consume them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from keel.cli.context import JSON_OPTION, project_session

app = typer.Typer(no_args_is_help=True)


@app.command("apply")
def apply(
    file: Path | None = typer.Argument(None, help="Definitions file (default: features.py)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Validate the definitions of FILE and register a new version of each changed one."""
    from keel.cli.output import print_json, print_table
    from keel.features.registry import apply_definitions

    with project_session() as project:
        results = apply_definitions(project, file)
    if as_json:
        print_json(results)
        return
    rows = [(r.name, r.kind, r.status, r.version[:12], (r.previous or "")[:12]) for r in results]
    print_table("Applied definitions", ["name", "kind", "status", "version", "previous"], rows)


@app.command("list")
def list_cmd(as_json: bool = JSON_OPTION) -> None:
    """List registered definitions with their kind, owner, current version and how many model
    versions consume them."""
    from dataclasses import asdict

    from keel.cli.output import print_json, print_table
    from keel.core.timeutil import iso
    from keel.features.registry import list_feature_views
    from keel.registry.lineage import models_using

    with project_session() as project:
        views = list_feature_views(project)
        models = {v.name: len(models_using(project, feature_view=v.name)) for v in views}
    if as_json:
        print_json([{**asdict(v), "models": models[v.name]} for v in views])
        return
    columns = ["name", "kind", "version", "owner", "description", "models", "updated"]
    rows = [
        (v.name, v.kind, v.current_version[:12], v.owner, v.description, models[v.name], when)
        for v, when in ((v, iso(v.updated_at)) for v in views)
    ]
    print_table("Feature views", columns, rows)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Feature view, on-demand view or service name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a definition: owner, description, current definition, every version and the model
    versions that consume it."""
    from dataclasses import asdict

    from keel.cli.output import console, print_fields, print_json, print_table
    from keel.core.timeutil import iso
    from keel.features.registry import feature_consumers, find_version, get_feature_view

    with project_session() as project:
        info = get_feature_view(project, name)
        consumers = feature_consumers(project, name)
    if as_json:
        print_json({**asdict(info), "consumers": consumers})
        return
    current = find_version(info, info.current_version).definition
    head = [
        ("kind", info.kind),
        ("version", info.current_version),
        ("owner", info.owner),
        ("description", info.description),
    ]
    title = _TITLES.get(info.kind, "Feature view") + " " + info.name
    print_fields(title, head + _definition_fields(info.kind, current))
    rows = [(v.version[:12], iso(v.created_at), v.created_by) for v in info.versions]
    print_table("Versions", ["version", "created", "by"], rows)
    used = [
        (c.model, c.version, (c.feature_version or "?")[:12], c.state, ", ".join(c.aliases))
        for c in consumers
    ]
    if not used:
        console.print("no model version consumes it")
        return
    columns = ["model", "version", "feature version", "state", "aliases"]
    print_table("Consumed by", columns, used)


_TITLES = {"on_demand": "On-demand feature view", "service": "Feature service"}


def _definition_fields(kind: str, definition: dict[str, Any]) -> list[tuple[str, Any]]:
    """The rows of `show` that describe a definition of ``kind``."""

    def columns(items: list[dict[str, Any]]) -> str:
        return ", ".join(item["name"] + ":" + item["dtype"] for item in items)

    if kind == "service":
        return [("features", ", ".join(definition["features"]))]
    if kind == "on_demand":
        return [
            ("inputs", ", ".join(definition["inputs"])),
            ("request", columns(definition["request"])),
            ("outputs", columns(definition["outputs"])),
            ("function", definition["function"]),
        ]
    features = [columns(definition["features"])] if definition["features"] else []
    features += [a["name"] + ":" + a["function"] for a in definition["aggregations"]]
    return [
        ("entity", definition["entity"]["name"]),
        ("source", definition["source"]["path"]),
        ("ttl (s)", definition["ttl_seconds"]),
        ("features", ", ".join(features)),
    ]


@app.command("diff")
def diff(
    name: str = typer.Argument(..., help="Feature view, on-demand view or service name."),
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
