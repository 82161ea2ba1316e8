"""The audit log: an append-only record of every registration, state change and alias move.

Records are written inside the transaction of the change they describe, so a change without
its record (or a record without its change) cannot exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select

from keel.core.timeutil import from_ms, now_ms
from keel.errors import InvalidInputError
from keel.metadata.schema import audit_log as audit_table

if TYPE_CHECKING:
    from keel.project import Project

# entity_kind values used by the registry; entity_ref is "name@version" or "name@alias".
MODEL_VERSION = "model_version"
MODEL_ALIAS = "model_alias"


@dataclass(frozen=True)
class AuditRecord:
    """One change: who (actor) did what (action) to which entity, when, with details."""

    id: int
    at: datetime
    actor: str | None
    action: str
    entity_kind: str
    entity_ref: str
    details: dict[str, Any] = field(default_factory=dict)


def record(
    conn: Connection,
    *,
    action: str,
    entity_kind: str,
    entity_ref: str,
    actor: str | None,
    details: dict[str, Any] | None = None,
    at: int | None = None,
) -> None:
    """Append one record inside the caller's write transaction.

    >>> with project.metadata.write() as conn:  # doctest: +SKIP
    ...     record(conn, action="transition", entity_kind="model_version",
    ...            entity_ref="fraud@3", actor="alice", details={"to": "approved"})
    """
    conn.execute(
        insert(audit_table).values(
            at=now_ms() if at is None else at,
            actor=actor,
            action=action,
            entity_kind=entity_kind,
            entity_ref=entity_ref,
            details=details or {},
        )
    )


def audit_log(
    project: Project,
    *,
    entity_kind: str | None = None,
    entity_ref: str | None = None,
    entity_ref_prefix: str | None = None,
    action: str | None = None,
    limit: int | None = 100,
) -> list[AuditRecord]:
    """The newest records first, optionally only those of one entity kind, ref or ref prefix.

    >>> audit_log(project, entity_ref_prefix="fraud@")  # doctest: +SKIP
    [AuditRecord(id=7, ..., action='transition', entity_ref='fraud@3', ...), ...]
    """
    if limit is not None and limit < 1:
        raise InvalidInputError(f"limit {limit!r} is invalid: pass a positive number or None")
    query = select(audit_table).order_by(audit_table.c.id.desc())
    if entity_kind is not None:
        query = query.where(audit_table.c.entity_kind == entity_kind)
    if entity_ref is not None:
        query = query.where(audit_table.c.entity_ref == entity_ref)
    if entity_ref_prefix is not None:
        query = query.where(audit_table.c.entity_ref.startswith(entity_ref_prefix, autoescape=True))
    if action is not None:
        query = query.where(audit_table.c.action == action)
    if limit is not None:
        query = query.limit(limit)
    with project.metadata.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        AuditRecord(
            id=row["id"],
            at=_at(row["at"]),
            actor=row["actor"],
            action=row["action"],
            entity_kind=row["entity_kind"],
            entity_ref=row["entity_ref"],
            details=dict(row["details"] or {}),
        )
        for row in rows
    ]


def _at(ms: int) -> datetime:
    moment = from_ms(ms)
    if moment is None:  # the column is NOT NULL; this only narrows the type
        raise ValueError("audit record without a time")
    return moment
