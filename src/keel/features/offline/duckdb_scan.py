"""Scans of a view's source for materialization: the newest row per entity key in an event-time
range (what the online store needs), or every row (what windowed aggregations need online).

Parquet sources are read from an explicit, sorted list of files, so ``file_index`` is the
position in that list: the ingestion order of the point-in-time join, and the handle by which an
incremental run picks the files that are new since the last one. An in-memory source (a table
read from a database) has no files: its rows are ingested in row order, and an incremental run
tells new rows by their times alone. Results are written to a DuckDB temporary table first
(spilled to disk past the memory limit), then streamed out in Arrow batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from keel.errors import InvalidInputError, StoreError
from keel.features.offline.duckdb_engine import DuckDBEngine
from keel.features.offline.duckdb_sources import BoundSource, bind_source, quote
from keel.features.offline.frames import arrow_type, finish_column
from keel.features.offline.planning import _accepts, _family
from keel.features.offline.spec import ViewInput

_BATCH_ROWS = 50_000


@dataclass(frozen=True)
class ScanRange:
    """Which source rows a scan reads: ``start_us <= event <= end_us`` and, for an incremental
    run, only rows that are new since the last one — in a file not read then (``new_files``,
    indexes into the file list), with an event time after ``after_us``, or ingested after
    ``created_after_us``."""

    start_us: int | None
    end_us: int
    new_files: tuple[int, ...] | None = None
    after_us: int | None = None
    created_after_us: int | None = None


# Results up to this many cells (rows x columns) are fetched straight into Arrow; larger ones
# go through a DuckDB temporary table, which spills to disk past the memory limit.
_IN_MEMORY_CELLS = 20_000_000


@dataclass
class Scan:
    """A scan's result: ``rows`` in total, streamed by ``batches()`` with columns ``__k0...``
    (keys), ``__ev``/``__cr`` (epoch microseconds) and one column per requested value."""

    rows: int
    columns: tuple[str, ...]
    _con: duckdb.DuckDBPyConnection
    _types: dict[str, pa.DataType]
    _table: pa.Table | None = None  # the whole result, when it was small enough to fetch

    def batches(self, size: int = _BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        if self._table is not None:
            batches: Iterator[pa.RecordBatch] = iter(self._table.to_batches(max_chunksize=size))
        else:
            batches = iter(self._con.sql("SELECT * FROM __keel_scan").to_arrow_reader(size))
        for batch in batches:
            yield _cast(batch, self._types)


def _cast(batch: pa.RecordBatch, types: dict[str, pa.DataType]) -> pa.RecordBatch:
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        kind = types.get(name)
        if kind is not None and column.type != kind:
            column = finish_column(pa.chunked_array([column]), kind, None, None, name)
            column = column.combine_chunks()
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


class SourceScanner:
    """Opens one DuckDB connection for a sequence of scans of ``view`` over ``files`` (empty for
    an in-memory source).

    >>> with SourceScanner(view, files) as scanner:           # doctest: +SKIP
    ...     scan = scanner.latest(["spend"], ScanRange(None, end_us))
    """

    def __init__(self, view: ViewInput, files: list[str], engine: DuckDBEngine | None = None):
        self._in_memory = not isinstance(view.source, str | os.PathLike)
        if not files and not self._in_memory:
            raise InvalidInputError(f"the source of view {view.name!r} has no Parquet file")
        self.view = view
        self.files = files
        self._engine = engine or DuckDBEngine()
        self._context = self._engine.connect()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._source: BoundSource | None = None
        self._rows: int | None = None

    def __enter__(self) -> SourceScanner:
        self._con = self._context.__enter__()
        self._source = bind_source(self._con, self.view, 0)
        if not self._in_memory:
            self._source.params["path_0"] = self.files  # the explicit, ordered file list
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(None, None, None)

    @property
    def source(self) -> BoundSource:
        if self._source is None:
            raise RuntimeError("use SourceScanner as a context manager")
        return self._source

    def latest(self, values: list[str], scan_range: ScanRange) -> Scan:
        """The newest row per key (greatest event time, ingestion time, file order, row)."""
        return self._run(values, scan_range, newest_only=True)

    def rows(self, values: list[str], scan_range: ScanRange) -> Scan:
        """Every row in range, oldest first (event time, ingestion time, file order, row)."""
        return self._run(values, scan_range, newest_only=False)

    def _run(self, values: list[str], scan_range: ScanRange, *, newest_only: bool) -> Scan:
        source = self.source
        keys = [f"{quote(k)} AS __k{i}" for i, k in enumerate(self.view.join_keys)]
        key_names = ", ".join(f"__k{i}" for i in range(len(keys)))
        ev = source.time_us(self.view.event_timestamp, "event timestamp")
        created = self.view.created_timestamp
        cr = source.time_us(created, "created timestamp") if created else "NULL::BIGINT"
        value_sql, types = self._values(values)
        inner = ", ".join(
            [*keys, f"{ev} AS __ev", f"{cr} AS __cr", f"{source.seq} AS __seq"]
            + [("NULL::BIGINT" if self._in_memory else "file_index") + " AS __file"]
            + [f"{sql} AS __v{j}" for j, sql in enumerate(value_sql)]
        )
        not_null = " AND ".join(f"__k{i} IS NOT NULL" for i in range(len(keys)))
        where, params = _range_filter(scan_range)
        named = [f"__v{j} AS {quote(name)}" for j, name in enumerate(values)]
        picked = ", ".join([key_names, "__ev", "__cr", *named])
        body = (
            f"SELECT * REPLACE (coalesce(__cr, __ev) AS __cr) FROM (SELECT {inner} FROM "
            f"{source.relation}) WHERE {not_null} AND __ev IS NOT NULL AND {where}"
        )
        if newest_only:
            # The winner of each key by one aggregation, then its row by sequence number
            # (unique per row): cheaper than ranking every row with a window.
            sql = (
                f"WITH s AS ({body}), b AS (SELECT max(struct_pack(e := __ev, c := __cr, "
                f"q := __seq)).q AS __best FROM s GROUP BY {key_names}) "
                f"SELECT {picked} FROM s JOIN b ON s.__seq = b.__best"
            )
        else:
            sql = f"SELECT {picked} FROM ({body}) ORDER BY __ev, __cr, __seq"
        con = self._connection()
        names = (*[f"__k{i}" for i in range(len(keys))], "__ev", "__cr", *values)
        try:
            if self._source_rows() * len(names) <= _IN_MEMORY_CELLS:
                table = con.sql(sql, params={**source.params, **params}).to_arrow_table()
                return Scan(table.num_rows, names, con, types, table)
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE __keel_scan AS {sql}", {**source.params, **params}
            )
            total = con.sql("SELECT count(*) FROM __keel_scan").fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"DuckDB failed reading the source of {source.owner}: {exc}") from exc
        rows = int(total[0][0]) if total else 0
        return Scan(rows, names, con, types)

    def _source_rows(self) -> int:
        """How many rows the source has (Parquet footers only): what a scan reads at most."""
        if self._rows is None:
            con = self._connection()
            if self._in_memory:
                query, params = f"SELECT count(*) FROM {self.source.relation}", {}
            else:
                query = "SELECT sum(num_rows) FROM parquet_file_metadata($files)"
                params = {"files": self.files}
            found = con.sql(query, params=params).fetchall()
            self._rows = int(found[0][0] or 0) if found else 0
        return self._rows

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("use SourceScanner as a context manager")
        return self._con

    def _values(self, values: list[str]) -> tuple[list[str], dict[str, pa.DataType]]:
        """SQL of each requested column, checked against its declared dtype."""
        declared = {f.name: f for f in self.view.features}
        source = self.source
        sql: list[str] = []
        types: dict[str, pa.DataType] = {}
        for name in values:
            feature = declared.get(name)
            column = feature.source_column if feature is not None else name
            kind = source.column_type(column, f"column {name!r}")
            if feature is not None and not _accepts(feature.dtype, kind):
                raise InvalidInputError(
                    f"feature {name!r} of {source.owner} is declared {feature.dtype} but "
                    f"source column {column!r} is {kind}; declare the matching dtype"
                )
            timestamp = _family(kind) == "timestamp"
            sql.append(source.timestamp_value(column, name) if timestamp else quote(column))
            if feature is not None:
                types[name] = arrow_type(feature.dtype)
        return sql, types


def _range_filter(scan_range: ScanRange) -> tuple[str, dict[str, Any]]:
    clauses = ["__ev <= $scan_end"]
    params: dict[str, Any] = {"scan_end": scan_range.end_us}
    if scan_range.start_us is not None:
        clauses.append("__ev >= $scan_start")
        params["scan_start"] = scan_range.start_us
    if scan_range.new_files is not None:
        news = []
        if scan_range.new_files:
            news.append("list_contains($scan_new, __file)")
            params["scan_new"] = list(scan_range.new_files)
        if scan_range.after_us is not None:
            news.append("__ev > $scan_after")
            params["scan_after"] = scan_range.after_us
        if scan_range.created_after_us is not None:
            news.append("coalesce(__cr, __ev) > $scan_created")
            params["scan_created"] = scan_range.created_after_us
        clauses.append("(" + (" OR ".join(news) or "FALSE") + ")")
    return " AND ".join(clauses), params
