"""The prediction log: appends from threads, rolling, reopening, types, filters, cut lines."""

from __future__ import annotations

import errno
import json
import math
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError, StoreError
from keel.serving.compaction import compact
from keel.serving.predlog import PredictionLog, read_predictions

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds


def record(rid: str, time_us: int, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "request_id": rid,
        "time_us": time_us,
        "endpoint": "churn",
        "variant": "primary",
        "model": "churn-model",
        "model_version": 3,
        "features": {"age": 41, "plan": "pro", "spend": 12.5},
        "prediction": 0.25,
        "latency_us": 900,
        "status": 200,
    }
    base.update(extra)
    return base


def segments(folder: Path) -> list[Path]:
    return sorted((folder / "segments").glob("*.jsonl"))


def test_appends_from_threads_are_all_read_back_in_order_per_thread(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, segment_bytes=8_192)
    per_thread = 150

    def work(thread: int) -> None:
        for i in range(per_thread):
            log.append(record(f"t{thread}-{i}", T0 + i, thread=thread, seq=i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    table = read_predictions(tmp_path)
    assert table.num_rows == 4 * per_thread
    extras = [json.loads(x) for x in table.column("extra_json").to_pylist()]
    for n in range(4):
        seqs = [x["seq"] for x in extras if x["thread"] == n]
        assert seqs == list(range(per_thread))
    ids = table.column("request_id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert len(segments(tmp_path)) > 1  # rolled by size


def test_columns_have_the_documented_types(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("a", T0, prediction={"p": [0.1, 0.9]}, features={"x": 1, "flag": True}))
    log.append(record("b", T0 + 1, prediction=7, features={"x": 2, "flag": False}))
    table = read_predictions(tmp_path)
    schema = table.schema
    assert schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("model_version").type == pa.int64()
    assert schema.field("latency_us").type == pa.int64()
    assert schema.field("status").type == pa.int32()
    assert schema.field("f_x").type == pa.int64()
    assert schema.field("f_flag").type == pa.bool_()
    assert table.column("time").to_pylist()[0] == datetime(2026, 1, 1, tzinfo=UTC)
    assert table.column("prediction").to_pylist() == [None, 7.0]
    assert json.loads(table.column("prediction_json")[0].as_py()) == {"p": [0.1, 0.9]}
    assert table.column("f_x").to_pylist() == [1, 2]
    assert table.column("status").to_pylist() == [200, 200]


def test_mixed_feature_types_keep_only_json(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("a", T0, features={"mixed": 1, "num": 1}))
    log.append(record("b", T0 + 1, features={"mixed": "one", "num": 2.5}))
    table = read_predictions(tmp_path)
    assert "f_mixed" not in table.column_names
    assert table.column("f_num").to_pylist() == [1.0, 2.5]
    features = [json.loads(x) for x in table.column("features_json").to_pylist()]
    assert [f["mixed"] for f in features] == [1, "one"]


def test_int_and_float_features_across_files_unify_to_float(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("a", T0, features={"x": 1}))
    log.close()
    compact(tmp_path)
    log.append(record("b", T0 + 1, features={"x": 1.5}))
    table = read_predictions(tmp_path)
    assert table.schema.field("f_x").type == pa.float64()
    assert table.column("f_x").to_pylist() == [1.0, 1.5]


def test_rolls_by_size(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, segment_bytes=1_000)
    for i in range(40):
        log.append(record(f"r{i}", T0 + i))
    files = segments(tmp_path)
    line = len(json.dumps(record("r10", T0)))
    assert len(files) >= 40 * line // 1_000
    assert all(f.stat().st_size <= 1_000 for f in files)
    assert read_predictions(tmp_path).num_rows == 40


def test_close_then_append_starts_a_new_segment(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("a", T0))
    first = log.active_segment
    log.close()
    assert log.active_segment is None
    log.append(record("b", T0 + 1))
    assert log.active_segment not in (None, first)
    log.close()
    again = PredictionLog(tmp_path)  # a restarted server
    again.append(record("c", T0 + 2))
    assert len(segments(tmp_path)) == 3
    assert read_predictions(tmp_path).column("request_id").to_pylist() == ["a", "b", "c"]


def test_a_cut_last_line_is_skipped(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("whole", T0))
    path = log.active_segment
    assert path is not None
    with open(path, "ab") as sink:  # a write cut short, as by a full disk
        sink.write(json.dumps(record("cut", T0 + 1)).encode()[:40])
    assert read_predictions(tmp_path).column("request_id").to_pylist() == ["whole"]


def test_nan_and_infinity_are_kept(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("a", T0, prediction=math.nan, features={"x": math.inf}))
    for table in (read_predictions(tmp_path), _compacted(tmp_path, log)):
        assert math.isnan(table.column("prediction")[0].as_py())
        assert table.column("f_x").to_pylist() == [math.inf]


def _compacted(folder: Path, log: PredictionLog) -> pa.Table:
    log.close()
    assert compact(folder).segments == 1
    return read_predictions(folder)


def test_filters_by_endpoint_and_time(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    day = 86_400_000_000
    for i in range(4):
        log.append(record(f"c{i}", T0 + i * day, endpoint="churn"))
        log.append(record(f"f{i}", T0 + i * day, endpoint="fraud"))
    since = datetime(2026, 1, 2, tzinfo=UTC)
    until = since + timedelta(days=2)
    for _ in range(2):  # from segments, then from Parquet
        table = read_predictions(tmp_path, endpoint="churn", since=since, until=until)
        assert table.column("request_id").to_pylist() == ["c1", "c2"]
        assert read_predictions(tmp_path, endpoint="fraud").num_rows == 4
        assert read_predictions(tmp_path, endpoint="none").num_rows == 0
        log.close()
        compact(tmp_path)


def test_bad_input_is_refused_with_the_fix(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    with pytest.raises(InvalidInputError, match="request_id"):
        log.append({"time_us": T0})
    with pytest.raises(InvalidInputError, match="time_us"):
        log.append({"request_id": "r", "time_us": "now"})
    with pytest.raises(InvalidInputError, match="type object"):
        log.append(record("r", T0, prediction=object()))
    with pytest.raises(InvalidInputError, match="naive"):
        read_predictions(tmp_path, since=datetime(2026, 1, 1))
    with pytest.raises(InvalidInputError, match="segment_bytes"):
        PredictionLog(tmp_path, segment_bytes=0)


json_scalars = st.none() | st.booleans() | st.integers(-(2**62), 2**62) | st.text(max_size=8)
json_scalars |= st.floats(allow_nan=True, allow_infinity=True)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _same(a: Any, b: Any) -> bool:
    # NaN-aware structural equality
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    predictions=st.lists(json_values, min_size=1, max_size=5),
    features=st.dictionaries(st.text(min_size=1, max_size=4), json_scalars, max_size=3),
    compacted=st.booleans(),
)
def test_any_json_value_round_trips(
    tmp_path_factory: pytest.TempPathFactory,
    predictions: list[Any],
    features: dict[str, Any],
    compacted: bool,
) -> None:
    folder = tmp_path_factory.mktemp("log")
    log = PredictionLog(folder)
    for i, prediction in enumerate(predictions):
        log.append(record(f"r{i}", T0 + i, prediction=prediction, features=features))
    if compacted:
        log.close()
        compact(folder)
    table = read_predictions(folder)
    assert table.num_rows == len(predictions)
    got = [json.loads(x) for x in table.column("prediction_json").to_pylist()]
    assert all(_same(a, b) for a, b in zip(got, predictions, strict=True))
    for name, value in features.items():
        stored = json.loads(table.column("features_json")[0].as_py())[name]
        assert _same(stored, value)
        if f"f_{name}" in table.column_names and value is not None:
            assert _same(table.column(f"f_{name}")[0].as_py(), value)


def test_a_failed_write_seals_the_segment_so_the_next_record_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("before", T0))
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:
        real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(StoreError, match="free disk space"):
        log.append(record("lost", T0 + 1))
    monkeypatch.setattr(os, "write", real_write)
    log.append(record("after", T0 + 2))
    assert len(segments(tmp_path)) == 2
    assert read_predictions(tmp_path).column("request_id").to_pylist() == ["before", "after"]


def test_append_many_writes_a_batch_with_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = PredictionLog(tmp_path)
    real_write = os.write
    calls: list[int] = []

    def counting(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting)
    log.append_many([record(f"r{i}", T0 + i) for i in range(5)])
    log.append_many([])
    assert len(calls) == 1
    with pytest.raises(InvalidInputError, match="request_id"):
        log.append_many([record("ok", T0), {"time_us": T0}])
    assert read_predictions(tmp_path).column("request_id").to_pylist() == [
        f"r{i}" for i in range(5)
    ]


def test_an_old_segment_rolls_even_when_small(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_segment_age_s=60)
    log.append(record("a", T0))
    first = log.active_segment
    log.append(record("b", T0 + 1))
    assert log.active_segment == first
    log._writer._opened -= 61  # as if a quiet minute passed
    log.append(record("c", T0 + 2))
    assert log.active_segment != first
    assert compact(tmp_path).segments == 1
    with pytest.raises(InvalidInputError, match="max_age_s"):
        PredictionLog(tmp_path, max_segment_age_s=0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_own_segment(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(record("parent-1", T0))
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            log.append(record("child", T0 + 1))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.append(record("parent-2", T0 + 2))
    assert len(segments(tmp_path)) == 2
    assert read_predictions(tmp_path).column("request_id").to_pylist() == [
        "parent-1",
        "child",
        "parent-2",
    ]
    assert compact(tmp_path).segments == 1  # the child's; the parent's is still live
