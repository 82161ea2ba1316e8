"""The registry's read side at connection level: version records and the look-ups that
resolve a reference, shared by versions, aliases and lineage (which call them inside their own
transactions, so they take a connection rather than a project).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, select

from keel.core.timeutil import at_ms
from keel.errors import NotFoundError
from keel.metadata.schema import model_aliases, model_versions, registered_models
from keel.registry.refs import ModelRef

CANDIDATE, APPROVED, ARCHIVED = "candidate", "approved", "archived"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model, with the aliases that point at it now."""

    name: str
    version: int
    run_id: str | None
    artifact_sha256: str
    flavor: str
    signature: dict[str, Any] | None
    library_versions: dict[str, str]
    environment_sha256: str | None
    state: str  # candidate | approved | archived
    description: str | None
    created_by: str | None
    created_at: datetime
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: its newest version number and its aliases (alias -> version)."""

    name: str
    description: str | None
    latest_version: int
    created_at: datetime
    updated_at: datetime
    aliases: dict[str, int] = field(default_factory=dict)


def resolve(conn: Connection, ref: ModelRef) -> ModelVersion:
    """The version a parsed reference names, or NotFoundError naming what exists instead."""
    require_model(conn, ref.name)
    number = ref.version
    if ref.alias is not None:
        number = conn.execute(
            select(model_aliases.c.version).where(
                model_aliases.c.model_name == ref.name, model_aliases.c.alias == ref.alias
            )
        ).scalar_one_or_none()
        if number is None:
            raise NotFoundError(no_alias_message(conn, ref.name, ref.alias))
    if number is None:
        number = conn.execute(
            select(func.max(model_versions.c.version)).where(
                model_versions.c.model_name == ref.name
            )
        ).scalar_one_or_none()
    row = version_row(conn, ref.name, number) if number is not None else None
    if row is None:
        raise NotFoundError(no_version_message(conn, ref.name, number))
    return to_version(row, aliases_by_version(conn, ref.name).get(row["version"], []))


def require_model(conn: Connection, name: str) -> None:
    exists = conn.execute(
        select(registered_models.c.name).where(registered_models.c.name == name)
    ).first()
    if exists is None:
        known = conn.execute(
            select(registered_models.c.name).order_by(registered_models.c.name).limit(6)
        ).scalars()
        names = list(known)
        if not names:
            raise NotFoundError(
                f"model {name!r} is not registered, and no model is yet; register one with "
                "keel.register_model_version(...) or run.log_model(...)"
            )
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise NotFoundError(
            f"model {name!r} is not registered; registered models: {shown} "
            "(`keel models list` shows them all)"
        )


def version_row(conn: Connection, name: str, version: int) -> RowMapping | None:
    return (
        conn.execute(
            select(model_versions).where(
                model_versions.c.model_name == name, model_versions.c.version == version
            )
        )
        .mappings()
        .first()
    )


def aliases_by_version(conn: Connection, name: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    rows = conn.execute(
        select(model_aliases.c.alias, model_aliases.c.version)
        .where(model_aliases.c.model_name == name)
        .order_by(model_aliases.c.alias)
    )
    for alias, version in rows:
        out.setdefault(version, []).append(alias)
    return out


def to_version(row: RowMapping | dict[str, Any], aliases: list[str]) -> ModelVersion:
    return ModelVersion(
        name=row["model_name"],
        version=row["version"],
        run_id=row["run_id"],
        artifact_sha256=row["artifact_sha256"],
        flavor=row["flavor"],
        signature=row["signature"],
        library_versions=dict(row["library_versions"] or {}),
        environment_sha256=row["environment_sha256"],
        state=row["state"],
        description=row["description"],
        created_by=row["created_by"],
        created_at=at_ms(row["created_at"]),
        aliases=list(aliases),
    )


def no_alias_message(conn: Connection, name: str, alias: str) -> str:
    rows = conn.execute(
        select(model_aliases.c.alias, model_aliases.c.version)
        .where(model_aliases.c.model_name == name)
        .order_by(model_aliases.c.alias)
    ).all()
    if not rows:
        return (
            f"model {name!r} has no alias {alias!r} (it has no aliases); set one with "
            f"`keel models alias {name} {alias} VERSION`"
        )
    listed = ", ".join(f"{a} -> {v}" for a, v in rows)
    return f"model {name!r} has no alias {alias!r}; its aliases: {listed}"


def no_version_message(conn: Connection, name: str, version: int | None) -> str:
    numbers = list(
        conn.execute(
            select(model_versions.c.version)
            .where(model_versions.c.model_name == name)
            .order_by(model_versions.c.version)
        ).scalars()
    )
    if not numbers:
        return f"model {name!r} has no versions yet"
    contiguous = numbers == list(range(numbers[0], numbers[-1] + 1))
    if contiguous and len(numbers) > 1:
        listed = f"{numbers[0]}-{numbers[-1]}"
    else:
        listed = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
    return (
        f"model {name!r} has no version {version}; its versions: {listed} "
        f"(`keel models show {name}` lists them)"
    )
