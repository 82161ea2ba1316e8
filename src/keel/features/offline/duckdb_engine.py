"""The DuckDB offline engine: point-in-time-correct training sets over Parquet, out of core.

Sources are read by DuckDB straight from Parquet (local or any fsspec URL), so a feature table
larger than memory is streamed and spilled under ``memory_limit``; only the entity frame and
the result (one row per entity row) are in Python memory. The query strategy is described in
`keel.features.offline.duckdb_sql`.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import InvalidInputError, StoreError
from keel.features.offline import duckdb_sql, latest_merge, planning
from keel.features.offline.duckdb_sources import LOCAL_TO_US_MACROS, quote
from keel.features.offline.frames import (
    as_table,
    plain_values,
    require_column,
    spread_rows,
    times_us,
)
from keel.features.offline.planning import ViewOutputs
from keel.features.offline.spec import JoinRequest

_FAR = 1 << 62  # "no bound" in epoch microseconds, far from int64 overflow
_BATCH_ROWS = 1 << 20


class DuckDBEngine:
    """Builds training sets with DuckDB. ``memory_limit`` (e.g. ``"2GB"``) caps DuckDB's memory,
    beyond which it spills to ``temp_directory`` (default: a fresh temporary folder per call);
    ``threads`` defaults to the number of cores.

    >>> engine = DuckDBEngine(memory_limit="1GB")
    >>> table = engine.get_training_set(JoinRequest(entity_df, (user_view,)))  # doctest: +SKIP
    """

    def __init__(
        self,
        memory_limit: str | None = None,
        threads: int | None = None,
        temp_directory: str | Path | None = None,
    ) -> None:
        self.memory_limit = memory_limit
        self.threads = threads
        self.temp_directory = temp_directory

    def get_training_set(self, request: JoinRequest) -> pa.Table:
        """The entity frame's columns unchanged, then each view's features and aggregations:
        exactly one row per entity row, in input order (see `keel.features.offline.spec`)."""
        entities = as_table(request.entities, "the entity frame")
        times = times_us(
            require_column(entities, request.timestamp_column, "the entity frame", "timestamp"),
            request.timestamp_column,
        )
        planning.check_output_names(request, entities.column_names)
        with self.connect() as con:
            key_columns = register_entities(con, request, entities, times)
            plans = [
                planning.plan_view(con, request, view, index, key_columns)
                for index, view in enumerate(request.views)
            ]
            bounds = time_bounds(times)
            columns: list[tuple[str, pa.ChunkedArray]] = []
            for outputs in plans:
                columns.extend(_run_view(con, outputs, bounds, entities.num_rows))
        for name, values in columns:
            entities = entities.append_column(name, values)
        return entities

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A configured connection (UTC, memory limit, spill folder, time macros), closed on
        exit; also used to scan sources for materialization."""
        with ExitStack() as stack:
            temp = self.temp_directory or stack.enter_context(
                tempfile.TemporaryDirectory(prefix="keel-duckdb-")
            )
            config: dict[str, str | bool | int | float | list[str]] = {
                "temp_directory": str(temp),
                "preserve_insertion_order": False,  # every query orders its result itself
                "autoinstall_known_extensions": False,
            }
            if self.memory_limit is not None:
                config["memory_limit"] = self.memory_limit
            if self.threads is not None:
                config["threads"] = self.threads
            try:
                con = duckdb.connect(":memory:", config=config)
            except duckdb.Error as exc:
                raise InvalidInputError(
                    f"DuckDB refused the engine settings {config}: {exc}; "
                    "use e.g. memory_limit='2GB', threads=2"
                ) from exc
            stack.callback(con.close)
            con.execute("SET TimeZone = 'UTC'")  # ICU time arithmetic and Arrow output in UTC
            # DuckDB draws a progress bar on stdout for queries past two seconds: a library must
            # not write into its caller's output (`--json`, pipes); the CLI shows its own.
            con.execute("SET enable_progress_bar = false")
            for macro in LOCAL_TO_US_MACROS:
                con.execute(macro)
            yield con


def register_entities(
    con: duckdb.DuckDBPyConnection,
    request: JoinRequest,
    entities: pa.Table,
    times: pa.ChunkedArray,
) -> dict[str, str]:
    """Register row numbers, times and key columns; returns entity column -> SQL column."""
    frame = {"__row": pa.array(np.arange(entities.num_rows, dtype=np.int64)), "__t": times}
    key_columns: dict[str, str] = {}
    for view in request.views:
        for key in view.join_keys:
            column = request.entity_column(key)
            if column not in key_columns:
                values = require_column(entities, column, "the entity frame", f"key {key!r}")
                key_columns[column] = f"__e{len(key_columns)}"
                frame[key_columns[column]] = plain_values(values)
    con.register(duckdb_sql.ENTITIES, pa.table(frame))
    return key_columns


def time_bounds(times: pa.ChunkedArray) -> tuple[int, int]:
    """The span of entity times; an empty span when there are none (nothing can match)."""
    bounds = pc.min_max(times).as_py()
    if bounds["min"] is None:
        return 0, -1
    return int(bounds["min"]), int(bounds["max"])


def _run_view(
    con: duckdb.DuckDBPyConnection,
    outputs: ViewOutputs,
    bounds: tuple[int, int],
    rows: int,
) -> list[tuple[str, pa.ChunkedArray]]:
    plan = outputs.plan
    point = agg = None
    if plan.values:
        lo = bounds[0] - plan.ttl_us if plan.ttl_us is not None else -_FAR
        params = plan.params(lo, bounds[1])
        if plan.ttl_us is not None:
            params["ttl"] = plan.ttl_us
        if duckdb_sql.by_order_key(plan):
            point = _point_by_hits(con, plan, params, outputs.owner, rows)
        else:
            point = _query(con, duckdb_sql.point_sql(plan), params, outputs.owner, rows)
    if plan.aggregations:
        windows = duckdb_sql.aggregation_params(plan)
        params = {**plan.params(bounds[0] - windows["wmax"], bounds[1]), **windows}
        agg = _query(con, duckdb_sql.aggregation_sql(plan), params, outputs.owner, rows)
    return outputs.finish(point, agg)


def _point_by_hits(
    con: duckdb.DuckDBPyConnection,
    plan: duckdb_sql.ViewPlan,
    params: dict[str, object],
    owner: str,
    rows: int,
) -> pa.Table:
    """`point_sql`'s table for a view without created times: each entity row's winner by a
    merge over one sorted stream (`latest_merge`), then the winners' values by sequence number,
    put in entity-row order here (cheaper than a SQL ORDER BY)."""
    with _duckdb_errors(owner):
        spans = _narrow_key_spans(con, plan)
        merge_sql = duckdb_sql.merge_sql(plan, spans)
        merge_params = {**params, **_span_params(spans)}
        stream = con.sql(merge_sql, params=_used(merge_params, merge_sql)).to_arrow_reader(
            _BATCH_ROWS
        )
        winner = latest_merge.latest_rows(stream, len(plan.keys), rows, plan.ttl_us)
        found = winner >= 0
        hits = pa.table({"__row": np.flatnonzero(found), "__seq": winner[found]})
        con.register(duckdb_sql.HITS, hits)
        values_sql = duckdb_sql.hit_values_sql(plan)
        values = con.sql(values_sql, params=_used(params, values_sql)).to_arrow_table()
        con.unregister(duckdb_sql.HITS)
    return spread_rows(values, rows, owner)


def _narrow_key_spans(
    con: duckdb.DuckDBPyConnection, plan: duckdb_sql.ViewPlan
) -> dict[int, tuple[int, int]]:
    """Per integer key whose entity values span less than 2**32: (min, max) of those values."""
    spans = {}
    for i, ((column, _), integer) in enumerate(zip(plan.keys, plan.integer_keys, strict=True)):
        if not integer:
            continue
        quoted = quote(column)
        bounds = f"SELECT min({quoted}), max({quoted}) FROM {duckdb_sql.ENTITIES}"
        low, high = con.sql(bounds).fetchall()[0]
        if low is not None and int(high) - int(low) < 1 << 32:
            spans[i] = (int(low), int(high))
    return spans


def _span_params(spans: dict[int, tuple[int, int]]) -> dict[str, int]:
    return {
        name: value
        for i, (low, high) in spans.items()
        for name, value in ((f"kmin{i}", low), (f"kmax{i}", high))
    }


def _query(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object], owner: str, rows: int
) -> pa.Table:
    with _duckdb_errors(owner):
        result = con.sql(sql, params=params).to_arrow_table()
    if result.num_rows != rows:  # the join's invariant; a failure here is a bug in Keel
        raise StoreError(f"{owner}: the join returned {result.num_rows} rows for {rows}")
    return result


def _used(params: dict[str, object], sql: str) -> dict[str, object]:
    """The parameters ``sql`` names (DuckDB refuses values it has no marker for)."""
    return {
        name: value for name, value in params.items() if re.search(rf"\${re.escape(name)}\b", sql)
    }


@contextmanager
def _duckdb_errors(owner: str) -> Iterator[None]:
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        raise StoreError(
            f"DuckDB ran out of memory joining {owner}: {exc}; raise memory_limit or give a "
            "temp_directory with more free disk"
        ) from exc
    except duckdb.Error as exc:
        raise StoreError(f"DuckDB failed joining {owner}: {exc}") from exc
