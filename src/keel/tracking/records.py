"""Read models of tracking data, shared by the registry, lineage and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int
    timestamp: datetime


@dataclass(frozen=True)
class RunInput:
    """A lineage input of a run: kind is 'dataset', 'feature_view' or 'training_set'."""

    kind: str
    ref: str
    name: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArtifactRecord:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class EnvironmentRecord:
    sha256: str
    python_version: str
    platform: str
    packages: dict[str, str]


@dataclass(frozen=True)
class RunInfo:
    """One run as stored: identity, status, what it logged and what was captured for it."""

    id: str
    experiment: str
    name: str | None
    status: str  # running | finished | failed | killed
    start_time: datetime
    end_time: datetime | None
    parent_run_id: str | None
    user: str | None
    error: str | None
    notes: str | None
    params: dict[str, str]
    metrics: dict[str, float]  # latest value of each series
    tags: dict[str, str]
    git_commit: str | None
    git_branch: str | None
    git_dirty: bool | None
    git_diff_sha256: str | None
    environment_sha256: str | None
    command: str | None
    seeds: dict[str, int]
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    inputs: list[RunInput] = field(default_factory=list)

    @property
    def duration_seconds(self) -> float | None:
        if self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()
