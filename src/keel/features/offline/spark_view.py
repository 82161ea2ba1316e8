"""One view of a Spark training set: its source rows with typed keys and microsecond times,
the point-in-time and aggregation queries, and their results turned back into the output
columns by the planner's own `ViewOutputs.finish` (declared types, defaults, lossy casts)."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from py4j.protocol import Py4JError  # type: ignore[import-untyped]
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as sf
from pyspark.sql.types import DataType, DecimalType, DoubleType, FloatType, IntegralType, LongType

from keel.errors import StoreError
from keel.features.offline import spark_join
from keel.features.offline.planning import ViewOutputs
from keel.features.offline.spark_sources import (
    SparkSource,
    col,
    is_time,
    load_source,
    spark_ready,
    to_spark,
)

_FAR = 1 << 62  # "no bound" in epoch microseconds, as in the DuckDB engine
_UTC_US = pa.timestamp("us", tz="UTC")


def entity_frame(spark: SparkSession, table: pa.Table) -> DataFrame:
    """``__row``, ``__t`` and the entity key columns ``__e0...`` as a Spark DataFrame."""
    ready = pa.table({name: spark_ready(table.column(name)) for name in table.column_names})
    return to_spark(spark, ready, "the entity frame")


def _key_type(entity: DataType, source: DataType) -> DataType:
    """One type for a key on both sides; the planner has checked they are of one family."""
    if entity == source:
        return source
    pair = (entity, source)
    if all(isinstance(t, IntegralType) for t in pair):
        return LongType()
    if all(isinstance(t, IntegralType | DecimalType) for t in pair):  # uint64 is a decimal
        scale = max(t.scale if isinstance(t, DecimalType) else 0 for t in pair)
        return DecimalType(38, scale)
    if all(isinstance(t, FloatType | DoubleType) for t in pair):
        return DoubleType()
    return source


class ViewRun:
    """Runs one planned view in Spark. ``types`` are DuckDB's Arrow types for the
    aggregations whose type the engine chooses."""

    def __init__(
        self,
        spark: SparkSession,
        con: duckdb.DuckDBPyConnection,
        outputs: ViewOutputs,
        types: dict[int, pa.DataType],
        bounds: tuple[int, int],
    ) -> None:
        self.spark = spark
        self.con = con
        self.outputs = outputs
        self.types = types
        self.bounds = bounds
        self.view = outputs.plan.source.view
        self.columns = outputs.plan.source.columns  # DuckDB types, by column

    def run(self, entities: DataFrame, rows: int) -> list[tuple[str, pa.ChunkedArray]]:
        plan = self.outputs.plan
        try:
            source_rows, keyed = self._frames(entities)
            point = agg = None
            if plan.values:
                lo = self.bounds[0] - plan.ttl_us if plan.ttl_us is not None else -_FAR
                point = self._collect(
                    spark_join.point_in_time(
                        keyed,
                        self._between(source_rows, lo),
                        keys=len(plan.keys),
                        created_visible=plan.known_at and plan.created_us is not None,
                        ttl_us=plan.ttl_us,
                        values=len(plan.values),
                    ),
                    rows,
                )
            if plan.aggregations:
                widest = max(agg.window_us for agg in plan.aggregations)
                agg = self._collect(
                    spark_join.aggregate(
                        keyed,
                        self._between(source_rows, self.bounds[0] - widest),
                        keys=len(plan.keys),
                        known_at=plan.known_at and plan.created_us is not None,
                        aggregations=plan.aggregations,
                    ),
                    rows,
                )
        except (PySparkException, Py4JError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"Spark failed joining {self.outputs.owner}: {first}") from exc
        return self.outputs.finish(self._point_values(point), self._aggregates(agg))

    def _frames(self, entities: DataFrame) -> tuple[DataFrame, DataFrame]:
        """The source rows (keys, times, values) and the entity rows with matching key types."""
        view, plan = self.view, self.outputs.plan
        values = [f.source_column for f in view.features]
        measured = [a.column for a in view.aggregations]
        created = view.created_timestamp
        times = [view.event_timestamp, *([created] if created else [])]
        time_columns = set(times) | {c for c in [*values, *measured] if is_time(self.columns[c])}
        needed = list(dict.fromkeys([*view.join_keys, *times, *values, *measured]))
        source = load_source(self.spark, self.con, plan.source, needed, time_columns)
        schema = source.frame.schema
        key_types = [
            _key_type(entities.schema[entity].dataType, schema[key].dataType)
            for (entity, _), key in zip(plan.keys, view.join_keys, strict=True)
        ]
        keyed = entities.select(
            "__row",
            "__t",
            *[
                sf.col(entity).cast(kind).alias(f"__k{i}")
                for i, ((entity, _), kind) in enumerate(zip(plan.keys, key_types, strict=True))
            ],
        )
        event = source.time_us(view.event_timestamp)
        created_us = source.time_us(created) if created else event
        frame = source.frame.select(
            *[
                col(key).cast(kind).alias(f"__k{i}")
                for i, (key, kind) in enumerate(zip(view.join_keys, key_types, strict=True))
            ],
            event.alias("__ev"),
            created_us.alias("__cr"),
            sf.col("__keel_seq").alias("__seq"),
            *[self._value(source, c).alias(f"__v{j}") for j, c in enumerate(values)],
            *[self._value(source, c).alias(f"__x{j}") for j, c in enumerate(measured)],
        )
        known = sf.col("__ev").isNotNull()
        for i in range(len(plan.keys)):
            known = known & sf.col(f"__k{i}").isNotNull()
        rows = frame.where(known).withColumn("__cr", sf.coalesce("__cr", "__ev"))
        return rows, keyed

    def _value(self, source: SparkSource, column: str) -> Column:
        return source.time_us(column) if is_time(self.columns[column]) else col(column)

    def _between(self, rows: DataFrame, lo: int) -> DataFrame:
        return rows.where(
            (sf.col("__ev") >= sf.lit(lo)) & (sf.col("__ev") <= sf.lit(self.bounds[1]))
        )

    def _collect(self, frame: DataFrame, rows: int) -> pa.Table:
        table = frame.toArrow().sort_by("__row")
        if table.num_rows != rows:  # the join's invariant; a failure here is a bug in Keel
            raise StoreError(
                f"{self.outputs.owner}: the Spark join returned {table.num_rows} rows for {rows}"
            )
        return table

    def _point_values(self, point: pa.Table | None) -> pa.Table | None:
        if point is None:
            return None
        for j, feature in enumerate(self.view.features):
            if is_time(self.columns[feature.source_column]):
                point = _as_timestamps(point, f"__v{j}")
        return point

    def _aggregates(self, agg: pa.Table | None) -> pa.Table | None:
        if agg is None:
            return None
        for j, aggregation in enumerate(self.view.aggregations):
            name = f"__a{j}"
            if aggregation.function != "count" and is_time(self.columns[aggregation.column]):
                agg = _as_timestamps(agg, name)
            if j in self.types:
                try:
                    values = pc.cast(agg.column(name), self.types[j])
                except pa.ArrowInvalid as exc:  # DuckDB fails the same sum in its own cast
                    output = self.outputs.aggregations[j].name
                    raise StoreError(
                        f"{self.outputs.owner}: aggregation {output!r}: {exc}"
                    ) from exc
                agg = agg.set_column(agg.column_names.index(name), name, values)
        return agg


def _as_timestamps(table: pa.Table, name: str) -> pa.Table:
    """Epoch microseconds back to UTC timestamps."""
    index = table.column_names.index(name)
    return table.set_column(index, name, pc.cast(table.column(name), _UTC_US))
