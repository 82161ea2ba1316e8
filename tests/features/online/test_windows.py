"""Online windowed aggregations equal the offline engine's (the online/offline parity proof).

Random events (few keys and times, so ties are common; NULL keys, event times, created times
and values; NaN and infinities) are appended to a real store and also given to the DuckDB
engine as a source. For random request times T, ``aggregate_online`` over ``read_events``
must give exactly the training-set value of an entity row (key, T).
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError
from keel.features.definitions import Aggregation
from keel.features.offline import AggregationInput, DuckDBEngine, JoinRequest, ViewInput
from keel.features.online import OnlineStore, RowBatch, open_online_store
from keel.features.online.base import EventRows
from keel.features.online.windows import aggregate_online, longest_window, window_bounds
from tests.conftest import service_unavailable

BASE = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp()) * 1_000_000
SECOND = 1_000_000
ENGINE = DuckDBEngine(threads=1)
REDIS_SERVER = os.environ.get("KEEL_TEST_REDIS", "redis://127.0.0.1:6379/0")
_views = itertools.count()

# Dyadic values, so every sum is exact in any order; NaN in about one value in seven.
FLOATS = [1.5, -2.0, 0.25, 3.0, 8.0]
SPECIAL = [math.nan, math.nan, math.inf, -math.inf]
COLUMNS: dict[str, Any] = {
    "x": st.one_of(
        st.none(), st.sampled_from(FLOATS), st.sampled_from(FLOATS), st.sampled_from(SPECIAL)
    ),
    "n": st.one_of(st.none(), st.integers(-3, 3)),
    "s": st.one_of(st.none(), st.sampled_from(["a", "b", "é", "ab"])),
}
DEFAULTS = {"x": -1.0, "n": -1, "s": "none"}
NUMERIC = {"sum", "mean"}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OnlineStore]:
    """One store per backend for the module; each example writes a view of its own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('windows') / 'online.db'}"
    else:
        url = f"{_redis_server()}?prefix=keeltest-{uuid.uuid4().hex[:12]}"
    store = open_online_store(url)
    yield store
    for view in store.views():
        store.delete_view(view)
    store.close()


def _redis_server() -> str:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # a missing package or any connection failure: not reachable
        service_unavailable("Redis", str(exc).splitlines()[0])
    return REDIS_SERVER


def _time(second: int, offset: int) -> int:
    return BASE + second * SECOND + offset


times = st.builds(_time, st.integers(0, 6), st.sampled_from([0, 0, 1, -1]))


@st.composite
def event_sources(draw: st.DrawFn) -> dict[str, list[Any]]:
    """Columns of up to 20 events; a NULL key or event time in about one row in seven."""
    n = draw(st.integers(1, 20))
    rare_null = st.integers(0, 6).map(lambda i: i == 0)
    keys = [None if draw(rare_null) else draw(st.integers(0, 1)) for _ in range(n)]
    events = [None if draw(rare_null) else draw(times) for _ in range(n)]
    delays = [draw(st.one_of(st.none(), st.integers(-1, 4))) for _ in range(n)]
    created = [
        None if e is None or d is None else e + d * SECOND
        for e, d in zip(events, delays, strict=True)
    ]
    columns = {"k": keys, "ev": events, "cr": created}
    for name, values in COLUMNS.items():
        columns[name] = [draw(values) for _ in range(n)]
    return columns


aggregation_specs = st.lists(
    st.tuples(
        st.sampled_from(["sum", "count", "mean", "min", "max", "last"]),
        st.sampled_from(list(COLUMNS)),
        st.integers(1, 8),
        st.booleans(),
    ).filter(lambda spec: spec[0] not in NUMERIC or spec[1] != "s"),
    min_size=1,
    max_size=4,
)


def _source_table(columns: dict[str, list[Any]], with_created: bool) -> pa.Table:
    stamp = pa.timestamp("us", tz="UTC")
    table = {
        "k": pa.array(columns["k"], pa.int64()),
        "ev": pa.array(columns["ev"], pa.int64()).cast(stamp),
        "x": pa.array(columns["x"], pa.float64()),
        "n": pa.array(columns["n"], pa.int64()),
        "s": pa.array(columns["s"], pa.string()),
    }
    if with_created:
        table["cr"] = pa.array(columns["cr"], pa.int64()).cast(stamp)
    return pa.table(table)


def _append(
    store: OnlineStore,
    view: str,
    columns: dict[str, list[Any]],
    with_created: bool,
    cuts: list[int],
    retain: timedelta,
) -> None:
    """Append the rows in source order, split into batches at ``cuts``."""
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(columns["k"])), len(columns["k"])]
    for start, end in itertools.pairwise(bounds):
        part = {name: values[start:end] for name, values in columns.items()}
        store.append_events(
            view,
            "v1",
            RowBatch(
                keys=[(k,) for k in part["k"]],
                features={name: part[name] for name in COLUMNS},
                event_ts=part["ev"],
                created_ts=part["cr"] if with_created else None,
            ),
            retain=retain,
        )


def _default(function: str, column: str) -> Any:
    """A default of the aggregation's output type (count: never used, an empty window is 0)."""
    return {"count": 5, "mean": -1.0}.get(function, DEFAULTS[column])


def _same(got: Any, want: Any) -> bool:
    if got is None or want is None:
        return got is want
    if type(got) is not type(want):
        return False
    if isinstance(got, float):
        return (math.isnan(got) and math.isnan(want)) or math.isclose(got, want, rel_tol=1e-12)
    return bool(got == want)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    columns=event_sources(),
    specs=aggregation_specs,
    with_created=st.booleans(),
    pruned=st.booleans(),
    cuts=st.lists(st.integers(1, 19), max_size=3),
    requests=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 12), st.sampled_from([0, 1, -1])),
        min_size=1,
        max_size=6,
    ),
)
def test_online_aggregations_equal_the_offline_engine(
    online_store: OnlineStore,
    columns: dict[str, list[Any]],
    specs: list[tuple[str, str, int, bool]],
    with_created: bool,
    pruned: bool,
    cuts: list[int],
    requests: list[tuple[int, int, int]],
) -> None:
    aggregations = tuple(
        AggregationInput(
            f"a{i}",
            column,
            function,
            timedelta(seconds=seconds),
            default=_default(function, column) if with_default else None,
        )
        for i, (function, column, seconds, with_default) in enumerate(specs)
    )
    # With pruning on, only requests at or after the newest event are guaranteed.
    newest = max((e for e in columns["ev"] if e is not None), default=BASE)
    first = newest if pruned else BASE
    entity_rows = [(key, first + second * SECOND + micro) for key, second, micro in requests]
    retain = longest_window(aggregations) if pruned else timedelta(days=365)
    _assert_parity(online_store, columns, aggregations, with_created, cuts, retain, entity_rows)


def test_nan_and_infinities_match_the_offline_engine(online_store: OnlineStore) -> None:
    """Every function over NaN, +inf and -inf, at every request time: DuckDB's float order
    (NaN above every number) and IEEE sums, checked deterministically."""
    x = [1.0, math.nan, 2.0, math.inf, -math.inf, 3.0, math.nan]
    columns: dict[str, list[Any]] = {
        "k": [0] * len(x),
        "ev": [_time(second, 0) for second in range(len(x))],
        "cr": [None] * len(x),
        "x": x,
        "n": [None] * len(x),
        "s": [None] * len(x),
    }
    aggregations = tuple(
        AggregationInput(f"{function}{seconds}", "x", function, timedelta(seconds=seconds))
        for function in ("sum", "count", "mean", "min", "max", "last")
        for seconds in (1, 2, 3, 7)
    )
    entity_rows = [(0, _time(second, 0)) for second in range(len(x) + 1)]
    retain = timedelta(days=1)
    _assert_parity(online_store, columns, aggregations, False, [3], retain, entity_rows)


def _assert_parity(
    store: OnlineStore,
    columns: dict[str, list[Any]],
    aggregations: tuple[AggregationInput, ...],
    with_created: bool,
    cuts: list[int],
    retain: timedelta,
    entity_rows: list[tuple[int, int]],
) -> None:
    """Append ``columns`` to a fresh view, then compare each entity row (key, T) online with
    the training set of the same rows; reads ask for every key, so multi-key reads count."""
    view = f"w{next(_views)}"
    _append(store, view, columns, with_created, cuts, retain)
    source = ViewInput(
        view,
        ("k",),
        _source_table(columns, with_created),
        "ev",
        created_timestamp="cr" if with_created else None,
        aggregations=aggregations,
    )
    entities = pa.table(
        {
            "k": pa.array([key for key, _ in entity_rows], pa.int64()),
            "t": pa.array([t for _, t in entity_rows], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
        }
    )
    offline = ENGINE.get_training_set(JoinRequest(entities, (source,), timestamp_column="t"))
    every_key = [(0,), (1,), (2,)]
    for row, (key, request_us) in enumerate(entity_rows):
        since_us, until_us = window_bounds(aggregations, request_us)
        events = store.read_events(view, every_key, list(COLUMNS), since_us, until_us)
        online = aggregate_online(events, aggregations, request_us)
        for agg in aggregations:
            want = offline.column(agg.name)[row].as_py()
            got = online[agg.name][key]
            assert _same(got, want), (agg, key, request_us, got, want)
    store.delete_view(view)


def _events(values: list[Any], created: list[int] | None = None) -> EventRows:
    times = list(range(1, len(values) + 1))
    return EventRows(("v",), [times], [created or times], [times], [[(value,) for value in values]])


def test_types_defaults_and_special_floats() -> None:
    def one(function: str, values: list[Any], default: Any = None) -> Any:
        agg = Aggregation("v", function, timedelta(microseconds=100), default=default)
        return aggregate_online(_events(values), [agg], 50)[agg.output_name][0]

    assert one("sum", [1, 2, None]) == 3
    assert type(one("sum", [1, 2])) is int
    assert one("sum", [0.1] * 10) == 1.0  # exactly rounded, not 0.9999999999999999
    assert math.isnan(one("sum", [math.inf, -math.inf]))
    assert one("sum", [math.inf, 1.0]) == math.inf
    assert one("sum", [1e308, 1e308]) == math.inf
    assert one("mean", [1, 2]) == 1.5
    assert type(one("mean", [2, 2])) is float
    assert math.isnan(one("max", [1.0, math.nan]))
    assert one("min", [math.nan, 2.0, 1.0]) == 1.0
    assert math.isnan(one("min", [math.nan]))
    assert one("count", [math.nan, None]) == 1
    assert one("count", [], default=5) == 0  # an empty window counts 0
    assert one("last", [3, None]) == 3
    assert one("max", [None], default="none") == "none"
    assert one("mean", [], default=2) == 2.0
    assert type(one("mean", [], default=2)) is float


def test_window_edges_and_created_after_request() -> None:
    agg = Aggregation("v", "sum", timedelta(microseconds=10))
    events = EventRows(("v",), [[10, 20, 30]], [[10, 20, 31]], [[1, 2, 3]], [[(1,), (2,), (4,)]])
    name = agg.output_name
    assert aggregate_online(events, [agg], 20)[name] == [2]  # (10, 20]: 10 is out, 20 in
    assert aggregate_online(events, [agg], 29)[name] == [2]
    assert aggregate_online(events, [agg], 30)[name] == [None]  # 30 was created at 31
    assert aggregate_online(events, [agg], 30, as_known_at=False)[name] == [4]
    assert aggregate_online(events, [agg], 31)[name] == [4]
    assert aggregate_online(events, [agg], 40)[name] == [None]  # (30, 40]: nothing left


def test_bad_requests_are_refused() -> None:
    events = _events([1])
    with pytest.raises(InvalidInputError, match="read_events"):
        aggregate_online(events, [Aggregation("other", "sum", "1h")], 5)
    with pytest.raises(InvalidInputError, match="numeric"):
        aggregate_online(_events(["a"]), [Aggregation("v", "sum", "1h")], 5)
    with pytest.raises(InvalidInputError, match="request_us"):
        aggregate_online(events, [Aggregation("v", "sum", "1h")], 5.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="no aggregations"):
        longest_window([])
    assert window_bounds([Aggregation("v", "sum", "1h"), Aggregation("v", "max", "2h")], 0) == (
        -7_200_000_000,
        0,
    )
