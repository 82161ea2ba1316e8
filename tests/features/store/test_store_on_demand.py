"""On-demand views and feature services through the store: the same function offline and
online, hidden inputs, request fields, and the lineage a training set leaves in a run."""

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
import numpy as np
from keel.features import (
    Entity, FeatureService, FeatureView, Field, ParquetSource, RequestField,
    on_demand_feature_view,
)

user = Entity("user", join_keys={"user_id": "int64"})
user_stats = FeatureView(
    "user_stats",
    entity=user,
    source=ParquetSource("data/users", event_timestamp="event_ts"),
    features=[Field("spend", "float64", default=0.0), Field("visits", "int64")],
    owner="risk",
)

@on_demand_feature_view(
    inputs=["user_stats:spend"],
    request=[RequestField("amount", "float64")],
    outputs=[Field("amount_ratio", "float64")],
    owner="risk",
)
def ratio(columns):
    return {"amount_ratio": columns["amount"] / (columns["spend"] + 1.0)}

fraud = FeatureService("fraud", features=["user_stats:visits", ratio], owner="risk")
"""

T1 = datetime(2026, 3, 1, tzinfo=UTC)
T2 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def store(sqlite_project: Project) -> Iterator[FeatureStore]:
    root = sqlite_project.root
    (root / "data" / "users").mkdir(parents=True)
    table = pa.table(
        {
            "user_id": pa.array([1, 2], pa.int64()),
            "event_ts": pa.array([T1, T1], pa.timestamp("us", "UTC")),
            "spend": [9.0, 3.0],
            "visits": pa.array([4, 5], pa.int64()),
        }
    )
    pq.write_table(table, root / "data" / "users" / "a.parquet")
    (root / "features.py").write_text(DEFINITIONS)
    apply_definitions(sqlite_project)
    with FeatureStore(sqlite_project) as feature_store:
        yield feature_store


def entities() -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([1, 2, 3], pa.int64()),
            "ts": pa.array([T2] * 3, pa.timestamp("us", "UTC")),
            "amount": [20.0, 8.0, 5.0],
        }
    )


def test_a_service_gives_the_same_values_offline_and_online(store: FeatureStore) -> None:
    training = store.get_training_set(entities(), service="fraud", timestamp_column="ts")
    table = training.table
    assert table.column_names == ["user_id", "ts", "amount", "visits", "amount_ratio"]
    assert table.column("amount_ratio").to_pylist() == [2.0, 2.0, 5.0]  # user 3: default spend
    assert training.features == ("visits", "amount_ratio")
    assert set(training.feature_versions) == {"user_stats", "ratio"}

    store.materialize(start=T1, end=T2)
    rows = [{"user_id": u, "amount": a} for u, a in [(1, 20.0), (2, 8.0), (3, 5.0)]]
    online = store.get_online_features(entity_rows=rows, service="fraud", request_time=T2)
    assert online.to_dict() == {
        "user_id": [1, 2, 3],
        "amount": [20.0, 8.0, 5.0],
        "visits": [4, 5, None],
        "amount_ratio": [2.0, 2.0, 5.0],
    }
    assert online.version("visits") == store.versions["user_stats"]
    assert online.version("visits", 2) is None  # no stored row: the default was served
    assert online.age("visits") == T2 - T1
    assert online.as_of["user_stats"] == T2
    with pytest.raises(TypeError):  # shared by every result of this feature list: read-only
        online.sources["visits"] = "other"  # type: ignore[index]


def test_a_missing_request_field_is_named(store: FeatureStore) -> None:
    store.materialize(start=T1, end=T2)
    with pytest.raises(InvalidInputError, match="amount"):
        store.get_online_features(["ratio"], [{"user_id": 1}], request_time=T2)
    with pytest.raises(InvalidInputError, match="amount"):
        store.get_training_set(
            entities().drop(["amount"]), ["ratio:amount_ratio"], timestamp_column="ts"
        )


def test_a_training_set_in_a_run_records_its_lineage(store: FeatureStore) -> None:
    from keel.tracking.fluent import start_run
    from keel.tracking.query import get_run

    with start_run("fs", project=store.project) as run:
        training = store.get_training_set(entities(), service="fraud", timestamp_column="ts")
    inputs = {(i.kind, i.ref) for i in get_run(store.project, run.id).inputs}
    assert ("training_set", training.fingerprint) in inputs
    assert ("feature_view", f"user_stats@{store.versions['user_stats']}") in inputs
    assert ("feature_view", f"ratio@{store.versions['ratio']}") in inputs
    again = store.get_training_set(entities(), service="fraud", timestamp_column="ts")
    assert again.fingerprint == training.fingerprint
    other = store.get_training_set(entities().slice(0, 2), service="fraud", timestamp_column="ts")
    assert other.fingerprint != training.fingerprint
