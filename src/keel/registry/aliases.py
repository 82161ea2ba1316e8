"""Aliases (movable names such as 'champion') with their full history, and version states.

States move one way: candidate -> approved -> archived (candidate -> archived too); archived
is final. A project may list aliases in ``registry.require_approval``: those may only point at
an approved version. Every change reads the current value, writes the new one, its history row
and its audit record in one write transaction serialized on the model's row, so concurrent
changes are never lost and the history is a consistent chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from keel.core.timeutil import at_ms, now_ms
from keel.errors import InvalidInputError, NotFoundError, StateError
from keel.metadata.schema import alias_history as history_table
from keel.metadata.schema import model_aliases, model_versions
from keel.metadata.sql import upsert
from keel.registry import audit
from keel.registry.lookup import (
    APPROVED,
    ARCHIVED,
    CANDIDATE,
    ModelVersion,
    aliases_by_version,
    no_alias_message,
    no_version_message,
    require_model,
    to_version,
    version_row,
)
from keel.registry.refs import validate_alias, validate_model_name, validate_version

if TYPE_CHECKING:
    from keel.project import Project

ALLOWED_MOVES: dict[str, tuple[str, ...]] = {
    CANDIDATE: (APPROVED, ARCHIVED),
    APPROVED: (ARCHIVED,),
    ARCHIVED: (),
}


@dataclass(frozen=True)
class AliasChange:
    """One alias move: ``to_version`` is None when the alias was deleted, ``from_version``
    is None when it was created."""

    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    author: str | None
    reason: str | None
    at: datetime


def set_alias(
    project: Project,
    name: str,
    alias: str,
    version: int | str,
    *,
    reason: str | None = None,
    author: str | None = None,
) -> AliasChange:
    """Point ``alias`` of model ``name`` at ``version`` and record who moved it and why.

    Pointing an alias at the version it already names changes and records nothing.

    >>> set_alias(project, "fraud", "champion", 3, reason="beats v2 on recall")  # doctest: +SKIP
    AliasChange(name='fraud', alias='champion', from_version=2, to_version=3, ...)
    """
    validate_model_name(name)
    validate_alias(alias)
    number = validate_version(version)
    author = author or project.user
    with project.metadata.write() as conn:
        _lock_model(project, conn, name)
        row = version_row(conn, name, number)
        if row is None:
            raise NotFoundError(no_version_message(conn, name, number))
        _check_target(project, alias, row)
        current = _current(conn, name, alias)
        now = now_ms()
        change = AliasChange(name, alias, current, number, author, reason, at_ms(now))
        if current == number:
            return change
        upsert(
            conn,
            model_aliases,
            [{"model_name": name, "alias": alias, "version": number, "updated_at": now}],
            keys=["model_name", "alias"],
            update=["version", "updated_at"],
        )
        _record(conn, change, now, action="set_alias")
    return change


def delete_alias(
    project: Project,
    name: str,
    alias: str,
    *,
    reason: str | None = None,
    author: str | None = None,
) -> AliasChange:
    """Remove ``alias`` from model ``name``; the removal is kept in its history.

    >>> delete_alias(project, "fraud", "staging", reason="retired")  # doctest: +SKIP
    """
    validate_model_name(name)
    validate_alias(alias)
    author = author or project.user
    with project.metadata.write() as conn:
        _lock_model(project, conn, name)
        current = _current(conn, name, alias)
        if current is None:
            raise NotFoundError(no_alias_message(conn, name, alias))
        conn.execute(
            delete(model_aliases).where(
                model_aliases.c.model_name == name, model_aliases.c.alias == alias
            )
        )
        now = now_ms()
        change = AliasChange(name, alias, current, None, author, reason, at_ms(now))
        _record(conn, change, now, action="delete_alias")
    return change


def alias_history(project: Project, name: str, alias: str | None = None) -> list[AliasChange]:
    """Every move of the aliases of model ``name`` (or of one alias), oldest first.

    >>> [(c.from_version, c.to_version) for c in alias_history(project, "fraud", "champion")]
    ... # doctest: +SKIP
    [(None, 1), (1, 3)]
    """
    validate_model_name(name)
    query = select(history_table).where(history_table.c.model_name == name)
    if alias is not None:
        query = query.where(history_table.c.alias == validate_alias(alias))
    with project.metadata.read() as conn:
        require_model(conn, name)
        rows = conn.execute(query.order_by(history_table.c.id)).mappings().all()
    return [
        AliasChange(
            name=row["model_name"],
            alias=row["alias"],
            from_version=row["from_version"],
            to_version=row["to_version"],
            author=row["author"],
            reason=row["reason"],
            at=at_ms(row["at"]),
        )
        for row in rows
    ]


def transition(
    project: Project,
    name: str,
    version: int | str,
    state: str,
    *,
    reason: str | None = None,
    author: str | None = None,
) -> ModelVersion:
    """Move a version to ``state`` ('approved' or 'archived') and record it.

    >>> transition(project, "fraud", 3, "approved", reason="passed review").state
    ... # doctest: +SKIP
    'approved'
    """
    validate_model_name(name)
    number = validate_version(version)
    if state not in ALLOWED_MOVES:
        raise InvalidInputError(
            f"state {state!r} is invalid; use one of: {', '.join(ALLOWED_MOVES)}"
        )
    author = author or project.user
    with project.metadata.write() as conn:
        _lock_model(project, conn, name)
        row = version_row(conn, name, number)
        if row is None:
            raise NotFoundError(no_version_message(conn, name, number))
        _check_move(name, number, row["state"], state)
        aliases = aliases_by_version(conn, name).get(number, [])
        if state == ARCHIVED and aliases:
            raise StateError(_archiving_aliased(name, number, aliases))
        now = now_ms()
        conn.execute(
            update(model_versions)
            .where(model_versions.c.id == row["id"])
            .values(state=state, updated_at=now)
        )
        audit.record(
            conn,
            action="transition",
            entity_kind=audit.MODEL_VERSION,
            entity_ref=f"{name}@{number}",
            actor=author,
            details={"from": row["state"], "to": state, "reason": reason},
            at=now,
        )
    return to_version({**row, "state": state}, aliases)


def _lock_model(project: Project, conn: Connection, name: str) -> None:
    project.metadata.lock_row(conn, "registered_models", "name", name)
    require_model(conn, name)


def _current(conn: Connection, name: str, alias: str) -> int | None:
    found = conn.execute(
        select(model_aliases.c.version).where(
            model_aliases.c.model_name == name, model_aliases.c.alias == alias
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


def _check_target(project: Project, alias: str, row: RowMapping) -> None:
    name, number, state = row["model_name"], row["version"], row["state"]
    if state == ARCHIVED:
        raise StateError(
            f"version {number} of model {name!r} is archived; an alias cannot point at an "
            f"archived version — pick another version (`keel models show {name}`)"
        )
    if alias in project.config.registry.require_approval and state != APPROVED:
        raise StateError(
            f"alias {alias!r} may only point at an approved version (registry.require_approval),"
            f" and version {number} of model {name!r} is {state}; approve it first with "
            f"`keel models approve {name} {number}`"
        )


def _check_move(name: str, number: int, current: str, target: str) -> None:
    allowed = ALLOWED_MOVES.get(current, ())
    if target in allowed:
        return
    if not allowed:
        raise StateError(
            f"version {number} of model {name!r} is {current}, which is final; "
            "register a new version instead"
        )
    raise StateError(
        f"version {number} of model {name!r} cannot move from {current} to {target}; "
        f"from {current} it may move to: {', '.join(allowed)}"
    )


def _archiving_aliased(name: str, number: int, aliases: list[str]) -> str:
    listed = ", ".join(repr(a) for a in aliases)
    first = aliases[0]
    return (
        f"version {number} of model {name!r} is what alias {listed} points at; move the alias "
        f"(`keel models alias {name} {first} VERSION`) or delete it "
        f"(`keel models alias {name} {first} --delete`) before archiving"
    )


def _record(conn: Connection, change: AliasChange, now: int, *, action: str) -> None:
    conn.execute(
        insert(history_table).values(
            model_name=change.name,
            alias=change.alias,
            from_version=change.from_version,
            to_version=change.to_version,
            author=change.author,
            reason=change.reason,
            at=now,
        )
    )
    audit.record(
        conn,
        action=action,
        entity_kind=audit.MODEL_ALIAS,
        entity_ref=f"{change.name}@{change.alias}",
        actor=change.author,
        details={
            "from_version": change.from_version,
            "to_version": change.to_version,
            "reason": change.reason,
        },
        at=now,
    )
