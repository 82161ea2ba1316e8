"""Pushing rows: served online at once, appended to the offline data, refused whole when bad."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.errors import InvalidInputError
from keel.features.registry import apply_definitions
from keel.features.store import FeatureStore
from keel.project import Project

DEFINITIONS = """
from keel.features.definitions import Entity, FeatureView, Field
from keel.features.sources import ParquetSource

user = Entity("user", join_keys={"user_id": "int64"})
user_stats = FeatureView(
    "user_stats",
    entity=user,
    source=ParquetSource("data/users", event_timestamp="event_ts"),
    features=[Field("spend", "float64", default=-1.0)],
    owner="risk",
)
single = FeatureView(
    "single",
    entity=user,
    source=ParquetSource("data/one.parquet", event_timestamp="event_ts"),
    features=[Field("spend", "float64")],
    owner="risk",
)
"""

T1 = datetime(2026, 3, 1, tzinfo=UTC)
T2 = datetime(2026, 3, 2, tzinfo=UTC)


def frame(users: list[int], times: list[datetime], spend: list[float]) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event_ts": pa.array(times, pa.timestamp("us", "UTC")),
            "spend": pa.array(spend, pa.float64()),
            "note": ["x"] * len(users),
        }
    )


@pytest.fixture
def store(sqlite_project: Project) -> Iterator[FeatureStore]:
    root = sqlite_project.root
    (root / "data" / "users").mkdir(parents=True)
    pq.write_table(frame([1], [T1], [1.0]).drop(["note"]), root / "data" / "users" / "a.parquet")
    pq.write_table(frame([1], [T1], [1.0]).drop(["note"]), root / "data" / "one.parquet")
    (root / "features.py").write_text(DEFINITIONS)
    apply_definitions(sqlite_project)
    with FeatureStore(sqlite_project) as feature_store:
        yield feature_store


def test_pushed_rows_are_served_and_join_training_sets(store: FeatureStore) -> None:
    store.materialize(end=T1)
    assert store.push("user_stats", frame([1, 2], [T2, T2], [5.0, 7.0])) == 2
    rows = store.online.read("user_stats", [(1,), (2,)], ["spend"])
    assert rows.values == [(5.0,), (7.0,)]
    folder = store.project.root / "data" / "users"
    pushed = [p for p in folder.iterdir() if p.name.startswith("push-")]
    assert len(pushed) == 1
    assert not list(folder.glob(".*.tmp"))
    assert pq.read_table(pushed[0]).column_names == ["user_id", "event_ts", "spend"]
    entities = pa.table(
        {
            "user_id": pa.array([1, 2], pa.int64()),
            "ts": pa.array([T2, T1], pa.timestamp("us", "UTC")),
        }
    )
    table = store.get_training_set(entities, ["user_stats:spend"], timestamp_column="ts").table
    assert table.column("spend").to_pylist() == [5.0, -1.0]


def test_a_bad_push_writes_nothing(store: FeatureStore) -> None:
    folder = store.project.root / "data" / "users"
    before = sorted(folder.iterdir())
    naive = frame([1], [T2], [5.0]).set_column(
        1, "event_ts", pa.array([T2.replace(tzinfo=None)], pa.timestamp("us"))
    )
    with pytest.raises(InvalidInputError, match="naive timestamps"):
        store.push("user_stats", naive)
    with pytest.raises(InvalidInputError, match="spend"):
        store.push("user_stats", frame([1], [T2], [5.0]).drop(["spend"]))
    with pytest.raises(InvalidInputError, match="cannot be stored"):
        store.push("user_stats", frame([1], [T2], [5.0]).set_column(2, "spend", pa.array(["a"])))
    with pytest.raises(InvalidInputError, match="point the view's source at a folder"):
        store.push("single", frame([1], [T2], [5.0]))
    with pytest.raises(InvalidInputError, match="not defined"):
        store.push("nope", frame([1], [T2], [5.0]))
    assert sorted(folder.iterdir()) == before
