"""Input forms and refusals of the DuckDB engine: sources and entity frames of every supported
kind, time zones, and one clear `InvalidInputError` for each bad request."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.errors import InvalidInputError
from keel.features.offline import (
    AggregationInput,
    DuckDBEngine,
    FeatureInput,
    JoinRequest,
    ViewInput,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ENGINE = DuckDBEngine(threads=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


SOURCE = pd.DataFrame({"user_id": [1, 2], "event_ts": [at(1), at(2)], "x": [1.5, 2.5]})
ENTITIES = pd.DataFrame({"user_id": [2, 1, 3], "ts": [at(5), at(5), at(5)]})


def view(source: Any = SOURCE, **options: Any) -> ViewInput:
    options.setdefault("features", (FeatureInput("x", "float64"),))
    return ViewInput("v", ("user_id",), source, "event_ts", **options)


def run(source: Any = SOURCE, entities: Any = ENTITIES, **options: Any) -> pa.Table:
    request = JoinRequest(entities, (view(source, **options),), timestamp_column="ts")
    return ENGINE.get_training_set(request)


@pytest.fixture
def memory_fs() -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
    fs = fsspec.filesystem("memory")
    root = f"/keel-{uuid.uuid4().hex[:8]}"
    yield fs, root
    fs.rm(root, recursive=True)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def test_sources_as_arrow_file_folder_glob_and_fsspec_url_agree(
    tmp_path: Path, memory_fs: tuple[fsspec.AbstractFileSystem, str]
) -> None:
    fs, root = memory_fs
    folder = tmp_path / "src" / "day=1"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(SOURCE.iloc[:1]), folder / "a.parquet")
    pq.write_table(pa.Table.from_pandas(SOURCE.iloc[1:]), folder / "b.parquet")
    fs.pipe(f"{root}/src/a.parquet", _parquet_bytes(SOURCE))
    forms = [
        pa.Table.from_pandas(SOURCE),
        str(tmp_path / "src"),
        str(folder / "*.parquet"),
        Path(folder / "a.parquet"),
        f"memory://{root}/src",
        f"memory://{root}/src/*.parquet",
    ]
    results = [run(form).column("x").to_pylist() for form in forms]
    assert results[:3] + results[4:] == [[2.5, 1.5, None]] * 5
    assert results[3] == [None, 1.5, None]


def test_entity_frame_as_arrow_or_parquet_path_keeps_its_columns(tmp_path: Path) -> None:
    frame = ENTITIES.assign(label=["a", "b", "c"])
    path = tmp_path / "entities.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    for entities in (frame, pa.Table.from_pandas(frame, preserve_index=False), str(path)):
        out = run(entities=entities)
        assert out.column_names == ["user_id", "ts", "label", "x"]
        assert out.column("label").to_pylist() == ["a", "b", "c"]
        assert out.column("x").to_pylist() == [2.5, 1.5, None]


def test_naive_entity_times_are_refused_with_the_fix() -> None:
    naive = ENTITIES.assign(ts=ENTITIES["ts"].dt.tz_localize(None))
    with pytest.raises(InvalidInputError, match=r"'ts'.*naive.*tz_localize"):
        run(entities=naive)


def test_entity_times_in_another_zone_are_the_same_instants() -> None:
    paris = ENTITIES.assign(ts=ENTITIES["ts"].dt.tz_convert("Europe/Paris"))
    assert run(entities=paris).column("x").to_pylist() == [2.5, 1.5, None]


def test_naive_source_times_are_refused_unless_the_zone_is_declared() -> None:
    # wall clock 02:00 and 03:00 in Paris (UTC+1) are 01:00 and 02:00 UTC
    naive = SOURCE.assign(event_ts=[datetime(2024, 1, 1, 2), datetime(2024, 1, 1, 3)])
    late = pd.DataFrame({"user_id": [1, 2], "ts": [at(3600), at(3600)]})
    with pytest.raises(InvalidInputError, match=r"'event_ts'.*naive.*source_time_zone"):
        run(naive, late)
    out = run(naive, late, source_time_zone="Europe/Paris")
    assert out.column("x").to_pylist() == [1.5, None]


def test_nanosecond_times_are_floored_to_microseconds() -> None:
    source = pa.table(
        {
            "user_id": [1, 2],
            "event_ts": pa.array([1_999, 2_000], pa.timestamp("ns", tz="UTC")),
            "x": [1.0, 2.0],
        }
    )
    entities = pa.table(
        {"user_id": [1, 2], "ts": pa.array([1_000, 1_999], pa.timestamp("ns", tz="UTC"))}
    )
    assert run(source, entities).column("x").to_pylist() == [1.0, None]


def test_mismatched_key_types_name_both_sides() -> None:
    strings = ENTITIES.assign(user_id=ENTITIES["user_id"].astype(str))
    with pytest.raises(InvalidInputError, match=r"'user_id'.*BIGINT.*VARCHAR"):
        run(entities=strings)


def test_keys_of_different_integer_widths_join() -> None:
    entities = pa.table(
        {
            "user_id": pa.array([2, 1], pa.int32()),
            "ts": pa.array([at(5)] * 2, pa.timestamp("us", tz="UTC")),
        }
    )
    assert run(entities=entities).column("x").to_pylist() == [2.5, 1.5]


def test_categorical_string_keys_join_by_value() -> None:
    source = SOURCE.assign(user_id=["u1", "u2"])
    entities = ENTITIES.assign(user_id=pd.Categorical(["u2", "u1", "u3"]))
    assert run(source, entities).column("x").to_pylist() == [2.5, 1.5, None]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"features": (FeatureInput("nope", "float64"),)}, r"no column 'nope'.*columns are"),
        ({"features": (FeatureInput("x", "string"),)}, r"declared string.*'x' is DOUBLE"),
        ({"features": (FeatureInput("x", "float64", default="abc"),)}, r"default 'abc'"),
        ({"aggregations": (AggregationInput("s", "user_id", "sum", timedelta(1)),)}, "ok"),
        ({"created_timestamp": "x"}, r"'x' \(created timestamp\).*DOUBLE, not a timestamp"),
    ],
)
def test_bad_view_columns_are_refused_before_any_join(
    options: dict[str, Any], message: str
) -> None:
    if message == "ok":
        assert run(**options).column("s").to_pylist() == [2, 1, None]
        return
    with pytest.raises(InvalidInputError, match=message):
        run(**options)


def test_missing_entity_columns_are_named() -> None:
    with pytest.raises(InvalidInputError, match=r"no column 'ts'"):
        run(entities=ENTITIES.rename(columns={"ts": "when"}))
    with pytest.raises(InvalidInputError, match=r"no column 'user_id'.*key 'user_id'"):
        run(entities=ENTITIES.rename(columns={"user_id": "uid"}))


def test_output_names_that_clash_are_refused_and_full_names_fix_it() -> None:
    entities = ENTITIES.assign(x=0)
    request = JoinRequest(entities, (view(),), timestamp_column="ts")
    with pytest.raises(InvalidInputError, match=r"'x'.*full_feature_names=True"):
        ENGINE.get_training_set(request)
    full = JoinRequest(entities, (view(),), timestamp_column="ts", full_feature_names=True)
    assert ENGINE.get_training_set(full).column("v__x").to_pylist() == [2.5, 1.5, None]


def test_declared_dtypes_are_applied_and_lossy_values_refused() -> None:
    source = SOURCE.assign(n=[1, 300])
    out = run(source, features=(FeatureInput("n", "int16"), FeatureInput("x", "float32")))
    assert out.schema.field("n").type == pa.int16()
    assert out.schema.field("x").type == pa.float32()
    with pytest.raises(InvalidInputError, match=r"feature 'n'.*int8"):
        run(source, features=(FeatureInput("n", "int8"),))


def test_timestamp_features_come_out_utc() -> None:
    source = SOURCE.assign(seen=[at(0), at(1)])
    out = run(source, features=(FeatureInput("seen", "timestamp"),))
    assert out.schema.field("seen").type == pa.timestamp("us", tz="UTC")
    assert out.column("seen").to_pylist() == [at(1), at(0), None]


def test_empty_entity_frame_gives_typed_empty_columns() -> None:
    out = run(entities=ENTITIES.iloc[:0])
    assert out.num_rows == 0
    assert out.schema.field("x").type == pa.float64()


def test_entity_rows_without_a_time_get_defaults() -> None:
    entities = ENTITIES.assign(ts=[at(5), pd.NaT, at(5)])
    out = run(entities=entities, features=(FeatureInput("x", "float64", default=0.0),))
    assert out.column("x").to_pylist() == [2.5, 0.0, 0.0]


def test_missing_source_files_and_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"cannot be read.*check the path"):
        run(str(tmp_path / "nothing" / "*.parquet"))
    with pytest.raises(InvalidInputError, match=r"memory_limit"):
        DuckDBEngine(memory_limit="lots").get_training_set(
            JoinRequest(ENTITIES, (view(),), timestamp_column="ts")
        )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FeatureInput("x", "float"), r"dtype 'float'; use one of"),
        (lambda: AggregationInput("a", "x", "median", timedelta(1)), r"'median'; use one of"),
        (lambda: AggregationInput("a", "x", "sum", timedelta(0)), r"positive timedelta"),
        (lambda: view(ttl=timedelta(seconds=-1)), r"ttl.*positive"),
        (lambda: view(source_time_zone="Mars/Olympus"), r"'Mars/Olympus'.*IANA"),
        (lambda: view(features=()), r"no features or aggregations"),
        (
            lambda: view(features=(FeatureInput("x", "float64"), FeatureInput("x", "float64"))),
            r"feature 'x' twice",
        ),
        (lambda: JoinRequest(ENTITIES, (view(), view())), r"view 'v' twice"),
        (lambda: ViewInput("v", (), SOURCE, "event_ts"), r"no join keys"),
    ],
)
def test_malformed_specs_are_refused_at_construction(build: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        build()


def test_importing_the_offline_package_imports_nothing_heavy() -> None:
    code = (
        "import sys, keel.features.offline as o; o.JoinRequest; "
        "print(','.join(m for m in ('duckdb', 'pyarrow', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("zone", "wall"),
    [
        ("America/New_York", "2024-11-03 01:30:00"),  # occurs twice: the earlier instant
        ("America/New_York", "2024-03-10 02:30:00"),  # does not exist: offset before the gap
        ("Europe/Paris", "2024-10-27 02:00:00"),
        ("Australia/Lord_Howe", "2024-04-07 01:45:00"),  # a 30-minute DST shift
        ("Pacific/Apia", "2011-12-30 12:00:00"),  # a skipped day
        ("Asia/Kolkata", "2024-01-01 05:30:00.000001"),
    ],
)
def test_naive_times_follow_python_fold_0_at_dst_transitions(zone: str, wall: str) -> None:
    from zoneinfo import ZoneInfo

    local = datetime.fromisoformat(wall)
    instant = local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)  # fold=0
    source = pd.DataFrame({"user_id": [1], "event_ts": [local], "x": [1.0]})
    entities = pd.DataFrame(
        {"user_id": [1, 1], "ts": [instant, instant - timedelta(microseconds=1)]}
    )
    out = run(source, entities, source_time_zone=zone)
    assert out.column("x").to_pylist() == [1.0, None]
