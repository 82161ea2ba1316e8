"""The SQL of the DuckDB engine: one point-in-time query and one aggregation query per view.

Point-in-time strategy ("timeline + ASOF"). ASOF JOIN alone is wrong here: it takes the row
with the latest event time <= T *before* any other filter, so a row created after T (rule 3)
or a tie on event time would hide the right candidate. Instead:

1. rank every source row by the winner order ``(keys, event_ts, created_ts, sequence)`` —
   one global ROW_NUMBER, so within a key a higher rank is a better candidate;
2. a row becomes visible at ``vis = greatest(event_ts, created_ts)`` (``event_ts`` without
   rule 3); ordered by ``(keys, vis)``, the running MAX of the rank is the best row visible so
   far (ranks of one key exceed those of all smaller keys, so no PARTITION is needed, which
   DuckDB evaluates about twice as fast);
3. ASOF-join each entity row to that timeline on equal keys and ``vis <= T``: the rank it gets
   is the winner among rows with ``event_ts <= T`` and ``created_ts <= T``;
4. the TTL needs no search: the winner has the greatest event time of all visible rows, so if
   it is older than ``T - ttl`` every candidate is, and the row has no value;
5. only then are feature columns read, for the winning rows, by their sequence number.

Every step is a sort, a window or a hash join that DuckDB spills to disk under memory_limit;
nothing is quadratic in the rows per key. Aggregations need every row in ``(T - w, T]``, so
they use a key-equality range join grouped per entity row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.features.offline.duckdb_sources import BoundSource, quote

ENTITIES = "__keel_entities"


@dataclass
class AggregationPlan:
    function: str
    value: str  # SQL over the source row
    window_us: int
    integer: bool
    floating: bool


@dataclass
class ViewPlan:
    """What the SQL of one view needs: keys as (entity column, source SQL) pairs, times as
    SQL giving epoch microseconds, feature values as SQL over the source."""

    source: BoundSource
    keys: list[tuple[str, str]]
    event_us: str
    created_us: str | None
    known_at: bool
    ttl_us: int | None
    values: list[str] = field(default_factory=list)
    aggregations: list[AggregationPlan] = field(default_factory=list)

    def params(self, lo: int, hi: int) -> dict[str, Any]:
        return {**self.source.params, "lo": lo, "hi": hi}


def _source_rows(plan: ViewPlan, extra: list[str]) -> str:
    """Source rows with keys, times and sequence; rows that can never be candidates dropped."""
    keys = [f"{sql} AS __k{i}" for i, (_, sql) in enumerate(plan.keys)]
    created = plan.created_us or "NULL::BIGINT"
    times = [f"{plan.event_us} AS __ev", f"{created} AS __cr", f"{plan.source.seq} AS __seq"]
    inner = ", ".join([*keys, *times, *extra])
    not_null = " AND ".join(f"__k{i} IS NOT NULL" for i in range(len(plan.keys)))
    return (
        f"SELECT * REPLACE (coalesce(__cr, __ev) AS __cr) FROM "
        f"(SELECT {inner} FROM {plan.source.relation}) "
        f"WHERE {not_null} AND __ev IS NOT NULL AND __ev >= $lo AND __ev <= $hi"
    )


def _key_list(prefix: str, count: int) -> str:
    return ", ".join(f"{prefix}__k{i}" for i in range(count))


def _key_match(plan: ViewPlan, other: str) -> str:
    return " AND ".join(
        f"e.{quote(column)} = {other}.__k{i}" for i, (column, _) in enumerate(plan.keys)
    )


def point_sql(plan: ViewPlan) -> str:
    """One row per entity row, in row order: ``__row``, ``__matched``, ``__v0``... (values of
    the plan's ``values``, NULL where there is no candidate)."""
    if plan.created_us is None:
        return _point_sql_by_order_key(plan)
    if not plan.known_at:
        return _point_sql_by_event_time(plan)
    keys = _key_list("", len(plan.keys))
    vis = "greatest(__ev, __cr)" if plan.known_at and plan.created_us else "__ev"
    ttl = "r.__ev >= p.__t - $ttl" if plan.ttl_us is not None else "TRUE"
    values = ", ".join(f"{sql} AS __v{j}" for j, sql in enumerate(plan.values))
    picked = ", ".join(f"f.__v{j}" for j in range(len(plan.values)))
    return f"""
WITH src AS ({_source_rows(plan, [])}),
ranked AS (
    SELECT {keys}, __ev, __seq, {vis} AS __vis,
           row_number() OVER (ORDER BY {keys}, __ev, __cr, __seq) AS __rank
    FROM src),
timeline AS (
    SELECT {keys}, __vis, max(__rank) OVER (ORDER BY {keys}, __vis) AS __best FROM ranked),
picked AS (
    SELECT e.__row, e.__t, t.__best FROM {ENTITIES} e
    ASOF LEFT JOIN timeline t ON {_key_match(plan, "t")} AND e.__t >= t.__vis),
winners AS (
    SELECT p.__row, CASE WHEN {ttl} THEN r.__seq END AS __seq
    FROM picked p LEFT JOIN ranked r ON r.__rank = p.__best),
feat AS (SELECT {plan.source.seq} AS __seq, {values} FROM {plan.source.relation})
SELECT w.__row, w.__seq IS NOT NULL AS __matched, {picked}
FROM winners w LEFT JOIN feat f ON f.__seq = w.__seq
ORDER BY w.__row"""


# (event time, sequence) packed into one 128-bit order key: event * 2**64 + sequence (a
# product, since DuckDB refuses to shift negative numbers). Sequences are non-negative and
# below 2**63, so the packed key orders exactly as the pair does, before 1970 too.
_ORDER_KEY = "__ev::HUGEINT * 18446744073709551616::HUGEINT + __seq"
_T_KEY = "__t::HUGEINT * 18446744073709551616::HUGEINT + 18446744073709551615::HUGEINT"


def _point_sql_by_order_key(plan: ViewPlan) -> str:
    """`point_sql` for a source without created times: the winner is the greatest (event,
    sequence) at or before (T, any), which one as-of join on the packed order key finds with
    the values carried along — no aggregation, no second read of the source."""
    ttl = "b.__ev >= e.__t - $ttl" if plan.ttl_us is not None else "TRUE"
    values = [f"{sql} AS __v{j}" for j, sql in enumerate(plan.values)]
    matched = f"(b.__ev IS NOT NULL AND {ttl})"
    picked = ", ".join(
        f"CASE WHEN {matched} THEN b.__v{j} END AS __v{j}" for j in range(len(plan.values))
    )
    return f"""
WITH src AS ({_source_rows(plan, values)}),
b AS (SELECT *, {_ORDER_KEY} AS __o FROM src),
e AS (SELECT *, {_T_KEY} AS __o FROM {ENTITIES})
SELECT e.__row, {matched} AS __matched, {picked}
FROM e ASOF LEFT JOIN b ON {_key_match(plan, "b")} AND e.__o >= b.__o
ORDER BY e.__row"""


def _point_sql_by_event_time(plan: ViewPlan) -> str:
    """`point_sql` when a row is visible from its event time on (no created-time rule): the
    best row of each (key, event time) is its greatest (created, sequence), and the as-of
    join on event time then finds the winner directly — one aggregation and one as-of join
    instead of two sorts of the whole source."""
    keys = _key_list("", len(plan.keys))
    ttl = "b.__ev >= e.__t - $ttl" if plan.ttl_us is not None else "TRUE"
    values = ", ".join(f"{sql} AS __v{j}" for j, sql in enumerate(plan.values))
    picked = ", ".join(f"f.__v{j}" for j in range(len(plan.values)))
    best = "max(__seq)" if plan.created_us is None else "max(struct_pack(c := __cr, s := __seq)).s"
    return f"""
WITH src AS ({_source_rows(plan, [])}),
best AS (SELECT {keys}, __ev, {best} AS __seq FROM src GROUP BY {keys}, __ev),
winners AS (
    SELECT e.__row, CASE WHEN b.__ev IS NOT NULL AND {ttl} THEN b.__seq END AS __seq
    FROM {ENTITIES} e ASOF LEFT JOIN best b ON {_key_match(plan, "b")} AND e.__t >= b.__ev),
feat AS (SELECT {plan.source.seq} AS __seq, {values} FROM {plan.source.relation})
SELECT w.__row, w.__seq IS NOT NULL AS __matched, {picked}
FROM winners w LEFT JOIN feat f ON f.__seq = w.__seq
ORDER BY w.__row"""


def _aggregate(index: int, agg: AggregationPlan) -> str:
    value = f"s.__x{index}"
    window = f"s.__ev > e.__t - $w{index}"
    if agg.function == "last":
        order = "struct_pack(e := s.__ev, c := s.__cr, q := s.__seq)"
        return f"arg_max({value}, {order}) FILTER (WHERE {window} AND {value} IS NOT NULL)"
    if agg.function == "sum":
        if agg.integer:
            return f"CAST(sum({value}) FILTER (WHERE {window}) AS BIGINT)"
        name = "fsum" if agg.floating else "sum"  # compensated: less order-dependent
    elif agg.function == "mean":
        name = "favg" if agg.floating else "avg"
    else:
        name = agg.function  # count, min, max
    return f"{name}({value}) FILTER (WHERE {window})"


def aggregation_sql(plan: ViewPlan) -> str:
    """One row per entity row, in row order: ``__row``, ``__a0``... (the aggregations)."""
    extra = [f"{agg.value} AS __x{j}" for j, agg in enumerate(plan.aggregations)]
    known = "AND s.__cr <= e.__t" if plan.known_at and plan.created_us else ""
    aggregates = ", ".join(
        f"{_aggregate(j, agg)} AS __a{j}" for j, agg in enumerate(plan.aggregations)
    )
    return f"""
WITH src AS ({_source_rows(plan, extra)})
SELECT e.__row, {aggregates}
FROM {ENTITIES} e LEFT JOIN src s
  ON {_key_match(plan, "s")} AND s.__ev <= e.__t AND s.__ev > e.__t - $wmax {known}
GROUP BY e.__row
ORDER BY e.__row"""


def aggregation_params(plan: ViewPlan) -> dict[str, int]:
    windows = {f"w{j}": agg.window_us for j, agg in enumerate(plan.aggregations)}
    return {**windows, "wmax": max(windows.values())}
