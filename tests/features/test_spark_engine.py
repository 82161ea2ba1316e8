"""The Spark engine gives DuckDB's tables: same columns, types, order, values and errors.

The named cases of tests/features/test_pit_cases.py run here too (parametrized over engines);
this module adds random requests, Parquet file order, time zones, types and refusals."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError, StoreError
from keel.features.offline import (
    AggregationInput,
    DuckDBEngine,
    FeatureInput,
    JoinRequest,
    ViewInput,
)
from tests.conftest import service_unavailable
from tests.features.test_pit_join import _as_source, entity_frames, sources, ttls

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from keel.features.offline.spark_engine import SparkEngine


pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("spark"),
]  # a Spark session takes seconds to start, each join about one

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DUCKDB = DuckDBEngine(threads=1)
FEATURE = FeatureInput("x", "float64")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def spark_session() -> Iterator[SparkSession]:
    """One local Spark session for every Spark test (it takes seconds to start)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        service_unavailable("Spark", f"{exc}; install it with `pip install keel[spark]`")
        raise
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        service_unavailable("Spark", "no Java runtime (java on PATH or JAVA_HOME)")
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("keel-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # any failure to start the JVM means "not available here"
        service_unavailable("Spark", str(exc).splitlines()[0])
        raise
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_engine(spark_session: SparkSession) -> SparkEngine:
    from keel.features.offline.spark_engine import SparkEngine

    return SparkEngine(spark_session)


def _both(engine: SparkEngine, request: JoinRequest) -> pa.Table:
    """Spark's table, asserted equal to DuckDB's (columns, types, order and values)."""
    got = engine.get_training_set(request)
    want = DUCKDB.get_training_set(request)
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()
    assert got.equals(want)
    return got


def test_a_missing_pyspark_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.features.offline.spark_engine import SparkEngine

    monkeypatch.setitem(sys.modules, "pyspark", None)  # makes `import pyspark` fail
    with pytest.raises(StoreError, match=r"pyspark.*pip install keel\[spark\]"):
        SparkEngine()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key_count=st.integers(1, 2),
    created=st.booleans(),
    data=st.data(),
    ttl=ttls,
    known_at=st.booleans(),
    default=st.sampled_from([None, -1.0]),
    specs=st.lists(
        st.tuples(
            st.sampled_from(["sum", "count", "mean", "min", "max", "last"]),
            st.sampled_from(["x", "n"]),
            st.integers(1, 12),
        ),
        max_size=3,
    ),
)
def test_random_requests_give_duckdbs_table(
    spark_engine: SparkEngine,
    key_count: int,
    created: bool,
    data: st.DataObject,
    ttl: timedelta | None,
    known_at: bool,
    default: float | None,
    specs: list[tuple[str, str, int]],
) -> None:
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
            aggregations=tuple(
                AggregationInput(f"a{i}", column, function, timedelta(seconds=w))
                for i, (function, column, w) in enumerate(specs)
            ),
        )
        _both(
            spark_engine, JoinRequest(entities, (view,), timestamp_column="t", as_known_at=known_at)
        )


def test_ties_across_files_go_to_the_later_path_then_the_later_row(
    spark_engine: SparkEngine, spark_session: SparkSession, tmp_path: Path
) -> None:
    # Names that a URI escapes (space, %, +, [, é) would sort differently escaped. The file
    # order is DuckDB's: sorted within a folder, its own files before its subfolders'. File i
    # holds keys 1..6-i, so key k's last file is file 6-k; each file has three rows per key at
    # one event time, in row groups of two rows.
    names = ["a%b.parquet", "a+b.parquet", "b file.parquet", "c[1].parquet", "é.parquet"]
    names.append("sub/z.parquet")
    for i, name in enumerate(names):
        keys = [k for _ in range(3) for k in range(1, 7 - i)]
        rows = len(keys)
        table = pa.table(
            {
                "user_id": pa.array(keys, pa.int64()),
                "event_ts": pa.array([at(5)] * rows, pa.timestamp("us", tz="UTC")),
                "x": pa.array([100.0 * i + r for r in range(rows)]),
            }
        )
        (tmp_path / name).parent.mkdir(exist_ok=True)
        pq.write_table(table, tmp_path / name, row_group_size=2)
    entities = pa.table(
        {
            "user_id": pa.array([6, 5, 4, 3, 2, 1, 7], pa.int64()),
            "ts": pa.array([at(10)] * 7, pa.timestamp("us", tz="UTC")),
        }
    )
    view = ViewInput("v", ("user_id",), str(tmp_path), "event_ts", features=(FEATURE,))
    # one Spark task per row group, so the row numbers come from several tasks per file
    settings = {"spark.sql.files.maxPartitionBytes": "200", "spark.sql.files.openCostInBytes": "0"}
    before = {key: spark_session.conf.get(key) for key in settings}
    for key, value in settings.items():
        spark_session.conf.set(key, value)
    try:
        out = _both(spark_engine, JoinRequest(entities, (view,), timestamp_column="ts"))
    finally:
        for key, value in before.items():
            spark_session.conf.set(key, value)
    # key k wins in file 6 - k, which repeats keys 1..k three times: its last row is 3k - 1
    expected = [100.0 * (6 - k) + 3 * k - 1 for k in (6, 5, 4, 3, 2, 1)]
    assert out.column("x").to_pylist() == [*expected, None]


def test_typed_keys_join_across_widths_and_never_by_concatenation(
    spark_engine: SparkEngine,
) -> None:
    ts = pa.timestamp("us", tz="UTC")
    wide = pa.table(  # uint64 in the source, int32 in the entity frame
        {
            "user_id": pa.array([2**63 + 5, 1, 2], pa.uint64()),
            "event_ts": pa.array([at(1)] * 3, ts),
            "x": [9.0, 1.0, 2.0],
        }
    )
    pair = pa.table(  # (1, "23") must not meet (12, "3")
        {
            "a": pa.array([1, 12], pa.int16()),
            "b": ["23", "4"],
            "event_ts": pa.array([at(1)] * 2, ts),
            "y": [5.0, 6.0],
        }
    )
    entities = pa.table(
        {
            "user_id": pa.array([2, 1, None, 3], pa.int32()),
            "a": pa.array([1, 12, 12, 1], pa.int64()),
            "b": pa.array(["23", "3", "4", None]).dictionary_encode(),
            "ts": pa.array([at(5)] * 4, ts),
        }
    )
    views = (
        ViewInput("wide", ("user_id",), wide, "event_ts", features=(FEATURE,)),
        ViewInput("pair", ("a", "b"), pair, "event_ts", features=(FeatureInput("y", "float64"),)),
    )
    out = _both(spark_engine, JoinRequest(entities, views, timestamp_column="ts"))
    assert out.column("x").to_pylist() == [2.0, 1.0, None, None]
    assert out.column("y").to_pylist() == [5.0, None, 6.0, None]


ZONES = [  # wall times at DST transitions: read with fold=0, as Python does
    ("America/New_York", "2024-11-03 01:30:00"),  # occurs twice: the earlier instant
    ("America/New_York", "2024-03-10 02:30:00"),  # does not exist: offset before the gap
    ("Europe/Paris", "2024-10-27 02:00:00"),
    ("Australia/Lord_Howe", "2024-04-07 01:45:00"),  # a 30-minute DST shift
    ("Pacific/Apia", "2011-12-30 12:00:00"),  # a skipped day
    ("Asia/Kolkata", "2024-01-01 05:30:00.000001"),
]


def test_naive_source_times_are_read_in_the_declared_zone(
    spark_engine: SparkEngine, tmp_path: Path
) -> None:
    from zoneinfo import ZoneInfo

    views, instants = [], []
    for i, (zone, wall) in enumerate(ZONES):
        local = datetime.fromisoformat(wall)
        instants.append(local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC))
        source: Any = pa.table(
            {
                "user_id": [1],
                "event_ts": pa.array([local], pa.timestamp("us")),
                "created_ts": pa.array([local], pa.timestamp("ns")),
                "x": [float(i)],
            }
        )
        if i % 2:  # half of them from Parquet, where Spark reads them as TIMESTAMP_NTZ
            pq.write_table(source, tmp_path / f"{i}.parquet")
            source = str(tmp_path / f"{i}.parquet")
        feature = FeatureInput(f"x{i}", "float64", column="x")
        views.append(
            ViewInput(
                f"v{i}",
                ("user_id",),
                source,
                "event_ts",
                created_timestamp="created_ts",
                source_time_zone=zone,
                features=(feature, FeatureInput(f"seen{i}", "timestamp", column="event_ts")),
            )
        )
    times = [t + d for t in instants for d in (timedelta(0), -timedelta(microseconds=1))]
    entities = pa.table(
        {"user_id": [1] * len(times), "ts": pa.array(times, pa.timestamp("us", tz="UTC"))}
    )
    out = _both(spark_engine, JoinRequest(entities, tuple(views), timestamp_column="ts"))
    for i, instant in enumerate(instants):
        assert out.column(f"x{i}").to_pylist() == [
            float(i) if t >= instant else None for t in times
        ]
        seen = out.column(f"seen{i}").to_pylist()
        assert [s for s in seen if s is not None] == [instant] * sum(t >= instant for t in times)


def test_nanosecond_times_are_floored_in_parquet_and_in_memory(
    spark_engine: SparkEngine, tmp_path: Path
) -> None:
    source = pa.table(
        {
            "user_id": [1, 2, 3],
            "event_ts": pa.array([1_999, 2_000, -1], pa.timestamp("ns", tz="UTC")),
            "x": [1.0, 2.0, 3.0],
        }
    )
    pq.write_table(source, tmp_path / "ns.parquet", coerce_timestamps=None)
    assert pq.read_schema(tmp_path / "ns.parquet").field("event_ts").type.unit == "ns"
    entities = pa.table(
        {
            "user_id": [1, 2, 3],
            "ts": pa.array([1_000, 1_999, -1_000], pa.timestamp("ns", tz="UTC")),
        }
    )
    for form in (source, str(tmp_path / "ns.parquet")):
        view = ViewInput("v", ("user_id",), form, "event_ts", features=(FEATURE,))
        out = _both(spark_engine, JoinRequest(entities, (view,), timestamp_column="ts"))
        assert out.column("x").to_pylist() == [1.0, None, 3.0]


def test_untyped_aggregations_take_duckdbs_types_for_every_column_type(
    spark_engine: SparkEngine,
) -> None:
    columns = {
        "i8": pa.array([1, -2, 3], pa.int8()),
        "u32": pa.array([1, 2, 4_000_000_000], pa.uint32()),
        "u64": pa.array([1, 2, 2**62 + 1], pa.uint64()),
        "f32": pa.array([0.5, 1.5, None], pa.float32()),
        "f64": pa.array([0.1, 0.2, 0.3]),
        "dec": pa.array([Decimal("1.25"), Decimal("-2.50"), None], pa.decimal128(10, 2)),
        "s": pa.array(["b", "a", "c"], pa.large_string()),
        "cat": pa.array(["q", "p", "q"]).dictionary_encode(),
        "flag": [True, False, None],
        "day": pa.array([datetime(2024, 1, d).date() for d in (3, 1, 2)]),
        "raw": [b"b", b"a", b"c"],
        "paris": pa.array([at(1), at(2), at(3)], pa.timestamp("ms", tz="Europe/Paris")),
    }
    source = pa.table(
        {
            "user_id": [1, 1, 1],
            "event_ts": pa.array([at(1), at(2), at(3)], pa.timestamp("us", tz="UTC")),
            **columns,
        }
    )
    hour = timedelta(hours=1)
    aggregations = [
        AggregationInput(f"{fn}_{name}", name, fn, hour)
        for name in columns
        for fn in ("min", "max", "last", "count")
    ]
    numeric = ("i8", "u32", "u64", "f32", "f64", "dec")
    aggregations += [
        AggregationInput(f"{fn}_{name}", name, fn, hour)
        for name in numeric
        for fn in ("sum", "mean")
    ]
    features = [
        FeatureInput("f_u64", "uint64", column="u64"),
        FeatureInput("f_cat", "string", column="cat"),
    ]
    view = ViewInput(
        "v",
        ("user_id",),
        source,
        "event_ts",
        features=tuple(features),
        aggregations=tuple(aggregations),
    )
    entities = pa.table(
        {"user_id": [1, 2], "ts": pa.array([at(5)] * 2, pa.timestamp("us", tz="UTC"))}
    )
    out = _both(spark_engine, JoinRequest(entities, (view,), timestamp_column="ts"))
    assert out.column("f_u64").to_pylist() == [2**62 + 1, None]
    assert out.column("count_flag").to_pylist() == [2, 0]


def test_float_sums_and_means_are_compensated_as_duckdb_does(spark_engine: SparkEngine) -> None:
    # a plain running sum gives 0.9999999999999999 and 0.20000000000000004 here
    values = [0.1] * 10 + [0.1, 0.2, 0.3]
    source = pd.DataFrame(
        {
            "user_id": [1] * 10 + [2] * 3,
            "event_ts": [at(i) for i in range(13)],
            "x": values,
        }
    )
    hour = timedelta(hours=1)
    view = ViewInput(
        "v",
        ("user_id",),
        source,
        "event_ts",
        aggregations=(
            AggregationInput("total", "x", "sum", hour),
            AggregationInput("avg", "x", "mean", hour),
        ),
    )
    entities = pd.DataFrame({"user_id": [1, 2], "ts": [at(60)] * 2})
    out = _both(spark_engine, JoinRequest(entities, (view,), timestamp_column="ts"))
    assert out.column("total").to_pylist() == [1.0, 0.6]
    assert out.column("avg").to_pylist() == [0.1, 0.19999999999999998]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"features": (FeatureInput("nope", "float64"),)}, r"no column 'nope'"),
        ({"features": (FeatureInput("x", "string"),)}, r"declared string"),
        ({"features": (FeatureInput("x", "float64", default="abc"),)}, r"default 'abc'"),
        ({"created_timestamp": "x"}, r"not a timestamp"),
        ({"aggregations": (AggregationInput("s", "name", "sum", timedelta(1)),)}, r"numeric"),
        ({"source": "naive"}, r"naive.*source_time_zone"),
        ({"entities": "strings"}, r"BIGINT.*VARCHAR"),
        ({"entities": "clash"}, r"full_feature_names=True"),
        ({"source": "missing"}, r"cannot be read"),
    ],
)
def test_bad_requests_fail_with_duckdbs_error_before_any_spark_job(
    spark_engine: SparkEngine, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    source = pd.DataFrame({"user_id": [1], "event_ts": [at(1)], "x": [1.5], "name": ["a"]})
    entities = pd.DataFrame({"user_id": [1], "ts": [at(5)]})
    kind = options.pop("source", None)
    if kind == "naive":
        source["event_ts"] = source["event_ts"].dt.tz_localize(None)
    view_source: Any = str(tmp_path / "none" / "*.parquet") if kind == "missing" else source
    kind = options.pop("entities", None)
    if kind == "strings":
        entities["user_id"] = entities["user_id"].astype(str)
    elif kind == "clash":
        entities["x"] = 0.0
    options.setdefault("features", (FEATURE,))
    view = ViewInput("v", ("user_id",), view_source, "event_ts", **options)
    request = JoinRequest(entities, (view,), timestamp_column="ts")
    with pytest.raises(InvalidInputError, match=message) as from_duckdb:
        DUCKDB.get_training_set(request)
    with pytest.raises(InvalidInputError) as from_spark:
        spark_engine.get_training_set(request)
    assert str(from_spark.value) == str(from_duckdb.value)


def test_urls_and_files_spark_would_skip_are_refused_with_the_fix(
    spark_engine: SparkEngine, tmp_path: Path
) -> None:
    table = pa.table(
        {"user_id": [1], "event_ts": pa.array([at(1)], pa.timestamp("us", tz="UTC")), "x": [1.0]}
    )
    pq.write_table(table, tmp_path / "_part.parquet")
    entities = pd.DataFrame({"user_id": [1], "ts": [at(5)]})
    for source, message in [
        (str(tmp_path), r"_part\.parquet'.*start with '_'.*rename it"),
        ("memory://keel/features", r"local Parquet paths only.*DuckDBEngine"),
    ]:
        view = ViewInput("v", ("user_id",), source, "event_ts", features=(FEATURE,))
        with pytest.raises(InvalidInputError, match=message):
            spark_engine.get_training_set(JoinRequest(entities, (view,), timestamp_column="ts"))


def test_empty_and_timeless_entity_rows_and_the_callers_session_settings(
    spark_engine: SparkEngine, spark_session: SparkSession
) -> None:
    source = pd.DataFrame({"user_id": [1, 2], "event_ts": [at(1), at(2)], "x": [1.5, 2.5]})
    view = ViewInput(
        "v",
        ("user_id",),
        source,
        "event_ts",
        features=(FeatureInput("x", "float64", default=0.0),),
        aggregations=(AggregationInput("n", "x", "count", timedelta(hours=1)),),
    )
    entities = pd.DataFrame({"user_id": [2, 1, 3], "ts": [at(5), pd.NaT, at(5)]})
    spark_session.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        out = _both(spark_engine, JoinRequest(entities, (view,), timestamp_column="ts"))
        empty = _both(spark_engine, JoinRequest(entities.iloc[:0], (view,), timestamp_column="ts"))
        assert spark_session.conf.get("spark.sql.session.timeZone") == "America/New_York"
    finally:
        spark_session.conf.set("spark.sql.session.timeZone", "UTC")
    assert out.column("x").to_pylist() == [2.5, 0.0, 0.0]
    assert out.column("n").to_pylist() == [1, 0, 0]
    assert empty.num_rows == 0
