"""The SQL of the DuckDB engine: the point-in-time queries and one aggregation query per view.

Without created times, the winner is the greatest (event, sequence) at or before T: one sort
of source and entity rows together feeds a merge in `keel.features.offline.latest_merge`
(`merge_sql`), and the winners' values are then read by sequence number (`hit_values_sql`).

With created times ("timeline + ASOF", `point_sql`), ASOF JOIN alone is wrong: it takes the row
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

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from keel.features.offline.duckdb_sources import BoundSource, quote
from keel.features.offline.latest_merge import ENTITY_REF

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
    integer_keys: list[bool] = field(default_factory=list)  # per key: integers on both sides

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
    the plan's ``values``, NULL where there is no candidate), for a view with created times
    (without them, `merge_sql` and `hit_values_sql` apply)."""
    if not plan.known_at:
        return _point_sql_by_event_time(plan)
    keys = _key_list("", len(plan.keys))
    vis = "greatest(__ev, __cr)"  # rule 3: visible once both created and happened
    ttl = "r.__ev >= p.__t - $ttl" if plan.ttl_us is not None else "TRUE"
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
feat AS ({_feature_rows(plan)})
SELECT w.__row, w.__seq IS NOT NULL AS __matched, {_picked(plan)}
FROM winners w LEFT JOIN feat f ON f.__seq = w.__seq
ORDER BY w.__row"""


HITS = "__keel_hits"


def by_order_key(plan: ViewPlan) -> bool:
    """Whether the view's winner is simply the greatest (event, sequence) at or before T (no
    created times): `merge_sql` and `hit_values_sql` find it."""
    return plan.created_us is None


def merge_sql(plan: ViewPlan, narrowed: Collection[int] = ()) -> str:
    """The view's source rows and the entity rows in one stream sorted by ``(__k0..., __time,
    __ref)``, for `keel.features.offline.latest_merge` (which describes the order). Entity rows
    with a NULL key or time are left out: they match nothing.

    Each key in ``narrowed`` (integer keys whose entity values span less than 2**32, between
    parameters ``$kmin{i}`` and ``$kmax{i}``) is sorted as a 32-bit offset from ``$kmin{i}``,
    and source rows outside the span — which match nothing — are dropped first: a narrower
    sort key sorts about a fifth faster."""
    source_keys, entity_keys, within = [], [], ["TRUE"]
    for i, (column, _) in enumerate(plan.keys):
        if i in narrowed:
            source_keys.append(f"(__k{i} - $kmin{i})::UINTEGER")
            entity_keys.append(f"({quote(column)} - $kmin{i})::UINTEGER")
            within.append(f"__k{i} BETWEEN $kmin{i} AND $kmax{i}")
        else:
            source_keys.append(f"__k{i}")
            entity_keys.append(quote(column))
    not_null = " AND ".join(f"{quote(c)} IS NOT NULL" for c in [*(c for c, _ in plan.keys), "__t"])
    order = ", ".join(str(i) for i in range(1, len(plan.keys) + 3))
    return f"""
WITH src AS ({_source_rows(plan, [])})
SELECT {", ".join(source_keys)}, __ev AS __time, __seq AS __ref FROM src
WHERE {" AND ".join(within)}
UNION ALL
SELECT {", ".join(entity_keys)}, __t, {ENTITY_REF} + __row FROM {ENTITIES} WHERE {not_null}
ORDER BY {order}"""


def hit_values_sql(plan: ViewPlan) -> str:
    """(``__row``, ``__v0``...) of each row of ``HITS`` (``__row``, ``__seq``): the winners'
    feature values, read by sequence number in one hash join (built on the hits, probed by the
    source), in any order. Carrying the values through the sort instead costs three times as
    much."""
    return f"""
WITH feat AS ({_feature_rows(plan)})
SELECT h.__row, {_picked(plan)} FROM feat f JOIN {HITS} h ON f.__seq = h.__seq"""


def _feature_rows(plan: ViewPlan) -> str:
    """Every source row's sequence and feature values (``__seq``, ``__v0``...)."""
    values = ", ".join(f"{sql} AS __v{j}" for j, sql in enumerate(plan.values))
    return f"SELECT {plan.source.seq} AS __seq, {values} FROM {plan.source.relation}"


def _picked(plan: ViewPlan) -> str:
    return ", ".join(f"f.__v{j}" for j in range(len(plan.values)))


def _point_sql_by_event_time(plan: ViewPlan) -> str:
    """`point_sql` when a row is visible from its event time on (no created-time rule): the
    best row of each (key, event time) is its greatest (created, sequence), and the as-of
    join on event time then finds the winner directly — one aggregation and one as-of join
    instead of two sorts of the whole source."""
    keys = _key_list("", len(plan.keys))
    ttl = "b.__ev >= e.__t - $ttl" if plan.ttl_us is not None else "TRUE"
    best = "max(struct_pack(c := __cr, s := __seq)).s"
    return f"""
WITH src AS ({_source_rows(plan, [])}),
best AS (SELECT {keys}, __ev, {best} AS __seq FROM src GROUP BY {keys}, __ev),
winners AS (
    SELECT e.__row, CASE WHEN b.__ev IS NOT NULL AND {ttl} THEN b.__seq END AS __seq
    FROM {ENTITIES} e ASOF LEFT JOIN best b ON {_key_match(plan, "b")} AND e.__t >= b.__ev),
feat AS ({_feature_rows(plan)})
SELECT w.__row, w.__seq IS NOT NULL AS __matched, {_picked(plan)}
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
