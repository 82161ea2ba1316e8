"""Where a feature view reads its rows: Parquet data or a Keel-tracked dataset.

Each source names its event-timestamp column, an optional created/ingestion-timestamp column
and, for sources whose timestamps are naive, the time zone they are in (naive timestamps
without one are refused at apply, see ARCHITECTURE.md "Time").

    ParquetSource("data/tx/*.parquet", event_timestamp="event_ts", created_timestamp="ingested")
    DatasetSource("data/tx.parquet", event_timestamp="event_ts", time_zone="Europe/Paris")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    from keel.project import Project


def _check_column(kind: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"source {kind} {value!r} is not a column name; name the column")


def is_url(path: str) -> bool:
    """Whether ``path`` is an fsspec URL (``s3://...``) rather than a local path."""
    return "://" in path and not path.startswith("file://")


@dataclass(frozen=True)
class _TimedSource:
    """What every source declares: where the rows are and which columns hold their times."""

    path: str
    event_timestamp: str
    created_timestamp: str | None = None
    time_zone: str | None = None

    kind: ClassVar[str]

    def _check_columns(self) -> None:
        _check_column("event_timestamp", self.event_timestamp)
        if self.created_timestamp is not None:
            _check_column("created_timestamp", self.created_timestamp)

    def describe(self) -> dict[str, Any]:
        """The source's part of a view's canonical definition."""
        return {
            "kind": self.kind,
            "path": self.path,
            "event_timestamp": self.event_timestamp,
            "created_timestamp": self.created_timestamp,
            "time_zone": self.time_zone,
        }


@dataclass(frozen=True)
class ParquetSource(_TimedSource):
    """A Parquet file, folder or glob, local (relative paths are relative to the project root)
    or any fsspec URL.

    >>> ParquetSource("s3://bucket/tx/", event_timestamp="event_ts").kind
    'parquet'
    """

    kind: ClassVar[str] = "parquet"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise InvalidInputError(f"ParquetSource path {self.path!r} is empty; pass a path")
        self._check_columns()

    def resolve(self, project: Project | None = None) -> str:
        """The engine's ``source`` value: a URL as is, a local path made absolute (a folder
        becomes a glob of its Parquet files, recursively)."""
        if is_url(self.path):
            return self.path.rstrip("/") + "/**/*.parquet" if self.path.endswith("/") else self.path
        local = Path(self.path.removeprefix("file://"))
        if not local.is_absolute() and project is not None:
            local = project.root / local
        if local.is_dir():
            return str(local / "**" / "*.parquet")
        return str(local)


@dataclass(frozen=True)
class DatasetSource(_TimedSource):
    """A dataset tracked with ``keel data add`` (a Parquet file or folder), read at the version
    checked out in the worktree; `version` gives that version's sha256 for lineage.

    >>> DatasetSource("data/tx.parquet", event_timestamp="event_ts").kind
    'dataset'
    """

    kind: ClassVar[str] = "dataset"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path or is_url(self.path):
            raise InvalidInputError(
                f"DatasetSource path {self.path!r} is not a project path; pass the path given "
                "to `keel data add`, or use ParquetSource for a URL"
            )
        self._check_columns()

    def version(self, project: Project) -> str:
        """The sha256 of the dataset version in the worktree (NotFoundError when untracked)."""
        from keel.data.api import resolve

        return resolve(self.path, project=project).sha256

    def resolve(self, project: Project | None = None) -> str:
        """The engine's ``source`` value: the worktree copy of the dataset (checked to be a
        tracked dataset when a project is given)."""
        if project is not None:
            self.version(project)
        return ParquetSource(self.path, self.event_timestamp).resolve(project)


Source: TypeAlias = ParquetSource | DatasetSource
