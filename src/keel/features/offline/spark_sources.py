"""Feature-view sources and entity frames as Spark DataFrames.

Parquet sources are read by Spark itself, from an explicit list of files (DuckDB's glob of the
same path, in DuckDB's order), so a source larger than the driver never passes through Python.
The ingestion sequence of a Parquet row is ``(position of its file in that list, row index in
the file)``: the file comes from Spark's ``_metadata.file_path`` (decoded and looked up in the
list), the row index from ``_metadata.row_index``, which Spark computes from the Parquet
row-group offsets — the row's position in its file however the file is split into tasks, unlike
``monotonically_increasing_id``, whose values depend on the partitioning.

In-memory sources are numbered in Python, so their sequence is their row order.

Every time column reaches the join as epoch microseconds (UTC, floored), with naive wall times
read in the view's ``source_time_zone`` by ``to_utc_timestamp``, which follows java.time: the
earlier instant of a repeated hour and the offset before a gap, as DuckDB's reading does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as sf
from pyspark.sql.types import LongType, TimestampNTZType

from keel.errors import InvalidInputError
from keel.features.offline.duckdb_sources import BoundSource
from keel.features.offline.frames import as_table, is_url, plain_values, times_us
from keel.features.offline.spec import ViewInput

_NAIVE = {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"}
_FILE_SHIFT = 1 << 40  # rows per file below this: (file, row) packs into one BIGINT
_GLOB_CHARS = "\\[]{}*?"  # Hadoop reads these in a path as a glob unless escaped
_WIDER = {  # Spark has no unsigned integers
    pa.uint8(): pa.int16(),
    pa.uint16(): pa.int32(),
    pa.uint32(): pa.int64(),
    pa.uint64(): pa.decimal128(20, 0),
    pa.float16(): pa.float32(),
    pa.date64(): pa.date32(),
}


def col(name: str) -> Column:
    """A column by its exact name (dots and backticks are not parsed)."""
    return sf.col("`" + name.replace("`", "``") + "`")


def is_time(kind: str) -> bool:
    """Whether a DuckDB column type is a timestamp (naive or aware, any unit)."""
    return kind.startswith("TIMESTAMP")


def spark_ready(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column in a type Spark accepts: dictionaries decoded, unsigned integers widened."""
    column = plain_values(column)
    wider = _WIDER.get(column.type)
    return pc.cast(column, wider) if wider is not None else column


def to_spark(spark: SparkSession, table: pa.Table, what: str) -> DataFrame:
    try:
        return spark.createDataFrame(table)
    except (TypeError, ValueError) as exc:  # pyspark's errors for types it cannot hold
        raise InvalidInputError(
            f"{what} has a column Spark cannot hold ({exc}); convert it or use DuckDBEngine"
        ) from exc


@dataclass
class SparkSource:
    """A view's source in Spark: the raw columns the join reads, a ``__keel_seq`` column (the
    ingestion sequence), and which columns already hold microseconds (in-memory sources)."""

    bound: BoundSource
    frame: DataFrame
    micros_ready: frozenset[str]

    def time_us(self, column: str) -> Column:
        """Epoch microseconds (UTC) of a timestamp column, naive ones read in the view's zone."""
        kind = self.bound.columns[column]
        value = col(column)
        spark_type = self.frame.schema[column].dataType
        if column in self.micros_ready:
            us = value
        elif isinstance(spark_type, LongType):  # nanoseconds (spark.sql.legacy...nanosAsLong)
            us = sf.floor(value.cast("decimal(20,0)") / sf.lit(1000)).cast("long")  # exact
        elif isinstance(spark_type, TimestampNTZType):
            us = sf.unix_micros(value.cast("timestamp"))  # the session is UTC: the wall time
        else:
            us = sf.unix_micros(value)
        if kind not in _NAIVE:
            return us
        zone = self.bound.view.source_time_zone
        if zone is None:  # planning refused this already; kept for the type checker
            raise InvalidInputError(f"{self.bound.owner} has naive times and no source_time_zone")
        return sf.unix_micros(sf.to_utc_timestamp(sf.timestamp_micros(us), zone))


def load_source(
    spark: SparkSession,
    con: duckdb.DuckDBPyConnection,
    bound: BoundSource,
    columns: list[str],
    time_columns: set[str],
) -> SparkSource:
    """The view's source with ``columns`` and ``__keel_seq``; ``time_columns`` are timestamps."""
    source = bound.view.source
    if isinstance(source, str | os.PathLike):
        frame = _read_parquet(spark, con, bound, os.fspath(source), columns)
        return SparkSource(bound, frame, frozenset())
    table = as_table(source, f"the source of {bound.owner}")
    arrays: dict[str, pa.ChunkedArray] = {}
    for name in columns:
        values = table.column(name)
        if name in time_columns:
            if values.type.tz is None:  # the wall time as if UTC; the zone is applied in Spark
                values = pc.cast(values, pa.timestamp(values.type.unit, tz="UTC"))
            arrays[name] = times_us(values, name)
        else:
            arrays[name] = spark_ready(values)
    arrays["__keel_seq"] = pa.chunked_array([pa.array(range(table.num_rows), pa.int64())])
    frame = to_spark(spark, pa.table(arrays), f"the source of {bound.owner}")
    return SparkSource(bound, frame, frozenset(time_columns))


def local_source(view: ViewInput) -> ViewInput:
    """The view with an in-memory source as an Arrow table (converted once, read by the planner
    and by Spark); a URL source is refused, since Spark reads local paths here."""
    source = view.source
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if is_url(path):
            raise InvalidInputError(
                f"the source of view {view.name!r} is the URL {path!r}; the Spark engine reads "
                "local Parquet paths only: copy the files to a local path, pass an Arrow table, "
                "or use DuckDBEngine"
            )
        return view
    if isinstance(source, pa.Table):
        return view
    return replace(view, source=as_table(source, f"the source of view {view.name!r}"))


def parquet_files(con: duckdb.DuckDBPyConnection, path: str, owner: str) -> list[str]:
    """The files DuckDB reads for ``path`` (a file, folder or glob), in its order — the file
    order of the ingestion sequence: sorted within a folder, a folder's own files before those
    of its subfolders."""
    local = path.removeprefix("file://")
    pattern = os.path.join(local, "**", "*.parquet") if os.path.isdir(local) else local
    files = [str(row[0]) for row in con.execute("SELECT file FROM glob(?)", [pattern]).fetchall()]
    hidden = [f for f in files if os.path.basename(f).startswith(("_", "."))]
    if hidden:
        raise InvalidInputError(
            f"the source of {owner} includes {hidden[0]!r}; Spark skips files whose names "
            "start with '_' or '.', so rename it (or use DuckDBEngine)"
        )
    return [os.path.abspath(f) for f in files]


def _read_parquet(
    spark: SparkSession,
    con: duckdb.DuckDBPyConnection,
    bound: BoundSource,
    path: str,
    columns: list[str],
) -> DataFrame:
    reserved = [c for c in columns if c.startswith("__keel_")]
    if reserved:
        raise InvalidInputError(
            f"the source of {bound.owner} has a column named {reserved[0]!r}; names starting "
            "with '__keel_' are reserved for the join, so rename that column"
        )
    files = parquet_files(con, path, bound.owner)
    escaped = ["".join("\\" + c if c in _GLOB_CHARS else c for c in f) for f in files]
    frame = spark.read.parquet(*escaped)
    meta = frame.metadataColumn("_metadata")
    # file_path is a URI ("file:/a%20b.parquet"); '+' is escaped first because url_decode,
    # unlike a URI, reads '+' as a space
    decoded = sf.url_decode(sf.regexp_replace(meta["file_path"], r"\+", "%2B"))
    local = sf.regexp_replace(decoded, r"^file:(//)?", "")
    rows = frame.select(
        *[col(c) for c in columns],
        local.alias("__keel_path"),
        meta["row_index"].alias("__keel_row"),
    )
    lookup = to_spark(
        spark,
        pa.table({"__keel_path": files, "__keel_file": pa.array(range(len(files)), pa.int64())}),
        "the file list",
    )
    joined = rows.join(sf.broadcast(lookup), "__keel_path", "left")
    file_index = sf.when(
        sf.col("__keel_file").isNull(),
        sf.raise_error(
            sf.concat(sf.lit("a Parquet file is not in the file list: "), sf.col("__keel_path"))
        ),
    ).otherwise(sf.col("__keel_file"))
    seq = file_index * sf.lit(_FILE_SHIFT) + sf.col("__keel_row")
    return joined.select(*[col(c) for c in columns], seq.alias("__keel_seq"))
