"""Where a feature view reads its rows: Parquet data, a Keel-tracked dataset or a PostgreSQL
table.

Each source names its event-timestamp column, an optional created/ingestion-timestamp column
and, for sources whose timestamps are naive, the time zone they are in (naive timestamps
without one are refused at apply, see ARCHITECTURE.md "Time").

    ParquetSource("data/tx/*.parquet", event_timestamp="event_ts", created_timestamp="ingested")
    DatasetSource("data/tx.parquet", event_timestamp="event_ts", time_zone="Europe/Paris")
    PostgresSource("sales.tx", url="postgresql+psycopg://app@db/shop", event_timestamp="ts")
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from keel.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.features.definitions import FeatureView
    from keel.features.postgres_source import RowFilter
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


@dataclass(frozen=True)
class PostgresSource:
    """A PostgreSQL ``table`` (``"schema.table"`` or ``"table"``) or a read-only ``query``
    (run in a READ ONLY transaction). ``url`` is a ``postgresql+psycopg://`` or
    ``postgresql://`` URL; without one the project's metadata database is used when it is
    PostgreSQL. A password in ``url`` never enters the view's definition (its version hash and
    the registry) — better still, build the URL from the environment.

    Training sets read the table whole into memory (only the columns the view uses); Parquet
    is the out-of-core path. Materialization reads only the rows of its time range and, when
    incremental, rows with an event time after the last run's end or a created time after
    the newest one it saw — declare ``created_timestamp`` so late rows are picked up. Push
    inserts into the table. numeric columns are read as float64, types Keel has no dtype for
    as text; rows that tie on event and created time are ordered by their values (a table
    has no row order), so the point-in-time winner is the same on every read.

    >>> PostgresSource("sales.tx", event_timestamp="event_ts").kind
    'postgres'
    """

    table: str | None = None
    _: KW_ONLY
    event_timestamp: str
    url: str | None = None
    created_timestamp: str | None = None
    time_zone: str | None = None
    query: str | None = None

    kind: ClassVar[str] = "postgres"

    def __post_init__(self) -> None:
        if (self.table is None) == (self.query is None):
            raise InvalidInputError(
                f"PostgresSource has table={self.table!r} and query={self.query!r}; pass "
                "exactly one of them"
            )
        if self.table is not None:
            parts = self.table.split(".") if isinstance(self.table, str) else []
            if not 1 <= len(parts) <= 2 or not all(parts):
                raise InvalidInputError(
                    f"PostgresSource table {self.table!r} is not 'table' or 'schema.table'; "
                    "name the table"
                )
        if self.query is not None and (not isinstance(self.query, str) or not self.query.strip()):
            raise InvalidInputError(f"PostgresSource query {self.query!r} is empty; pass a SELECT")
        if self.url is not None:
            public_url(self.url)
        _check_column("event_timestamp", self.event_timestamp)
        if self.created_timestamp is not None:
            _check_column("created_timestamp", self.created_timestamp)

    @property
    def label(self) -> str:
        """How messages name the source."""
        if self.table is not None:
            return f"PostgreSQL table {self.table!r}"
        return f"PostgreSQL query {self.query!r}"

    def describe(self) -> dict[str, Any]:
        """The source's part of a view's canonical definition (the URL without its password)."""
        return {
            "kind": self.kind,
            # how `keel features show` names the source
            "path": f"postgres:{self.table}" if self.table is not None else "postgres:query",
            "url": None if self.url is None else public_url(self.url),
            "table": self.table,
            "query": self.query,
            "event_timestamp": self.event_timestamp,
            "created_timestamp": self.created_timestamp,
            "time_zone": self.time_zone,
        }

    def connection_url(self, project: Project | None = None) -> str:
        """``url``, else the project's metadata URL when that is PostgreSQL."""
        if self.url is not None:
            return self.url
        metadata = project.config.metadata.url if project is not None else ""
        if not metadata.startswith("postgresql"):
            raise InvalidInputError(
                f"{self.label} has no url and the project's metadata store is not PostgreSQL; "
                "pass url='postgresql+psycopg://user@host/db'"
            )
        return metadata

    def schema(self, project: Project | None = None, where: str | None = None) -> pa.Schema:
        """The Arrow schema the source is read with, from the database (no rows read)."""
        _require_psycopg()
        from keel.features.postgres_source import read_schema

        return read_schema(self, self.connection_url(project), where or self.label)

    def read(
        self,
        project: Project | None = None,
        *,
        columns: list[str] | None = None,
        rows: RowFilter | None = None,
        where: str | None = None,
    ) -> pa.Table:
        """``columns`` (default: all) of the rows ``rows`` selects (default: all), in memory,
        sorted by event time, created time, then the other columns (a table has no row order;
        this one makes ties break the same way on every read)."""
        _require_psycopg()
        from keel.features.postgres_source import read_table

        url = self.connection_url(project)
        return read_table(self, url, where or self.label, columns, rows)

    def resolve(self, project: Project | None = None) -> pa.Table:
        """The engine's ``source`` value: the whole table, read into memory."""
        return self.read(project)

    def insert(self, project: Project | None, rows: pa.Table, where: str) -> int:
        """Insert ``rows`` into the table in one transaction (what `FeatureStore.push` does
        with a table source); returns how many rows were inserted."""
        _require_psycopg()
        from keel.features.postgres_source import insert_rows

        return insert_rows(self, self.connection_url(project), rows, where)


def public_url(url: str) -> str:
    """``url`` with its password removed: what a definition may record.

    >>> public_url("postgresql+psycopg://app:secret@db/shop")
    'postgresql+psycopg://app@db/shop'
    """
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"PostgresSource url {url!r} is not a database URL; pass "
            "'postgresql+psycopg://user@host/db'"
        ) from exc
    if parsed.get_backend_name() != "postgresql":
        raise InvalidInputError(
            f"PostgresSource url names a {parsed.get_backend_name()!r} database; pass "
            "'postgresql+psycopg://user@host/db'"
        )
    # URL.set(password=None) keeps the password, so the URL is rebuilt without it.
    bare = URL.create(
        parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query={k: v for k, v in parsed.query.items() if k != "password"},
    )
    return bare.render_as_string(hide_password=False)


def source_columns(view: FeatureView) -> list[str]:
    """The source columns ``view`` reads: keys, timestamps, features and aggregated columns.

    >>> source_columns(user_stats)  # doctest: +SKIP
    ['user_id', 'event_ts', 'spend']
    """
    source = view.source
    names = [*view.entity.key_names, source.event_timestamp]
    if source.created_timestamp is not None:
        names.append(source.created_timestamp)
    names += [f.name for f in view.fields] + [a.column for a in view.aggregation_list]
    return list(dict.fromkeys(names))


def _require_psycopg() -> None:
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        raise ConfigError(
            "PostgresSource needs psycopg; install it with: pip install 'keel[postgres]'"
        )


Source: TypeAlias = ParquetSource | DatasetSource | PostgresSource
