"""Windowed aggregations served online equal the offline value at request time, whether the
events came by a full materialization, incremental runs (each event counted once) or a push."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.features.registry import apply_definitions
from keel.features.store import FeatureStore
from keel.project import Project, init_project

DEFINITIONS = """
from keel.features import Aggregation, Entity, FeatureView, ParquetSource

user = Entity("user", join_keys={"user_id": "int64"})
spend = FeatureView(
    "spend",
    entity=user,
    source=ParquetSource("data/tx", event_timestamp="event_ts", created_timestamp="created_ts"),
    aggregations=[
        Aggregation("amount", "sum", "1h", default=0.0),
        Aggregation("amount", "count", "3h"),
        Aggregation("amount", "mean", "3h"),
        Aggregation("amount", "last", "3h"),
        Aggregation("amount", "max", "1h"),
    ],
    owner="risk",
)
"""
T0 = datetime(2026, 1, 1, tzinfo=UTC)
END = T0 + timedelta(hours=6)
USERS = [1, 2, 3]
NAMES = ["amount_sum_1h", "amount_count_3h", "amount_mean_3h", "amount_last_3h", "amount_max_1h"]

events = st.lists(
    st.tuples(
        st.sampled_from(USERS[:2]),
        st.integers(0, 36).map(lambda tenths: T0 + timedelta(minutes=10 * tenths)),
        st.integers(0, 2),
        st.one_of(st.none(), st.integers(-50, 50).map(float)),
    ),
    min_size=1,
    max_size=25,
)


def write(root: Path, name: str, rows: list[tuple]) -> None:
    folder = root / "data" / "tx"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_ts": pa.array([r[1] for r in rows], pa.timestamp("us", "UTC")),
            "created_ts": pa.array(
                [min(r[1] + timedelta(minutes=5 * r[2]), END) for r in rows],
                pa.timestamp("us", "UTC"),
            ),
            "amount": pa.array([r[3] for r in rows], pa.float64()),
        }
    )
    pq.write_table(table, folder / name)


def compare(store: FeatureStore, when: datetime) -> None:
    rows = [{"user_id": u} for u in USERS]
    online = store.get_online_features(["spend"], rows, request_time=when).to_dict()
    entities = pa.table(
        {
            "user_id": pa.array(USERS, pa.int64()),
            "ts": pa.array([when] * len(USERS), pa.timestamp("us", "UTC")),
        }
    )
    offline = store.get_training_set(entities, ["spend"], timestamp_column="ts").table
    for name in NAMES:
        assert online[name] == pytest.approx(offline.column(name).to_pylist(), nan_ok=True), name


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=events,
    second=events,
    offsets=st.lists(st.integers(0, 120), min_size=1, max_size=3),
)
def test_online_aggregations_equal_offline_after_incremental_runs(
    first: list[tuple], second: list[tuple], offsets: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        init_project(root)
        write(root, "a.parquet", first)
        (root / "features.py").write_text(DEFINITIONS)
        project = Project(root, environ={})
        try:
            apply_definitions(project)
            with FeatureStore(project) as store:
                store.materialize_incremental(end=END)
                write(root, "b.parquet", second)  # late data in a new file
                store.materialize_incremental(end=END)
                store.materialize_incremental(end=END)  # nothing new: nothing appended
                for minutes in offsets:
                    compare(store, END + timedelta(minutes=minutes))
        finally:
            project.close()


def test_pushed_events_count_at_once(sqlite_project: Project) -> None:
    root = sqlite_project.root
    write(root, "a.parquet", [(1, T0 + timedelta(hours=5, minutes=30), 0, 10.0)])
    (root / "features.py").write_text(DEFINITIONS)
    apply_definitions(sqlite_project)
    with FeatureStore(sqlite_project) as store:
        store.materialize(end=END)
        pushed = pa.table(
            {
                "user_id": pa.array([1, 3], pa.int64()),
                "event_ts": pa.array([END, END], pa.timestamp("us", "UTC")),
                "created_ts": pa.array([END, END], pa.timestamp("us", "UTC")),
                "amount": [5.0, 7.0],
            }
        )
        store.push("spend", pushed)
        result = store.get_online_features(
            ["spend:amount_sum_1h", "spend:amount_count_3h"],
            [{"user_id": 1}, {"user_id": 3}, {"user_id": 2}],
            request_time=END,
        )
        assert result.to_dict()["amount_sum_1h"] == [15.0, 7.0, 0.0]
        assert result.to_dict()["amount_count_3h"] == [2, 1, 0]
        assert result.version("amount_sum_1h") == store.versions["spend"]
        compare(store, END)
