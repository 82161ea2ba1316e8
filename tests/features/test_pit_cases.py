"""Named cases of the point-in-time join: each of Feast's known failures, each boundary.

Every case runs on every engine; on Spark the table must also equal DuckDB's (rule 6)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.features.offline import (
    AggregationInput,
    DuckDBEngine,
    FeatureInput,
    JoinRequest,
    OfflineEngine,
    ViewInput,
)

# the Spark fixtures, shared with that module (one session for all Spark tests)
from tests.features.test_spark_engine import spark_engine, spark_session  # noqa: F401

T0 = datetime(2024, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
DUCKDB = DuckDBEngine(threads=2)
Join = Callable[..., pa.Table]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def build_request(source: Any, entities: pd.DataFrame | pa.Table, **options: Any) -> JoinRequest:
    view_options = {
        k: options.pop(k)
        for k in ("created_timestamp", "ttl", "features", "aggregations", "join_keys")
        if k in options
    }
    view = ViewInput(
        "v",
        view_options.pop("join_keys", ("user_id",)),
        source,
        "event_ts",
        features=view_options.pop("features", (FeatureInput("x", "float64"),)),
        **view_options,
    )
    return JoinRequest(entities, (view,), timestamp_column="ts", **options)


@pytest.fixture(
    params=[
        "duckdb",
        # One xdist worker runs every Spark test: one JVM and one session start, not two.
        pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.xdist_group("spark")]),
    ]
)
def engine(request: pytest.FixtureRequest) -> OfflineEngine:
    """DuckDB, or Spark (its session is started only when a Spark case runs)."""
    if request.param == "duckdb":
        return DUCKDB
    spark: OfflineEngine = request.getfixturevalue("spark_engine")
    return spark


@pytest.fixture
def join(engine: OfflineEngine) -> Join:
    def run(source: Any, entities: pd.DataFrame | pa.Table, **options: Any) -> pa.Table:
        built = build_request(source, entities, **options)
        out = engine.get_training_set(built)
        if engine is not DUCKDB:
            duckdb_out = DUCKDB.get_training_set(built)
            assert out.equals(duckdb_out), (out.to_pylist(), duckdb_out.to_pylist())
        return out

    return run


def entities(user_ids: list[Any], times: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": user_ids, "ts": [at(s) for s in times]})


def test_exact_tie_goes_to_the_row_ingested_last(join: Join) -> None:
    source = pd.DataFrame(
        {
            "user_id": [1, 1, 1],
            "event_ts": [at(5)] * 3,
            "created_ts": [at(6)] * 3,
            "x": [1.0, 2.0, 3.0],
        }
    )
    out = join(source, entities([1], [10]), created_timestamp="created_ts")
    assert out.column("x").to_pylist() == [3.0]


def test_exact_tie_across_parquet_files_goes_to_the_later_file(tmp_path: Path, join: Join) -> None:
    for name, value in [("a.parquet", 1.0), ("b.parquet", 2.0), ("c.parquet", 3.0)]:
        frame = pd.DataFrame({"user_id": [1, 1], "event_ts": [at(5)] * 2, "x": [value, value + 10]})
        pq.write_table(pa.Table.from_pandas(frame), tmp_path / name)
    (tmp_path / "c.parquet").rename(tmp_path / "0-first.parquet")  # 0-first < a < b
    out = join(str(tmp_path), entities([1], [10]))
    assert out.column("x").to_pylist() == [12.0]  # last row of b.parquet


def test_greater_created_time_wins_a_tie_on_event_time(join: Join) -> None:
    source = pd.DataFrame(
        {"user_id": [1, 1], "event_ts": [at(5)] * 2, "created_ts": [at(7), at(6)], "x": [1.0, 2.0]}
    )
    out = join(source, entities([1], [10]), created_timestamp="created_ts")
    assert out.column("x").to_pylist() == [1.0]


def test_duplicate_entity_rows_stay_duplicates_in_input_order(join: Join) -> None:
    source = pd.DataFrame({"user_id": [1, 2], "event_ts": [at(1), at(1)], "x": [1.0, 2.0]})
    frame = entities([2, 1, 2, 2, 1], [9, 3, 1, 9, 3])
    frame["label"] = [10, 11, 12, 13, 14]
    out = join(source, frame)
    assert out.column("label").to_pylist() == [10, 11, 12, 13, 14]
    assert out.column("x").to_pylist() == [2.0, 1.0, 2.0, 2.0, 1.0]


@pytest.mark.parametrize(
    ("left", "right"),
    [((1, 23), (12, 3)), (("1", "23"), ("12", "3")), (("a|b", "c"), ("a", "b|c"))],
)
def test_multi_column_keys_never_collide_when_concatenated(
    left: tuple[Any, Any], right: tuple[Any, Any], join: Join
) -> None:
    source = pd.DataFrame({"a": [left[0]], "b": [left[1]], "event_ts": [at(1)], "x": [1.0]})
    frame = pd.DataFrame({"a": [left[0], right[0]], "b": [left[1], right[1]], "ts": [at(5)] * 2})
    out = join(source, frame, join_keys=("a", "b"))
    assert out.column("x").to_pylist() == [1.0, None]


def test_ttl_includes_exactly_t_minus_ttl_and_excludes_one_microsecond_before(join: Join) -> None:
    ttl = timedelta(seconds=10)
    source = pd.DataFrame({"user_id": [1, 2], "event_ts": [at(0), at(0) - US], "x": [1.0, 2.0]})
    out = join(source, entities([1, 2], [10, 10]), ttl=ttl)
    assert out.column("x").to_pylist() == [1.0, None]


def test_an_event_at_exactly_t_counts_and_one_microsecond_later_does_not(join: Join) -> None:
    source = pd.DataFrame({"user_id": [1, 2], "event_ts": [at(10), at(10) + US], "x": [1.0, 2.0]})
    out = join(source, entities([1, 2], [10, 10]))
    assert out.column("x").to_pylist() == [1.0, None]


def test_rows_without_a_value_are_kept_with_the_default(join: Join) -> None:
    n = 1000
    source = pd.DataFrame({"user_id": range(0, n, 2), "event_ts": [at(1)] * (n // 2)})
    source["x"] = 5.0
    out = join(
        source,
        entities(list(range(n)), [5] * n),
        features=(FeatureInput("x", "float64", default=-1.0),),
    )
    assert out.num_rows == n
    assert out.column("x").to_pylist() == [5.0 if i % 2 == 0 else -1.0 for i in range(n)]


def test_a_candidate_with_a_null_value_gives_null_not_the_default(join: Join) -> None:
    source = pd.DataFrame({"user_id": [1, 1], "event_ts": [at(1), at(2)], "x": [1.0, None]})
    out = join(source, entities([1], [5]), features=(FeatureInput("x", "float64", default=-1.0),))
    assert out.column("x").to_pylist() == [None]


def test_null_keys_match_nothing_and_the_row_is_kept(join: Join) -> None:
    source = pa.table(
        {
            "user_id": pa.array([None, 1], pa.int64()),
            "event_ts": pa.array([at(1), at(1)], pa.timestamp("us", tz="UTC")),
            "x": [1.0, 2.0],
        }
    )
    frame = pa.table(
        {
            "user_id": pa.array([None, 1], pa.int64()),
            "ts": pa.array([at(5), at(5)], pa.timestamp("us", tz="UTC")),
        }
    )
    out = join(source, frame, features=(FeatureInput("x", "float64", default=0.0),))
    assert out.column("x").to_pylist() == [0.0, 2.0]


def test_values_created_after_t_are_unseen_unless_as_known_at_is_off(join: Join) -> None:
    source = pd.DataFrame(
        {
            "user_id": [1, 1],
            "event_ts": [at(1), at(2)],
            "created_ts": [at(1), at(9)],  # the second value was backfilled at 9
            "x": [1.0, 2.0],
        }
    )
    known = join(source, entities([1, 1], [5, 9]), created_timestamp="created_ts")
    assert known.column("x").to_pylist() == [1.0, 2.0]
    leaky = join(
        source, entities([1, 1], [5, 9]), created_timestamp="created_ts", as_known_at=False
    )
    assert leaky.column("x").to_pylist() == [2.0, 2.0]


def test_a_late_row_hidden_by_rule_3_does_not_hide_older_candidates_from_the_ttl(
    join: Join,
) -> None:
    # ASOF on event time alone would pick the backfilled row and then have to drop it
    source = pd.DataFrame(
        {
            "user_id": [1, 1],
            "event_ts": [at(4), at(6)],
            "created_ts": [at(4), at(20)],
            "x": [1.0, 2.0],
        }
    )
    out = join(source, entities([1], [8]), created_timestamp="created_ts", ttl=timedelta(seconds=5))
    assert out.column("x").to_pylist() == [1.0]


def test_window_is_open_at_t_minus_w_and_closed_at_t(join: Join) -> None:
    w = timedelta(seconds=10)
    source = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1],
            "event_ts": [at(0), at(0) + US, at(10), at(10) + US],
            "x": [1.0, 2.0, 4.0, 8.0],
        }
    )
    functions = ("sum", "count", "min", "max", "last")
    aggregations = (
        *(AggregationInput(f"{fn}_x", "x", fn, w) for fn in functions),
        AggregationInput("sum_wide", "x", "sum", timedelta(seconds=20)),
    )
    out = join(source, entities([1, 2], [10, 10]), features=(), aggregations=aggregations)
    assert out.select([a.name for a in aggregations]).to_pylist() == [
        {"sum_x": 6.0, "count_x": 2, "min_x": 2.0, "max_x": 4.0, "last_x": 4.0, "sum_wide": 7.0},
        {
            "sum_x": None,
            "count_x": 0,
            "min_x": None,
            "max_x": None,
            "last_x": None,
            "sum_wide": None,
        },
    ]


def test_last_breaks_ties_by_ingestion_order_and_skips_nulls(join: Join) -> None:
    source = pd.DataFrame({"user_id": [1, 1, 1], "event_ts": [at(5)] * 3, "x": [1.0, 2.0, None]})
    last = AggregationInput("last_x", "x", "last", timedelta(hours=1), default=-1.0)
    out = join(source, entities([1, 2], [6, 6]), features=(), aggregations=(last,))
    assert out.column("last_x").to_pylist() == [2.0, -1.0]


def test_aggregation_types_defaults_and_integer_sums(join: Join) -> None:
    source = pd.DataFrame({"user_id": [1, 1], "event_ts": [at(1), at(2)], "n": [2, 3]})
    aggregations = (
        AggregationInput("total", "n", "sum", timedelta(hours=1), default=0),
        AggregationInput("avg", "n", "mean", timedelta(hours=1)),
        AggregationInput("small", "n", "min", timedelta(hours=1), dtype="int16"),
    )
    out = join(source, entities([1, 2], [5, 5]), features=(), aggregations=aggregations)
    assert out.schema.field("total").type == pa.int64()
    assert out.schema.field("avg").type == pa.float64()
    assert out.schema.field("small").type == pa.int16()
    assert out.select(["total", "avg", "small"]).to_pylist() == [
        {"total": 5, "avg": 2.5, "small": 2},
        {"total": 0, "avg": None, "small": None},
    ]


def test_engine_connections_print_no_progress_bar() -> None:
    # DuckDB's bar goes to stdout for queries past two seconds, into the caller's output. Its
    # default depends on the process (on in a plain interpreter): checked in one.
    code = (
        "from keel.features.offline import DuckDBEngine\n"
        "with DuckDBEngine().connect() as con:\n"
        "    print(con.execute(\"SELECT current_setting('enable_progress_bar')\").fetchone())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "(False,)"
