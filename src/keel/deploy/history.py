"""The history of an endpoint's deployment: every change with its author and reason, and the
spec that was in force at any past moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from keel.core.timeutil import at_ms, to_ms
from keel.deploy.records import check_endpoint, require_endpoint
from keel.deploy.spec import DeploymentSpec
from keel.errors import InvalidInputError
from keel.metadata.schema import deployment_events

if TYPE_CHECKING:
    from keel.project import Project


@dataclass(frozen=True)
class DeploymentEvent:
    """One change of an endpoint's deployment; ``spec`` is the spec in force after it."""

    endpoint: str
    version: int
    at: datetime
    author: str | None
    reason: str | None
    action: str
    spec: DeploymentSpec

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `keel deploy history --json` and the admin API answer with."""
        return {
            "endpoint": self.endpoint,
            "version": self.version,
            "at": self.at,
            "author": self.author,
            "reason": self.reason,
            "action": self.action,
            "spec": self.spec.to_dict(),
        }


def history(project: Project, endpoint: str) -> list[DeploymentEvent]:
    """Every change of ``endpoint``'s deployment, oldest first.

    >>> [e.action for e in history(project, "fraud")]  # doctest: +SKIP
    ['deploy', 'start_canary', 'advance', 'promote']
    """
    check_endpoint(endpoint)
    with project.metadata.read() as conn:
        require_endpoint(conn, endpoint)
        rows = conn.execute(
            select(deployment_events)
            .where(deployment_events.c.endpoint == endpoint)
            .order_by(deployment_events.c.version)
        ).all()
    return [
        DeploymentEvent(
            row.endpoint,
            int(row.version),
            at_ms(row.at),
            row.author,
            row.reason,
            row.action,
            DeploymentSpec.from_dict(row.spec),
        )
        for row in rows
    ]


def served_at(project: Project, endpoint: str, when: datetime) -> DeploymentSpec | None:
    """The spec that served ``endpoint`` at ``when`` (an aware datetime); None before the first
    deployment. A change made at exactly ``when`` is already in force.

    >>> served_at(project, "fraud", datetime(2026, 11, 1, tzinfo=UTC)).primary  # doctest: +SKIP
    'fraud@3'
    """
    check_endpoint(endpoint)
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise InvalidInputError(
            f"time {when!r} has no time zone; pass an aware datetime such as "
            "datetime(2026, 11, 1, tzinfo=UTC)"
        )
    with project.metadata.read() as conn:
        require_endpoint(conn, endpoint)
        row = conn.execute(
            select(deployment_events.c.spec)
            .where(deployment_events.c.endpoint == endpoint, deployment_events.c.at <= to_ms(when))
            .order_by(deployment_events.c.version.desc())
            .limit(1)
        ).first()
    return None if row is None else DeploymentSpec.from_dict(row.spec)
