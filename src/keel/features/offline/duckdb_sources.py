"""Feature-view sources as DuckDB relations: Parquet read lazily by ``read_parquet`` (so a source
larger than memory is streamed, never loaded into Python), in-memory tables registered by
reference; plus the SQL that turns their time columns into epoch microseconds (UTC)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from keel.errors import InvalidInputError
from keel.features.offline.frames import as_table, is_url
from keel.features.offline.spec import ViewInput

# Local wall time -> UTC microseconds. A time that occurs twice (DST overlap) is read as the
# earlier instant, one that does not exist (DST gap) with the offset in force before the gap —
# Python's fold=0 and java.time's rule, so every engine agrees. ICU alone picks the later
# instant in an overlap; the offset a day earlier finds the earlier one.
LOCAL_TO_US_MACROS = (
    "CREATE OR REPLACE TEMP MACRO keel_wall(w) AS make_timestamp(epoch_us(w))",
    # u1: ICU's reading; u2: the wall time read with the offset in force a day before u1
    "CREATE OR REPLACE TEMP MACRO keel_u2(l, u1, zone) AS epoch_us(l) - ("
    " epoch_us(timezone(zone, u1 - INTERVAL 1 DAY)) - epoch_us(u1 - INTERVAL 1 DAY))",
    "CREATE OR REPLACE TEMP MACRO keel_pick(l, u1, u2, zone) AS CASE WHEN u2 < epoch_us(u1)"
    " AND epoch_us(timezone(zone, u1 - to_microseconds(epoch_us(u1) - u2))) = epoch_us(l)"
    " THEN u2 ELSE epoch_us(u1) END",
    "CREATE OR REPLACE TEMP MACRO keel_local_us(w, zone) AS keel_pick(keel_wall(w),"
    " timezone(zone, keel_wall(w)), keel_u2(keel_wall(w), timezone(zone, keel_wall(w)), zone),"
    " zone)",
)
_AWARE = {
    "TIMESTAMP WITH TIME ZONE": "epoch_us({})",
    "TIMESTAMPTZ_NS": "epoch_us({}::TIMESTAMP_NS)",  # keeps the instant: the session is UTC
}
_NAIVE = {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"}
_VIRTUAL = ("file_index", "file_row_number")
_FILE_SEQ = "((file_index::BIGINT << 40) + file_row_number)"
SEQ_COLUMN = "__keel_seq"


def quote(identifier: str) -> str:
    """A SQL identifier, quoted so any column name is safe."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass
class BoundSource:
    """A view's source inside one DuckDB connection."""

    view: ViewInput
    relation: str  # a FROM item: read_parquet($param) or a registered table
    seq: str  # SQL for the ingestion sequence of a row
    columns: dict[str, str]  # column name -> DuckDB type
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return f"view {self.view.name!r}"

    def column_type(self, column: str, role: str) -> str:
        if column not in self.columns:
            raise InvalidInputError(
                f"the source of {self.owner} has no column {column!r} ({role}); "
                f"its columns are {sorted(self.columns)}"
            )
        return self.columns[column]

    def time_us(self, column: str, role: str) -> str:
        """SQL giving ``column`` as UTC epoch microseconds; naive columns need a zone."""
        kind = self.column_type(column, role)
        if kind in _AWARE:
            return _AWARE[kind].format(quote(column))
        if kind not in _NAIVE:
            raise InvalidInputError(
                f"column {column!r} ({role}) of {self.owner} is {kind}, not a timestamp; "
                "store it as a timestamp"
            )
        return f"keel_local_us({quote(column)}, {self.zone_param(column, role)})"

    def timestamp_value(self, column: str, role: str) -> str:
        """SQL for a feature column that holds timestamps, as TIMESTAMPTZ (UTC)."""
        if self.columns.get(column) in _NAIVE:
            return f"make_timestamp({self.time_us(column, role)})::TIMESTAMPTZ"
        return quote(column)

    def zone_param(self, column: str, role: str) -> str:
        zone = self.view.source_time_zone
        if zone is None:
            raise InvalidInputError(
                f"column {column!r} ({role}) of {self.owner} holds naive timestamps (no time "
                "zone); declare the zone they were written in, e.g. source_time_zone='UTC', "
                "or store them timezone-aware"
            )
        name = f"zone_{len(self.params)}"
        self.params[name] = zone
        return f"${name}"


def bind_source(con: duckdb.DuckDBPyConnection, view: ViewInput, index: int) -> BoundSource:
    """Make ``view.source`` queryable in ``con`` and describe its columns."""
    source = view.source
    if isinstance(source, str | os.PathLike):
        return _bind_parquet(con, view, index, os.fspath(source))
    table = as_table(source, f"the source of view {view.name!r}")
    if SEQ_COLUMN in table.column_names:
        raise InvalidInputError(
            f"the source of view {view.name!r} has a column named {SEQ_COLUMN!r}, which Keel "
            "uses for the ingestion order; rename that column"
        )
    seq = pa.array(range(table.num_rows), pa.int64())
    name = f"__keel_src_{index}"
    con.register(name, table.append_column(SEQ_COLUMN, seq))
    columns = _describe(con, f"SELECT * FROM {quote(name)}", {})
    del columns[SEQ_COLUMN]
    return BoundSource(view, quote(name), quote(SEQ_COLUMN), columns)


def _bind_parquet(
    con: duckdb.DuckDBPyConnection, view: ViewInput, index: int, path: str
) -> BoundSource:
    path = _as_glob(con, path)
    param = f"path_{index}"
    relation = f"read_parquet(${param})"
    try:
        columns = _describe(con, f"SELECT * FROM {relation}", {param: path})
    except duckdb.IOException as exc:
        raise InvalidInputError(
            f"the source of view {view.name!r} ({path!r}) cannot be read: {exc}; "
            "check the path, glob or URL"
        ) from exc
    clash = [c for c in _VIRTUAL if c in columns]
    if clash:
        raise InvalidInputError(
            f"the source of view {view.name!r} has a column named {clash[0]!r}, which DuckDB "
            "reserves for the row's position in its files; rename that column"
        )
    # One file: the row number alone is the sequence ((0 << 40) + row), and a plain column lets
    # DuckDB push a join's key filter into the scan when values are read by sequence.
    single_file = not any(mark in path for mark in "*?[")
    seq = "file_row_number" if single_file else _FILE_SEQ
    return BoundSource(view, relation, seq, columns, {param: path})


def _as_glob(con: duckdb.DuckDBPyConnection, path: str) -> str:
    """A folder becomes ``folder/**/*.parquet``; a non-local URL's filesystem is registered."""
    if is_url(path):
        import fsspec

        fs, fs_path = fsspec.core.url_to_fs(path)
        if not con.filesystem_is_registered(
            fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        ):
            con.register_filesystem(fs)
        return path.rstrip("/") + "/**/*.parquet" if fs.isdir(fs_path) else path
    local = path.removeprefix("file://")
    return os.path.join(local, "**", "*.parquet") if os.path.isdir(local) else local


def _describe(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any]) -> dict[str, str]:
    rows = con.sql(f"DESCRIBE {query}", params=params).fetchall()
    return {str(row[0]): str(row[1]) for row in rows}
