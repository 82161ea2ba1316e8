"""The Spark side of the point-in-time join and the windowed aggregations.

Both take two DataFrames with typed key columns ``__k0...``: the entity rows (``__row``, ``__t``)
and the source rows (``__ev``, ``__cr`` with NULL already read as ``__ev``, ``__seq``, values
``__v0...`` and ``__x0...``), rows that can never be candidates (a NULL key or event time)
removed. Times are epoch microseconds.

Point-in-time ("timeline" as in the DuckDB engine, without ASOF): the entity rows are put on the
timeline of their key's source rows, a source row at its visibility time ``max(event, created)``
(``event`` without rule 3), an entity row at ``T`` just after any source row visible at ``T``.
The running maximum of ``(event, created, sequence, values...)`` over that order is, at an entity
row, the winner among the rows visible by ``T``; the TTL is then one comparison, since no other
candidate has a later event time. One sort per key, nothing quadratic in the rows of a key.

Aggregations need every row in ``(T - w, T]``, so they are a key-equality join bounded by the
widest window and grouped per entity row, as in DuckDB.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as sf

from keel.features.offline.duckdb_sql import AggregationPlan


def key_names(count: int) -> list[str]:
    return [f"__k{i}" for i in range(count)]


def point_in_time(
    entities: DataFrame,
    rows: DataFrame,
    *,
    keys: int,
    created_visible: bool,
    ttl_us: int | None,
    values: int,
) -> DataFrame:
    """``__row``, ``__matched`` and ``__v0...`` (NULL without a candidate) per entity row."""
    names = key_names(keys)
    candidate = sf.struct(
        sf.col("__ev").alias("ev"),
        sf.col("__cr").alias("cr"),
        sf.col("__seq").alias("seq"),
        *[sf.col(f"__v{j}").alias(f"v{j}") for j in range(values)],
    )
    visible = sf.greatest("__ev", "__cr") if created_visible else sf.col("__ev")
    timeline = rows.select(
        *names, visible.alias("__vis"), sf.lit(0).alias("__kind"), candidate.alias("__cand")
    )
    asking = entities.select(
        *names, sf.col("__t").alias("__vis"), sf.lit(1).alias("__kind"), "__row", "__t"
    )
    # NULL times sort first, before every source row: such an entity row has no candidate
    running = (
        Window.partitionBy(*names)
        .orderBy("__vis", "__kind")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    both = timeline.unionByName(asking, allowMissingColumns=True)
    best = both.select(
        "__kind", "__row", "__t", sf.max("__cand").over(running).alias("__best")
    ).where(sf.col("__kind") == 1)
    matched = sf.col("__best").isNotNull()
    if ttl_us is not None:
        matched = matched & (sf.col("__best")["ev"] >= sf.col("__t") - sf.lit(ttl_us))
    picked = [sf.when(matched, sf.col("__best")[f"v{j}"]).alias(f"__v{j}") for j in range(values)]
    return best.select("__row", matched.alias("__matched"), *picked)


def aggregate(
    entities: DataFrame,
    rows: DataFrame,
    *,
    keys: int,
    known_at: bool,
    aggregations: list[AggregationPlan],
) -> DataFrame:
    """``__row`` and ``__a0...`` per entity row: each aggregation over ``(T - w, T]``."""
    names = key_names(keys)
    widest = max(agg.window_us for agg in aggregations)
    source = rows.select(*[sf.col(name).alias("s" + name) for name in rows.columns])
    on = [sf.col(name) == sf.col("s" + name) for name in names]
    on += [sf.col("s__ev") <= sf.col("__t"), sf.col("s__ev") > sf.col("__t") - sf.lit(widest)]
    if known_at:
        on.append(sf.col("s__cr") <= sf.col("__t"))
    joined = entities.join(source, reduce(lambda a, b: a & b, on), "left")
    columns = [_aggregate(j, agg).alias(f"__a{j}") for j, agg in enumerate(aggregations)]
    return joined.groupBy("__row").agg(*columns)


def _aggregate(index: int, agg: AggregationPlan) -> Column:
    value = sf.col(f"s__x{index}")
    inside = sf.col("s__ev") > sf.col("__t") - sf.lit(agg.window_us)
    kept = sf.when(inside, value)
    if agg.function == "count":
        return sf.count(kept)
    if agg.function == "min":
        return sf.min(kept)
    if agg.function == "max":
        return sf.max(kept)
    if agg.function == "last":
        order = [
            sf.col("s__ev").alias("e"),
            sf.col("s__cr").alias("c"),
            sf.col("s__seq").alias("q"),
        ]
        latest = sf.when(inside & value.isNotNull(), sf.struct(*order, value.alias("v")))
        return sf.max(latest)["v"]
    if agg.floating:
        total, error, count = _compensated_sum(inside, value)
        if agg.function == "sum":
            return sf.when(count > 0, total)
        return sf.when(count > 0, total / count + error / count)
    if agg.function == "sum":
        return sf.sum(kept)
    count = sf.count(kept)
    return sf.when(count > 0, sf.sum(kept).cast("double") / count.cast("double"))


def _compensated_sum(inside: Column, value: Column) -> tuple[Column, Column, Column]:
    """Kahan's sum of the doubles in the window, added in ingestion order: the algorithm of
    DuckDB's ``fsum``/``favg`` (the mean adds ``error / count``, as DuckDB does), so the two
    engines agree to the last bit where a plain sum would not (0.1 + 0.2 + 0.3)."""
    item = sf.struct(sf.col("s__seq").alias("q"), value.cast("double").alias("x"))
    items = sf.array_sort(sf.collect_list(sf.when(inside & value.isNotNull(), item)))

    def add(state: Column, item: Column) -> Column:
        step = item["x"] - state["e"]
        total = state["s"] + step
        return sf.struct(total.alias("s"), ((total - state["s"]) - step).alias("e"))

    start = sf.struct(sf.lit(0.0).alias("s"), sf.lit(0.0).alias("e"))
    state = sf.aggregate(items, start, add)
    return state["s"], state["e"], sf.size(items).cast("double")
