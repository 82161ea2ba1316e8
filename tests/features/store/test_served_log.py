"""The served-feature log: one record per served entity row, typed values that round-trip,
day folders and time ranges, and a reader that survives a segment cut by a crash."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from keel.errors import InvalidInputError, StoreError
from keel.features.served_log import ServedLog, read_served
from keel.features.serving import OnlineResult
from keel.features.store import FeatureStore
from keel.project import Project
from tests.features.store.test_skew import END, day, make_store


@pytest.fixture
def store(sqlite_project: Project) -> Iterator[FeatureStore]:
    with make_store(sqlite_project) as feature_store:
        yield feature_store


def segments(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jsonl"))


def us(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // (datetime.resolution)


def test_each_lookup_appends_one_record_per_entity_row(store: FeatureStore) -> None:
    version = store.versions["user_stats"]
    rows = [{"user_id": 1}, {"user_id": 4}, {"user_id": 9}]
    store.get_online_features(["user_stats:spend", "user_stats:visits"], rows, request_time=END)
    store.get_online_features(["ratio"], [{"user_id": 1, "amount": 8.0}], request_time=day(5, 12))
    table = read_served(store.project)
    assert table.column_names == [
        "request_time",
        "user_id",
        "amount",
        "spend",
        "visits",
        "ratio",
        "served",
        "versions",
    ]
    assert table.schema.field("request_time").type == pa.timestamp("us", "UTC")
    data = table.to_pydict()
    assert data["request_time"] == [END, END, END, day(5, 12)]
    assert data["user_id"] == [1, 4, 9, 1]
    assert data["amount"] == [None, None, None, 8.0]
    assert data["spend"][0] == 30.0
    assert math.isnan(data["spend"][1])  # a stored NaN is logged and read back as NaN
    assert data["spend"][2:] == [-1.0, None]  # the default served to an unknown user
    assert data["visits"] == [3, 4, None, None]
    assert data["ratio"] == [None, None, None, 8.0]  # user 1's spend expired: 8 / (-1 + 2)
    assert data["served"] == [["user_stats:spend", "user_stats:visits"]] * 3 + [["ratio:ratio"]]
    ratio = [("ratio", store.versions["ratio"])]
    assert data["versions"] == [
        [("user_stats", version)],
        [("user_stats", version)],
        [("user_stats", None)],
        [("user_stats", None), *ratio],
    ]
    # One segment per request day, named <pid>-<uuid>.jsonl, one line per row.
    files = segments(store.served_log.folder)
    assert [f.parent.name for f in files] == ["2026-03-04", "2026-03-05"]
    assert [len(f.read_text().splitlines()) for f in files] == [3, 1]
    assert files[0].name.split("-")[0].isdigit()


def test_time_ranges_pick_records_and_day_folders(store: FeatureStore) -> None:
    for when in (day(4), day(4, 23), day(5), day(7, 1)):
        store.get_online_features(["user_stats:spend"], [{"user_id": 1}], request_time=when)
    times = read_served(store.project, since=day(4, 23), until=day(7, 1))["request_time"]
    assert times.to_pylist() == [day(4, 23), day(5)]
    assert read_served(store.project, since=day(8)).num_rows == 0
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        read_served(store.project, since=datetime(2026, 3, 4))


def test_logging_is_off_unless_asked(sqlite_project: Project) -> None:
    with make_store(sqlite_project) as store:
        folder = store.served_log.folder
    with FeatureStore(sqlite_project) as quiet:
        quiet.get_online_features(["user_stats:spend"], [{"user_id": 1}], request_time=END)
    assert not folder.exists()
    assert read_served(sqlite_project).num_rows == 0
    configured = Project(sqlite_project.root, overrides={"features.log_served": True}, environ={})
    try:
        with FeatureStore(configured) as store:
            store.get_online_features(["user_stats:spend"], [{"user_id": 1}], request_time=END)
        assert read_served(configured).num_rows == 1
    finally:
        configured.close()


def result(
    columns: dict[str, list[object]], features: list[str], request: datetime
) -> OnlineResult:
    sources = dict.fromkeys(features, "v")
    rows = len(columns[features[0]])
    return OnlineResult(columns, sources, {"v": ["1"] * rows}, {"v": [0] * rows}, us(request))


def test_values_round_trip_with_their_types(tmp_path: Path) -> None:
    log = ServedLog(tmp_path / "log")
    stamp = datetime(2026, 3, 1, 12, 30, 0, 123456, tzinfo=UTC)
    values = {
        "key": [np.int64(7), 8],  # NumPy scalars from caller-built rows are logged as numbers
        "f": [math.nan, -math.inf],
        "i": [2**62, None],
        "b": [True, False],
        "s": ['é\n"x"', ""],
        "raw": [b"\x00\xff", None],
        "ts": [stamp, None],
    }
    assert log.append(result(values, ["f", "i", "b", "s", "raw", "ts"], stamp)) == 2
    log.close()
    data = read_served(None, folder=tmp_path / "log").to_pydict()
    assert data["key"] == [7, 8]
    assert math.isnan(data["f"][0])
    assert data["f"][1] == -math.inf
    assert data["i"] == [2**62, None]
    assert data["b"] == [True, False]
    assert data["s"] == ['é\n"x"', ""]
    assert data["raw"] == [b"\x00\xff", None]
    assert data["ts"] == [stamp, None]
    assert data["request_time"] == [stamp, stamp]


def test_a_cut_last_line_is_skipped_and_a_damaged_one_refused(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    log = ServedLog(folder)
    for value in (1.0, 2.0, 3.0):
        log.append(result({"k": [1], "x": [value]}, ["x"], END))
    log.close()
    [segment] = segments(folder)
    text = segment.read_bytes()
    segment.write_bytes(text[:-9])  # a crash in the middle of the last write
    assert read_served(None, folder=folder)["x"].to_pylist() == [1.0, 2.0]
    lines = text.split(b"\n")
    segment.write_bytes(b"\n".join([lines[0], lines[1][:20], lines[2], b""]))
    with pytest.raises(StoreError, match="malformed line 2"):
        read_served(None, folder=folder)


def test_a_forked_writer_opens_its_own_segment(tmp_path: Path) -> None:
    import os

    log = ServedLog(tmp_path / "log")
    log.append(result({"k": [1], "x": [1.0]}, ["x"], END))
    pid = os.fork()
    if pid == 0:  # the child: log one row and leave at once
        try:
            log.append(result({"k": [2], "x": [2.0]}, ["x"], END))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    log.append(result({"k": [3], "x": [3.0]}, ["x"], END))
    log.close()
    files = segments(tmp_path / "log")
    assert len(files) == 2
    assert sorted(read_served(None, folder=tmp_path / "log")["k"].to_pylist()) == [1, 2, 3]
    assert {f.name.split("-")[0] for f in files} == {str(os.getpid()), str(pid)}
