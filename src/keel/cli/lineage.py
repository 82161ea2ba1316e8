"""`keel lineage`: walk back from a model version, or forward from a dataset, feature view or
training set to every model version built on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.tree import Tree

    from keel.registry import Lineage, LineageInput, ModelVersion


def register(app: typer.Typer) -> None:
    """Add the `lineage` command to the root app."""
    app.command("lineage")(lineage)


def lineage(
    ref: str | None = typer.Argument(
        None, metavar="MODEL@VERSION", help="MODEL@VERSION, MODEL@ALIAS or MODEL (latest)."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Models trained on this dataset version (hash or prefix)."
    ),
    feature_view: str | None = typer.Option(
        None, "--feature-view", help="Models trained on this feature view (VIEW@VERSION or VIEW)."
    ),
    training_set: str | None = typer.Option(
        None, "--training-set", help="Models trained on this training set (fingerprint)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a tree/table."),
) -> None:
    """Show where a model version came from, or which model versions used an input."""
    from keel.cli.context import project_session
    from keel.cli.output import print_json
    from keel.errors import InvalidInputError
    from keel.registry import lineage as walk_back
    from keel.registry import models_using

    forward = [x for x in (dataset, feature_view, training_set) if x is not None]
    if (ref is None) == (not forward) or len(forward) > 1:
        raise InvalidInputError(
            "give a model (`keel lineage fraud@3`) or exactly one of --dataset, --feature-view, "
            "--training-set"
        )
    with project_session() as project:
        if ref is not None:
            trail = walk_back(project, ref)
            if as_json:
                print_json(trail)
            else:
                print_lineage_tree(trail)
            return
        found = models_using(
            project, dataset=dataset, feature_view=feature_view, training_set=training_set
        )
    if as_json:
        print_json(found)
    else:
        _print_models(found, forward[0])


def _print_models(found: list[ModelVersion], what: str) -> None:
    from keel.cli.output import console, print_table

    if not found:
        console.print(f"No model version was trained on {what}.")
        return
    rows = [
        (v.name, v.version, v.state, ", ".join(v.aliases), (v.run_id or "")[:12], v.created_at)
        for v in found
    ]
    columns = ["model", "version", "state", "aliases", "run", "created"]
    print_table(f"Model versions trained on {what}", columns, rows)


def print_lineage_tree(trail: Lineage) -> None:
    """The lineage of a model version as a tree (also used by `keel demo`)."""
    from rich.markup import escape
    from rich.tree import Tree

    from keel.cli.output import console, format_value

    model = trail.model
    aliases = f", aliases: {', '.join(model.aliases)}" if model.aliases else ""
    root = Tree(
        f"[bold]{escape(model.ref)}[/] ({model.state}{escape(aliases)}) {escape(model.flavor)}, "
        f"artifact {model.artifact_sha256}"
    )
    if trail.environment is not None:
        env = trail.environment
        root.add(
            f"environment: Python {env.python_version}, {escape(env.platform)}, "
            f"{env.package_count} packages ({env.sha256})"
        )
    run = trail.run
    if run is None:
        root.add("[dim]no run recorded (registered without run_id)[/]")
        console.print(root)
        return
    node = root.add(
        f"run {run.id} {escape(repr(run.name or ''))} {run.status}, "
        f"experiment {escape(run.experiment)}"
    )
    if trail.code is not None and trail.code.commit:
        code = trail.code
        dirty = f", dirty (diff {code.diff_sha256})" if code.dirty else ", clean"
        node.add(f"code: commit {code.commit} on {escape(code.branch or 'detached HEAD')}{dirty}")
    if trail.params:
        node.add(f"params: {escape(format_value(trail.params))}")
    _add_inputs(node, "datasets", trail.datasets, run.id)
    _add_inputs(node, "feature views", trail.feature_views, run.id)
    _add_inputs(node, "training sets", trail.training_sets, run.id)
    if trail.parents:
        parents = node.add("parent runs (nearest first)")
        for parent in trail.parents:
            parents.add(f"run {parent.id} {escape(repr(parent.name or ''))} {parent.status}")
    console.print(root)


def _add_inputs(node: Tree, title: str, inputs: list[LineageInput], run_id: str) -> None:
    from rich.markup import escape

    if not inputs:
        return
    branch = node.add(title)
    for item in inputs:
        name = f" {escape(item.name)}" if item.name else ""
        via = "" if item.run_id == run_id else f" [dim](via parent run {item.run_id})[/]"
        branch.add(f"{escape(item.ref)}{name}{via}")
