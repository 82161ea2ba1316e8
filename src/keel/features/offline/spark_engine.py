"""The Spark offline engine: the same training sets as `DuckDBEngine`, computed by Spark.

A request is checked and planned exactly as the DuckDB engine does it (`planning.plan_view`
over an in-memory DuckDB connection that only reads schemas: Parquet footers, Arrow types), so
bad input fails with the same `InvalidInputError`, before Spark starts a job; the plan's output
types, defaults and casts are applied by the same code to Spark's results. Spark does the work
that grows with the data: reading Parquet sources, the point-in-time join and the windowed
aggregations (`keel.features.offline.spark_join`). Results come back to the driver as Arrow,
one row per entity row.

Needs pyspark 4 (``pip install keel[spark]``) and Java 17 or later.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from keel.errors import StoreError
from keel.features.offline import duckdb_sql, planning
from keel.features.offline.duckdb_engine import register_entities, time_bounds
from keel.features.offline.duckdb_sources import LOCAL_TO_US_MACROS
from keel.features.offline.frames import as_table, plain_values, require_column, times_us
from keel.features.offline.spec import JoinRequest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_INSTALL = "install it with `pip install keel[spark]`"
# Set for the duration of a call, then restored: Keel's times are UTC, and Parquet nanosecond
# timestamps are read as integers (Spark refuses them otherwise) and floored to microseconds.
_CALL_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}
_DEFAULTS = {**_CALL_SETTINGS, "spark.sql.execution.arrow.pyspark.enabled": "true"}


def _require_pyspark() -> None:
    try:
        import pyspark
    except ImportError as exc:
        raise StoreError(f"the Spark engine needs the 'pyspark' package; {_INSTALL}") from exc
    major = int(pyspark.__version__.split(".")[0])
    if major < 4:
        raise StoreError(
            f"the Spark engine needs pyspark 4 or later, found {pyspark.__version__}; {_INSTALL}"
        )


class SparkEngine:
    """Builds training sets with Spark. Pass a ``spark`` session, or let the engine start one
    on first use with ``master`` and extra ``config`` (``spark.*`` settings).

    >>> engine = SparkEngine(master="local[4]", config={"spark.driver.memory": "4g"})
    >>> table = engine.get_training_set(JoinRequest(entity_df, (user_view,)))  # doctest: +SKIP

    Sources are Parquet files, folders or globs on local paths (all Spark workers must see
    them), or in-memory Arrow tables / pandas DataFrames.
    """

    def __init__(
        self,
        spark: SparkSession | None = None,
        *,
        master: str = "local[2]",
        config: Mapping[str, str] | None = None,
    ) -> None:
        _require_pyspark()
        self._spark = spark
        self._started = False
        self.master = master
        self.config = dict(config or {})

    @property
    def spark(self) -> SparkSession:
        """The session the engine uses; started on first use when none was given."""
        if self._spark is None:
            from pyspark.sql import SparkSession

            builder = SparkSession.builder.master(self.master).appName("keel")
            for key, value in {**_DEFAULTS, **self.config}.items():
                builder = builder.config(key, value)
            with _quiet_pandas_notice():
                self._spark = builder.getOrCreate()
            self._started = True
        return self._spark

    def stop(self) -> None:
        """Stop the session if this engine started it (a session passed in is left alone)."""
        if self._started and self._spark is not None:
            self._spark.stop()
        self._spark = None
        self._started = False

    def get_training_set(self, request: JoinRequest) -> pa.Table:
        """The entity frame's columns unchanged, then each view's features and aggregations:
        exactly one row per entity row, in input order (see `keel.features.offline.spec`)."""
        from keel.features.offline import spark_sources, spark_view

        entities = as_table(request.entities, "the entity frame")
        times = times_us(
            require_column(entities, request.timestamp_column, "the entity frame", "timestamp"),
            request.timestamp_column,
        )
        planning.check_output_names(request, entities.column_names)
        request = replace(
            request, views=tuple(spark_sources.local_source(v) for v in request.views)
        )
        bounds = time_bounds(times)
        columns: list[tuple[str, pa.ChunkedArray]] = []
        with _planner() as con:
            key_columns = register_entities(con, request, entities, times)
            plans = [
                planning.plan_view(con, request, view, index, key_columns)
                for index, view in enumerate(request.views)
            ]
            kinds = [_duckdb_aggregation_types(con, outputs) for outputs in plans]
            frame = {"__row": pa.array(range(entities.num_rows), pa.int64()), "__t": times}
            for column, name in key_columns.items():
                frame[name] = plain_values(entities.column(column))
            with self._call_settings() as spark:
                entity_frame = spark_view.entity_frame(spark, pa.table(frame))
                for outputs, types in zip(plans, kinds, strict=True):
                    view = spark_view.ViewRun(spark, con, outputs, types, bounds)
                    columns.extend(view.run(entity_frame, entities.num_rows))
        for name, values in columns:
            entities = entities.append_column(name, values)
        return entities

    @contextmanager
    def _call_settings(self) -> Iterator[SparkSession]:
        spark = self.spark
        before = {key: spark.conf.get(key, None) for key in _CALL_SETTINGS}
        for key, value in _CALL_SETTINGS.items():
            spark.conf.set(key, value)
        try:
            with _quiet_pandas_notice():
                yield spark
        finally:
            for key, old in before.items():
                if old is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, old)


@contextmanager
def _quiet_pandas_notice() -> Iterator[None]:
    """pyspark warns once, when it first imports pyspark.testing (starting a session or
    building a literal), that it does not fully support pandas >= 3; the engine never converts
    through pandas (Arrow both ways), so that one warning is silenced, and nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
        )
        yield


@contextmanager
def _planner() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection for planning: it binds queries, never runs a join."""
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "threads": 1})
    try:
        con.execute("SET TimeZone = 'UTC'")
        for macro in LOCAL_TO_US_MACROS:
            con.execute(macro)
        yield con
    finally:
        con.close()


def _duckdb_aggregation_types(
    con: duckdb.DuckDBPyConnection, outputs: planning.ViewOutputs
) -> dict[int, pa.DataType]:
    """Arrow types of the aggregations whose type is DuckDB's choice (no dtype, e.g. the sum of
    a float or the max of a string): the types DuckDB binds the query to, which it never runs."""
    untyped = [j for j, out in enumerate(outputs.aggregations) if out.kind is None]
    if not untyped:
        return {}
    plan = outputs.plan
    params: dict[str, Any] = {**plan.params(0, -1), **duckdb_sql.aggregation_params(plan)}
    described = con.sql(f"DESCRIBE {duckdb_sql.aggregation_sql(plan)}", params=params).fetchall()
    kinds = {str(row[0]): str(row[1]) for row in described}
    nulls = ", ".join(f"CAST(NULL AS {kinds[f'__a{j}']}) AS __a{j}" for j in untyped)
    schema = con.sql(f"SELECT {nulls} LIMIT 0").to_arrow_table().schema
    return {j: schema.field(f"__a{j}").type for j in untyped}
