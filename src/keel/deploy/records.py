"""Deployment state in the metadata store: reading it, and the one way it is changed.

``apply_change`` runs a change in one write transaction that locks the endpoint's row, reads
the current spec, stores the new one with its version plus one, and appends an event with the
author, the reason and the spec after the change. Concurrent changes from any number of
processes or replicas therefore serialize: versions have no gaps and no change is lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from keel.core.timeutil import at_ms, now_ms
from keel.deploy.spec import DeploymentSpec, validate_spec
from keel.errors import InvalidInputError, NotFoundError, StateError
from keel.metadata.schema import deployment_events, deployments

if TYPE_CHECKING:
    from keel.project import Project

_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A first deployment of an endpoint has no row to lock; two racing inserts make one fail on
# the primary key, and the retry then finds the row and waits on its lock like any change.
_ATTEMPTS = 3


@dataclass(frozen=True)
class Deployment:
    """The deployment in force on ``endpoint``; ``version`` grows by one on every change."""

    endpoint: str
    spec: DeploymentSpec
    version: int
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `keel deploy show --json` and the admin API answer with."""
        return {
            "endpoint": self.endpoint,
            "version": self.version,
            "updated_at": self.updated_at,
            "spec": self.spec.to_dict(),
        }


Change = Callable[[DeploymentSpec | None, int], DeploymentSpec]


def get_deployment(project: Project, endpoint: str) -> Deployment:
    """The current deployment of ``endpoint``, or NotFoundError.

    >>> get_deployment(project, "fraud").spec.primary  # doctest: +SKIP
    'fraud@3'
    """
    check_endpoint(endpoint)
    with project.metadata.read() as conn:
        row = conn.execute(select(deployments).where(deployments.c.endpoint == endpoint)).first()
        if row is None:
            raise NotFoundError(no_deployment_message(conn, endpoint))
    return Deployment(
        endpoint, DeploymentSpec.from_dict(row.spec), int(row.version), at_ms(row.updated_at)
    )


def resolve_model(project: Project, model_ref: str) -> str:
    """``model_ref`` ("fraud@champion", "fraud@3", "fraud") as a concrete "name@N"."""
    from keel.registry import get_model_version

    version = get_model_version(project, model_ref)
    if version.state == "archived":
        raise StateError(
            f"{version.ref} is archived and cannot be deployed; register or pick a live version"
        )
    return version.ref


def no_deployment_message(conn: Connection, endpoint: str) -> str:
    names = list(
        conn.execute(select(deployments.c.endpoint).order_by(deployments.c.endpoint).limit(6))
        .scalars()
        .all()
    )
    if not names:
        return (
            f"endpoint {endpoint!r} has no deployment, and none has yet; "
            f"create one with `keel deploy set {endpoint} MODEL@VERSION`"
        )
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"endpoint {endpoint!r} has no deployment; deployed endpoints: {shown}"


def apply_change(
    project: Project,
    endpoint: str,
    action: str,
    change: Change,
    author: str | None,
    reason: str | None,
) -> Deployment:
    """Apply ``change`` (current spec or None, now in ms -> new spec) to ``endpoint`` as one
    locked transaction that also appends the event ``action``; the project user is the
    default author."""
    check_endpoint(endpoint)
    author = author or project.user
    for _ in range(_ATTEMPTS - 1):
        try:
            return _apply_once(project, endpoint, action, change, author, reason)
        except IntegrityError:
            continue
    return _apply_once(project, endpoint, action, change, author, reason)


def _apply_once(
    project: Project,
    endpoint: str,
    action: str,
    change: Change,
    author: str,
    reason: str | None,
) -> Deployment:
    with project.metadata.write() as conn:
        project.metadata.lock_row(conn, "deployments", "endpoint", endpoint)
        row = conn.execute(select(deployments).where(deployments.c.endpoint == endpoint)).first()
        current = None if row is None else DeploymentSpec.from_dict(row.spec)
        now = now_ms()
        spec = change(current, now)
        validate_spec(spec)
        version = 1 if row is None else int(row.version) + 1
        values = {"spec": spec.to_dict(), "version": version, "updated_at": now}
        if row is None:
            conn.execute(insert(deployments).values(endpoint=endpoint, **values))
        else:
            conn.execute(
                update(deployments).where(deployments.c.endpoint == endpoint).values(**values)
            )
        conn.execute(
            insert(deployment_events).values(
                endpoint=endpoint,
                version=version,
                at=now,
                author=author,
                reason=reason,
                action=action,
                spec=spec.to_dict(),
            )
        )
    return Deployment(endpoint, spec, version, at_ms(now))


def check_endpoint(endpoint: object) -> None:
    if not isinstance(endpoint, str) or not _ENDPOINT.fullmatch(endpoint):
        raise InvalidInputError(
            f"endpoint name {endpoint!r} is invalid: use 1-128 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit (e.g. 'fraud')"
        )


def require_endpoint(conn: Connection, endpoint: str) -> None:
    """Raise NotFoundError (listing the deployed endpoints) unless ``endpoint`` has a row."""
    found = conn.execute(
        select(deployments.c.endpoint).where(deployments.c.endpoint == endpoint)
    ).first()
    if found is None:
        raise NotFoundError(no_deployment_message(conn, endpoint))
