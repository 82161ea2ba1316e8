"""Reading and writing a PostgreSQL table (or read-only query) behind a `PostgresSource`.

Rows come through a server-side cursor in chunks, straight into Arrow with types kept:
timestamptz -> timestamp[us, UTC], timestamp -> naive timestamp[us] (the source's
``time_zone`` says where), integers and floats as themselves, numeric as float64, text types as
string, bytea as binary, date as date32; any other type (json, uuid, interval, arrays...) is read
as its text form. Time filters are pushed into the SQL as bound parameters, identifiers are
quoted, and reads run in a READ ONLY transaction.

A table has no row order, so rows are returned sorted by event time, created time and then the
other columns: rows that tie on both times are ordered by their values, the same way on every
read, so the point-in-time join's winner (and a training set's fingerprint) never depends on the
order PostgreSQL happened to return them in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import errors, sql
from psycopg.postgres import types as pg_types

from keel.errors import InvalidInputError, StoreError
from keel.features.sources import public_url

if TYPE_CHECKING:
    from keel.features.offline.duckdb_scan import ScanRange
    from keel.features.sources import PostgresSource

_CHUNK_ROWS = 50_000
_CONNECT_TIMEOUT_S = "10"
# A naive wall time lies within 14 hours of the UTC instant it stands for in every zone, so a
# filter on a naive column widened by a day never drops a row; the engine applies the exact one.
_NAIVE_SLACK = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1)

_ARROW: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "bytea": pa.binary(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "numeric": pa.float64(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", "UTC"),
}
_BY_OID = {pg_types[name].oid: kind for name, kind in _ARROW.items()}
_NUMERIC = pg_types["numeric"].oid
_TIMESTAMP = pg_types["timestamp"].oid
_TIMESTAMPTZ = pg_types["timestamptz"].oid


@dataclass(frozen=True)
class RowFilter:
    """Which rows a read needs, in UTC epoch microseconds: ``start_us <= event <= end_us`` and,
    when ``after_us`` or ``created_after_us`` is set, only rows with an event after ``after_us``
    or a created time (the event time when NULL) after ``created_after_us``. The database may
    return more rows (naive columns are filtered with a margin), never fewer.

    >>> RowFilter(end_us=1_767_225_600_000_000).start_us is None
    True
    """

    start_us: int | None = None
    end_us: int | None = None
    after_us: int | None = None
    created_after_us: int | None = None

    @classmethod
    def covering(cls, ranges: Sequence[ScanRange], end_us: int) -> RowFilter:
        """A filter keeping every row that any of ``ranges`` (scan ranges ending at
        ``end_us`` or earlier) keeps."""
        starts = [r.start_us for r in ranges]
        afters = [r.after_us for r in ranges if r.after_us is not None]
        created = [r.created_after_us for r in ranges if r.created_after_us is not None]
        # A range without an "after" bound keeps old rows too, so the union has none.
        full = any(r.after_us is None and r.created_after_us is None for r in ranges)
        return cls(
            start_us=None if None in starts else min(s for s in starts if s is not None),
            end_us=end_us,
            after_us=None if full or not afters else min(afters),
            created_after_us=None if full or not created else min(created),
        )


def connect_kwargs(url: str) -> dict[str, Any]:
    """psycopg connection arguments from a SQLAlchemy or libpq URL; its query parameters
    (``options``, ``sslmode``...) are passed through."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    fields = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
    }
    kwargs: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    kwargs["connect_timeout"] = _CONNECT_TIMEOUT_S
    for key, value in parsed.query.items():
        kwargs[key] = value if isinstance(value, str) else value[-1]
    return kwargs


@contextmanager
def connect(source: PostgresSource, url: str, where: str) -> Iterator[psycopg.Connection[Any]]:
    """One transaction on the source's database (committed on success), with psycopg errors
    turned into Keel errors that name the source and the fix."""
    label = f"{where}: {source.label} at {public_url(url)}"
    try:
        conn = psycopg.connect(**connect_kwargs(url))
    except psycopg.OperationalError as exc:
        raise StoreError(
            f"{label} cannot be reached ({_first_line(exc)}); check the source's url (default: "
            "metadata.url) and that the PostgreSQL server runs"
        ) from exc
    try:
        with conn:
            yield conn
    except errors.UndefinedTable as exc:
        raise InvalidInputError(
            f"{label}: {_first_line(exc)}; create the table or fix the source's table name"
        ) from exc
    except errors.ReadOnlySqlTransaction as exc:
        raise InvalidInputError(
            f"{label}: the query writes ({_first_line(exc)}); a source query must only read"
        ) from exc
    except psycopg.IntegrityError as exc:
        raise InvalidInputError(
            f"{label}: {_first_line(exc)}; push rows the table's constraints accept"
        ) from exc
    except (psycopg.ProgrammingError, psycopg.DataError) as exc:
        raise InvalidInputError(f"{label}: {_first_line(exc)}; fix the source") from exc
    except psycopg.Error as exc:
        raise StoreError(f"{label} failed: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _relation(source: PostgresSource) -> sql.Composable:
    if source.table is not None:
        return sql.Identifier(*source.table.split("."))
    # '%' is doubled because the composed statement is parsed for bound parameters; the
    # newline keeps a trailing '-- comment' from swallowing the closing parenthesis.
    text = (source.query or "").strip().rstrip(";").replace("%", "%%")
    return sql.SQL("({}\n)").format(sql.SQL(text))


def _columns(conn: psycopg.Connection[Any], source: PostgresSource) -> dict[str, int]:
    """Column name -> type oid, from the result description of the source with no rows."""
    statement = sql.SQL("SELECT * FROM {} AS keel_src LIMIT 0").format(_relation(source))
    with conn.cursor() as cur:
        cur.execute(statement, {})
        return {column.name: column.type_code for column in cur.description or ()}


def arrow_type(oid: int) -> pa.DataType:
    """The Arrow type a column of PostgreSQL type ``oid`` is read as (text when unmapped)."""
    return _BY_OID.get(oid, pa.string())


def read_schema(source: PostgresSource, url: str, where: str) -> pa.Schema:
    """The Arrow schema the source is read with (no rows are fetched)."""
    with connect(source, url, where) as conn:
        conn.read_only = True
        return pa.schema([(name, arrow_type(oid)) for name, oid in _columns(conn, source).items()])


def read_table(
    source: PostgresSource,
    url: str,
    where: str,
    columns: list[str] | None = None,
    rows: RowFilter | None = None,
) -> pa.Table:
    """``columns`` (default: all) of the rows ``rows`` selects, sorted as the module docstring
    says. The result is held in memory."""
    with connect(source, url, where) as conn:
        conn.read_only = True
        found = _columns(conn, source)
        names = list(dict.fromkeys(columns)) if columns is not None else list(found)
        for name in names:
            if name not in found:
                raise InvalidInputError(
                    f"{where}: {source.label} has no column {name!r} (it has {list(found)}); "
                    "fix the name or the source"
                )
        schema = pa.schema([(name, arrow_type(found[name])) for name in names])
        picked = sql.SQL(", ").join(_select(name, found[name]) for name in names)
        condition, params = _condition(source, found, rows)
        statement = sql.SQL("SELECT {} FROM {} AS keel_src WHERE {}").format(
            picked, _relation(source), condition
        )
        batches: list[pa.RecordBatch] = []
        with conn.cursor(name="keel_source", binary=True) as cur:
            cur.itersize = _CHUNK_ROWS
            cur.execute(statement, params)
            while chunk := cur.fetchmany(_CHUNK_ROWS):
                batches.append(_batch(chunk, schema))
    table = pa.Table.from_batches(batches, schema)
    return _ordered(table, source)


def _select(name: str, oid: int) -> sql.Composable:
    column = sql.Identifier(name)
    if oid == _NUMERIC:  # exact decimals become float64, the dtype Keel features use
        return sql.SQL("{}::float8 AS {}").format(column, column)
    if oid not in _BY_OID:
        return sql.SQL("{}::text AS {}").format(column, column)
    return column


def _batch(chunk: list[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    values = list(zip(*chunk, strict=True))
    arrays = [pa.array(values[i], type=field.type) for i, field in enumerate(schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _ordered(table: pa.Table, source: PostgresSource) -> pa.Table:
    first = [source.event_timestamp, source.created_timestamp]
    keys = [name for name in first if name is not None and name in table.column_names]
    keys += [name for name in table.column_names if name not in keys]
    if table.num_rows < 2 or not keys:
        return table
    return table.sort_by([(name, "ascending") for name in keys])


def _condition(
    source: PostgresSource, found: dict[str, int], rows: RowFilter | None
) -> tuple[sql.Composable, dict[str, Any]]:
    """The SQL filter for ``rows`` with its bound parameters (TRUE when nothing is pushed)."""
    clauses: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if rows is None:
        return sql.SQL("TRUE"), params
    event = source.event_timestamp
    created = source.created_timestamp
    ev_oid = found.get(event, 0)
    ev = sql.Identifier(event)
    if rows.end_us is not None and _is_time(ev_oid):
        clauses.append(sql.SQL("{} <= %(keel_end)s").format(ev))
        params["keel_end"] = _bound(rows.end_us, ev_oid, _NAIVE_SLACK)
    if rows.start_us is not None and _is_time(ev_oid):
        clauses.append(sql.SQL("{} >= %(keel_start)s").format(ev))
        params["keel_start"] = _bound(rows.start_us, ev_oid, -_NAIVE_SLACK)
    newer: list[sql.Composable] = []
    if rows.after_us is not None:
        newer.append(sql.SQL("{} > %(keel_after)s").format(ev))
        params["keel_after"] = _bound(rows.after_us, ev_oid, -_NAIVE_SLACK)
    if rows.created_after_us is not None and created is not None:
        cr_oid = found.get(created, 0)
        cr = sql.Identifier(created)
        newer.append(sql.SQL("{} > %(keel_created)s").format(cr))
        newer.append(sql.SQL("({} IS NULL AND {} > %(keel_created_ev)s)").format(cr, ev))
        params["keel_created"] = _bound(rows.created_after_us, cr_oid, -_NAIVE_SLACK)
        params["keel_created_ev"] = _bound(rows.created_after_us, ev_oid, -_NAIVE_SLACK)
    pushable = _is_time(ev_oid) and (created is None or _is_time(found.get(created, 0)))
    if newer and pushable:
        clauses.append(sql.SQL("({})").format(sql.SQL(" OR ").join(newer)))
    if not clauses:
        return sql.SQL("TRUE"), {}
    return sql.SQL(" AND ").join(clauses), params


def _is_time(oid: int) -> bool:
    return oid in (_TIMESTAMP, _TIMESTAMPTZ)


def _bound(micros: int, oid: int, slack: timedelta) -> datetime:
    """A bound for a column: the exact instant for timestamptz, the UTC wall time moved by
    ``slack`` for a naive column (whose zone offset is unknown to the filter)."""
    if oid == _TIMESTAMPTZ:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return _EPOCH + timedelta(microseconds=micros) + slack


def insert_rows(source: PostgresSource, url: str, rows: pa.Table, owner: str) -> int:
    """Insert ``rows`` into the source table in one transaction (COPY), each column cast to
    the table's column type; table columns ``rows`` lacks get their database default. Aware
    timestamps bound for a naive column are stored as wall times in the source's time zone."""
    if source.table is None:
        raise InvalidInputError(
            f"{owner}: {source.label} reads a query; push inserts into a table — give the "
            "source a table, or insert the rows with your pipeline"
        )
    with connect(source, url, owner) as conn:
        found = _columns(conn, source)
        names = [name for name in found if name in rows.column_names]
        arrays = [_conform(rows.column(name), found[name], source, owner, name) for name in names]
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            _relation(source), sql.SQL(", ").join(sql.Identifier(n) for n in names)
        )
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for row in zip(*(array.to_pylist() for array in arrays), strict=True):
                copy.write_row(row)
    return int(rows.num_rows)


def _conform(
    column: pa.ChunkedArray, oid: int, source: PostgresSource, owner: str, name: str
) -> pa.ChunkedArray:
    target = arrow_type(oid)
    try:
        if oid == _TIMESTAMP and getattr(column.type, "tz", None) is not None:
            zone = source.time_zone or "UTC"
            return pc.local_timestamp(pc.cast(column, pa.timestamp("us", zone)))
        return pc.cast(column, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInputError(
            f"{owner}: column {name!r} cannot be stored as {target} ({exc}); push values of "
            "the source's type"
        ) from exc
