"""`keel models ...`: browse the registry, move aliases, approve and archive versions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from keel.cli.context import JSON_OPTION, project_session

if TYPE_CHECKING:
    from keel.registry import ModelVersion

app = typer.Typer(no_args_is_help=True)

REASON = typer.Option(None, "--reason", help="Why: kept in the history and audit log.")


@app.command("list")
def list_cmd(as_json: bool = JSON_OPTION) -> None:
    """List registered models with their latest version and aliases."""
    from keel.cli.output import print_json, print_table
    from keel.registry import list_models

    with project_session() as project:
        models = list_models(project)
    if as_json:
        print_json(models)
        return
    rows = [
        (m.name, m.latest_version, _aliases(m.aliases), m.description, m.updated_at) for m in models
    ]
    print_table("Models", ["name", "latest", "aliases", "description", "updated"], rows)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="NAME (all versions), NAME@VERSION or NAME@ALIAS."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a model's versions, or one version's details."""
    from keel.cli.output import print_json, print_table
    from keel.registry import get_model_version, list_versions

    with project_session() as project:
        if "@" in ref:
            version = get_model_version(project, ref)
            if as_json:
                print_json(version)
            else:
                _print_version(version)
            return
        versions = list_versions(project, ref)
    if as_json:
        print_json(versions)
        return
    rows = [
        (
            v.version,
            v.state,
            ", ".join(v.aliases),
            v.flavor,
            _short(v.run_id),
            v.created_by,
            v.created_at,
        )
        for v in versions
    ]
    columns = ["version", "state", "aliases", "flavor", "run", "created by", "created"]
    print_table(f"Model {ref}", columns, rows)


@app.command("history")
def history(
    name: str = typer.Argument(..., help="Model name."),
    alias: str | None = typer.Option(None, "--alias", help="Only this alias's moves."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show every alias move (and, without --alias, every state change) of a model."""
    from keel.cli.output import print_json, print_table
    from keel.registry import alias_history, audit_log

    with project_session() as project:
        moves = alias_history(project, name, alias)
        changes = []
        if alias is None:
            records = audit_log(project, entity_kind="model_version", entity_ref_prefix=f"{name}@")
            changes = list(reversed(records))
    if as_json:
        print_json({"aliases": moves, "states": changes} if alias is None else moves)
        return
    rows = [(m.at, m.alias, m.from_version, m.to_version, m.author, m.reason) for m in moves]
    print_table(f"Alias history of {name}", ["at", "alias", "from", "to", "author", "reason"], rows)
    if alias is None:
        print_table(
            f"State changes of {name}",
            ["at", "version", "action", "state", "actor", "reason"],
            [_state_row(r.at, r.entity_ref, r.action, r.actor, r.details) for r in changes],
        )


@app.command("alias")
def alias_cmd(
    name: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Argument(..., help="Alias, e.g. champion."),
    version: int | None = typer.Argument(None, help="Version the alias should point at."),
    reason: str | None = REASON,
    remove: bool = typer.Option(False, "--delete", help="Remove the alias instead."),
) -> None:
    """Point an alias at a version (or remove it with --delete)."""
    from keel.cli.output import console
    from keel.errors import InvalidInputError
    from keel.registry import delete_alias, set_alias

    if remove == (version is not None):
        raise InvalidInputError(
            f"give either a VERSION (`keel models alias {name} {alias} 3`) or --delete, not "
            + ("both" if remove else "neither")
        )
    with project_session() as project:
        if version is None:
            change = delete_alias(project, name, alias, reason=reason)
            console.print(f"Removed {name}@{alias} (was version {change.from_version}).")
            return
        change = set_alias(project, name, alias, version, reason=reason)
    before = "new" if change.from_version is None else f"was {change.from_version}"
    console.print(f"{name}@{alias} -> version {change.to_version} ({before}).")


@app.command("approve")
def approve(
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Argument(..., help="Version to approve."),
    reason: str | None = REASON,
) -> None:
    """Mark a candidate version approved (required by aliases in registry.require_approval)."""
    _transition(name, version, "approved", reason)


@app.command("archive")
def archive(
    name: str = typer.Argument(..., help="Model name."),
    version: int = typer.Argument(..., help="Version to archive."),
    reason: str | None = REASON,
) -> None:
    """Archive a version (final; refused while an alias points at it)."""
    _transition(name, version, "archived", reason)


def _transition(name: str, version: int, state: str, reason: str | None) -> None:
    from keel.cli.output import console
    from keel.registry import transition

    with project_session() as project:
        moved = transition(project, name, version, state, reason=reason)
    console.print(f"{moved.ref} is now {moved.state}.")


def _print_version(v: ModelVersion) -> None:
    from keel.cli.output import print_fields

    print_fields(
        f"Model version {v.ref}",
        [
            ("state", v.state),
            ("aliases", ", ".join(v.aliases)),
            ("flavor", v.flavor),
            ("run", v.run_id),
            ("artifact sha256", v.artifact_sha256),
            ("environment sha256", v.environment_sha256),
            ("created", v.created_at),
            ("created by", v.created_by),
            ("description", v.description),
            ("library versions", v.library_versions),
            ("signature", _signature(v.signature)),
        ],
    )


def _signature(signature: dict[str, Any] | None) -> str:
    import json

    return "" if signature is None else json.dumps(signature, sort_keys=True)


def _short(run_id: str | None) -> str | None:
    # Any 12-character prefix is accepted wherever a run id is (`keel runs show 0190ab3f2c1d`).
    return run_id[:12] if run_id else None


def _aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{alias} -> {version}" for alias, version in aliases.items())


def _state_row(
    at: Any, ref: str, action: str, actor: str | None, details: dict[str, Any]
) -> tuple[Any, ...]:
    version = ref.rpartition("@")[2]
    if action == "transition":
        state = f"{details.get('from')} -> {details.get('to')}"
    else:
        state = "candidate"
    return (at, version, action, state, actor, details.get("reason"))
