"""Property tests: the DuckDB engine equals the reference join on random small datasets.

The data are drawn so the hard cases are common: few keys and few distinct times (exact ties
of event and created time), 1 µs offsets around TTL and window boundaries, NULL keys, NULL
created times, created times after T, duplicate entity rows, Parquet sources split over
several files (ingestion order across files) and naive source times in a zone with DST.
"""

from __future__ import annotations

import math
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.features.offline import (
    AggregationInput,
    DuckDBEngine,
    FeatureInput,
    JoinRequest,
    ViewInput,
)
from tests.features.reference_pit import reference_training_set

BASE = int(datetime(2024, 11, 3, 4, 0, tzinfo=UTC).timestamp()) * 1_000_000  # NY DST ends
SECOND = 1_000_000
ENGINE = DuckDBEngine(threads=2)
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# few key values, so rows share keys: 0 half the time, 1 a quarter, NULL a quarter
keys = st.integers(0, 3).map(lambda k: None if k == 3 else k % 2)


# whole seconds plus -1/0/+1 µs: lands exactly on, and just beside, T - ttl and T - window
def _times(last_second: int) -> st.SearchStrategy[int]:
    return st.builds(
        lambda s, d: BASE + s * SECOND + d,
        st.integers(0, last_second),
        st.sampled_from([0, 0, 1, -1]),
    )


times = _times(6)  # few distinct times: exact ties are common
entity_times = _times(9)
ttls = st.one_of(st.none(), st.integers(1, 6).map(lambda s: timedelta(seconds=s)))


def _ts(values: list[int | None], zone: str | None = "UTC") -> pa.Array:
    return pa.array(values, pa.timestamp("us", tz=zone))


@st.composite
def sources(draw: st.DrawFn, key_count: int, created: bool, naive: bool) -> dict[str, Any]:
    n = draw(st.integers(2, 24))
    columns: dict[str, Any] = {f"k{i}": [draw(keys) for _ in range(n)] for i in range(key_count)}
    events = [draw(st.one_of(times, st.none()) if i % 7 == 6 else times) for i in range(n)]
    columns["ev"] = events
    if created:
        delays = [draw(st.one_of(st.none(), st.integers(-1, 4))) for _ in range(n)]
        columns["cr"] = [
            None if e is None or d is None else e + d * SECOND
            for e, d in zip(events, delays, strict=True)
        ]
    columns["x"] = [None if i % 5 == 4 else float(i) for i in range(n)]
    columns["n"] = [draw(st.integers(-3, 3)) for _ in range(n)]
    zone = None if naive else "UTC"
    table = {k: pa.array(v, pa.int64()) for k, v in columns.items() if k.startswith("k")}
    table["ev"] = _ts(events, zone)
    if created:
        table["cr"] = _ts(columns["cr"], zone)
    table["x"] = pa.array(columns["x"], pa.float64())
    table["n"] = pa.array(columns["n"], pa.int64())
    return {"table": pa.table(table), "files": draw(st.integers(0, 3))}


def _as_source(drawn: dict[str, Any], folder: Path) -> pa.Table | str:
    """In memory (files == 0) or split into that many Parquet files, in name order."""
    table, files = drawn["table"], drawn["files"]
    if files == 0:
        return table
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [round(i * table.num_rows / files) for i in range(files + 1)]
    for i in range(files):
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), folder / f"p{i}.parquet")
    return str(folder)


@st.composite
def entity_frames(draw: st.DrawFn, key_count: int) -> pa.Table:
    n = draw(st.integers(1, 8))
    table = {
        f"k{i}": pa.array([draw(keys) for _ in range(n)], pa.int64()) for i in range(key_count)
    }
    table["t"] = _ts(
        [draw(st.one_of(entity_times, st.none()) if i == 7 else entity_times) for i in range(n)]
    )
    table["label"] = pa.array(range(n), pa.int64())
    return pa.table(table)


def _same(got: list[Any], want: list[Any]) -> bool:
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=True):
        if isinstance(a, float) and isinstance(b, float | int):
            if not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12):
                return False
        elif a != b:
            return False
    return True


def _check(request: JoinRequest) -> None:
    got = ENGINE.get_training_set(request)
    want = reference_training_set(request)
    entities = request.entities
    assert isinstance(entities, pa.Table)
    assert got.slice(0, entities.num_rows).select(entities.column_names).equals(entities)
    assert got.num_rows == entities.num_rows
    for name, values in want.items():
        assert _same(got.column(name).to_pylist(), values), (name, got.column(name), values)


@SETTINGS
@given(
    key_count=st.integers(1, 2),
    created=st.booleans(),
    data=st.data(),
    ttl=ttls,
    known_at=st.booleans(),
    default=st.sampled_from([None, -1.0]),
)
def test_point_in_time_join_equals_the_reference(
    key_count: int,
    created: bool,
    data: st.DataObject,
    ttl: timedelta | None,
    known_at: bool,
    default: float | None,
) -> None:
    check_point_join(data, key_count, created, ttl, known_at, default)


def check_point_join(
    data: st.DataObject,
    key_count: int,
    created: bool,
    ttl: timedelta | None,
    known_at: bool,
    default: float | None,
) -> None:
    """One drawn source and entity frame through the engine, against the reference."""
    drawn = data.draw(sources(key_count, created, naive=False))
    entities = data.draw(entity_frames(key_count))
    with tempfile.TemporaryDirectory() as tmp:
        view = ViewInput(
            "v",
            tuple(f"k{i}" for i in range(key_count)),
            _as_source(drawn, Path(tmp, "src")),
            "ev",
            created_timestamp="cr" if created else None,
            ttl=ttl,
            features=(FeatureInput("x", "float64", default=default), FeatureInput("n", "int64")),
        )
        _check(JoinRequest(entities, (view,), timestamp_column="t", as_known_at=known_at))


@SETTINGS
@given(
    created=st.booleans(),
    data=st.data(),
    known_at=st.booleans(),
    specs=st.lists(
        st.tuples(
            st.sampled_from(["sum", "count", "mean", "min", "max", "last"]),
            st.sampled_from(["x", "n"]),
            st.integers(1, 12),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_windowed_aggregations_equal_the_reference(
    created: bool, data: st.DataObject, known_at: bool, specs: list[tuple[str, str, int]]
) -> None:
    drawn = data.draw(sources(1, created, naive=False))
    entities = data.draw(entity_frames(1))
    aggregations = tuple(
        AggregationInput(f"a{i}", column, function, timedelta(seconds=w))
        for i, (function, column, w) in enumerate(specs)
    )
    with tempfile.TemporaryDirectory() as tmp:
        view = ViewInput(
            "v",
            ("k0",),
            _as_source(drawn, Path(tmp, "src")),
            "ev",
            created_timestamp="cr" if created else None,
            aggregations=aggregations,
        )
        _check(JoinRequest(entities, (view,), timestamp_column="t", as_known_at=known_at))


# Hour offset from UTC in force at BASE + 1h (fold=0 for New York's repeated 01:00-02:00).
ZONES = {"America/New_York": -4.0, "Asia/Kolkata": 5.5}


def _shift(table: pa.Table, columns: list[str], hours: float) -> pa.Table:
    delta = pa.scalar(round(hours * 3600 * SECOND), pa.duration("us"))
    for column in columns:
        index = table.column_names.index(column)
        table = table.set_column(index, column, pc.add(table.column(column), delta))
    return table


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), ttl=ttls, zone=st.sampled_from(sorted(ZONES)))
def test_naive_source_times_read_in_the_declared_zone(
    data: st.DataObject, ttl: timedelta | None, zone: str
) -> None:
    # Wall times that read as BASE + 1h in the zone; in New York they fall in the repeated
    # hour, where the other reading (an hour later) would change every result.
    table = _shift(data.draw(sources(1, True, naive=True))["table"], ["ev", "cr"], 1 + ZONES[zone])
    entities = _shift(data.draw(entity_frames(1)), ["t"], 1)
    view = ViewInput(
        "v",
        ("k0",),
        table,
        "ev",
        created_timestamp="cr",
        ttl=ttl,
        source_time_zone=zone,
        features=(FeatureInput("x", "float64"),),
    )
    _check(JoinRequest(entities, (view,), timestamp_column="t"))


@SETTINGS
@given(data=st.data(), full=st.booleans())
def test_two_views_on_different_entity_columns(data: st.DataObject, full: bool) -> None:
    first = data.draw(sources(1, True, naive=False))["table"]
    second = data.draw(sources(1, False, naive=False))["table"].rename_columns(
        ["m", "ev", "x", "n"]
    )
    entities = data.draw(entity_frames(1))
    entities = entities.append_column(
        "merchant",
        entities.column("k0").take(pa.array(list(reversed(range(entities.num_rows))), pa.int64())),
    )
    views = (
        ViewInput(
            "users",
            ("k0",),
            first,
            "ev",
            created_timestamp="cr",
            features=(FeatureInput("x", "float64"),),
            ttl=timedelta(seconds=3),
        ),
        ViewInput(
            "merchants", ("m",), second, "ev", features=(FeatureInput("x2", "float64", column="x"),)
        ),
    )
    request = JoinRequest(
        entities,
        views,
        timestamp_column="t",
        entity_keys={"m": "merchant"},
        full_feature_names=full,
    )
    _check(request)
