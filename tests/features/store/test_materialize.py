"""Materialization into the online store: newest row per key, ttl-bounded start, incremental
runs that pick up new files and late rows, and the record each run leaves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

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
    source=ParquetSource("data/users", event_timestamp="event_ts", created_timestamp="created_ts"),
    features=[Field("spend", "float64", default=-1.0), Field("visits", "int64")],
    ttl="2d",
    owner="risk",
)
"""


def day(n: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, n, hour, tzinfo=UTC)


def write(root: Path, name: str, rows: list[tuple[int, datetime, float | None, int]]) -> None:
    folder = root / "data" / "users"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_ts": pa.array([r[1] for r in rows], pa.timestamp("us", "UTC")),
            "created_ts": pa.array([r[1] for r in rows], pa.timestamp("us", "UTC")),
            "spend": pa.array([r[2] for r in rows], pa.float64()),
            "visits": pa.array([r[3] for r in rows], pa.int64()),
        }
    )
    pq.write_table(table, folder / name)


@pytest.fixture
def store(sqlite_project: Project) -> FeatureStore:
    root = sqlite_project.root
    write(
        root,
        "a.parquet",
        [
            (1, day(1), 10.0, 1),
            (1, day(3), 30.0, 3),
            (1, day(9), 90.0, 9),  # after the end of the first run
            (2, day(2), None, 2),
            (3, day(1, 1), 5.0, 5),  # older than end - ttl
        ],
    )
    (root / "features.py").write_text(DEFINITIONS)
    apply_definitions(sqlite_project)
    with FeatureStore(sqlite_project) as feature_store:
        yield feature_store


def stored(store: FeatureStore, keys: list[int]) -> list[tuple[object, ...] | None]:
    rows = store.online.read("user_stats", [(k,) for k in keys], ["spend", "visits"])
    return rows.values


def test_full_run_writes_the_newest_row_per_key_in_range(store: FeatureStore) -> None:
    [result] = store.materialize(end=day(4))
    assert (result.mode, result.rows_read, result.rows_written) == ("full", 2, 2)
    assert result.start == day(2)  # end - ttl
    assert stored(store, [1, 2, 3]) == [(30.0, 3), (None, 2), None]


def test_an_explicit_start_and_an_inverted_range(store: FeatureStore) -> None:
    [result] = store.materialize(start=day(1), end=day(4))
    assert result.rows_read == 3
    assert stored(store, [3]) == [(5.0, 5)]
    with pytest.raises(InvalidInputError, match="after its end"):
        store.materialize(start=day(5), end=day(4))
    with pytest.raises(InvalidInputError, match="no time zone"):
        store.materialize(end=datetime(2026, 3, 4))


def test_incremental_runs_read_new_files_late_rows_and_newer_events(store: FeatureStore) -> None:
    [first] = store.materialize_incremental(end=day(4))
    assert first.mode == "full"
    # A late file: an old row for user 1 (must not win), a newer one for user 2, a new user.
    write(
        store.project.root,
        "b.parquet",
        [(1, day(2), 20.0, 2), (2, day(3), 7.0, 7), (4, day(3), 1.0, 1)],
    )
    [second] = store.materialize_incremental(end=day(5))
    assert second.mode == "incremental"
    # b.parquet's rows inside [end - ttl, end]: the older row of user 1 is out of range.
    assert second.rows_read == 2
    assert stored(store, [1, 2, 3, 4]) == [(30.0, 3), (7.0, 7), None, (1.0, 1)]
    [third] = store.materialize_incremental(end=day(10))
    assert third.rows_read == 1  # a.parquet's row of day 9, now inside the range
    assert stored(store, [1]) == [(90.0, 9)]
    [fourth] = store.materialize_incremental(end=day(10))
    assert (fourth.mode, fourth.rows_read, fourth.rows_written) == ("incremental", 0, 0)


def test_a_changed_definition_is_materialized_in_full(store: FeatureStore) -> None:
    store.materialize_incremental(end=day(4))
    root = store.project.root
    (root / "features.py").write_text(DEFINITIONS.replace('ttl="2d"', 'ttl="9d"'))
    apply_definitions(store.project)
    with FeatureStore(store.project) as again:
        [result] = again.materialize_incremental(end=day(4))
        assert result.mode == "full"
        assert again.online.views()["user_stats"] == again.versions["user_stats"]
        assert stored(again, [3]) == [(5.0, 5)]


def test_an_unapplied_change_is_refused(sqlite_project: Project, store: FeatureStore) -> None:
    root = sqlite_project.root
    (root / "features.py").write_text(DEFINITIONS.replace('ttl="2d"', 'ttl="3d"'))
    with pytest.raises(InvalidInputError, match="has changed since `keel features apply`"):
        FeatureStore(sqlite_project).materialize(end=day(4))


def test_an_older_registered_version_can_be_used_when_asked(sqlite_project: Project) -> None:
    root = sqlite_project.root
    write(root, "a.parquet", [(1, day(1), 10.0, 1)])
    (root / "features.py").write_text(DEFINITIONS)
    apply_definitions(sqlite_project)
    (root / "features.py").write_text(DEFINITIONS.replace('ttl="2d"', 'ttl="5d"'))
    apply_definitions(sqlite_project)
    (root / "features.py").write_text(DEFINITIONS)  # back to the first, no longer current
    with pytest.raises(InvalidInputError, match="has changed"):
        FeatureStore(sqlite_project).definitions  # noqa: B018
    assert FeatureStore(sqlite_project, require_current=False).definitions.views
    (root / "features.py").write_text(DEFINITIONS.replace('ttl="2d"', 'ttl="7d"'))
    with pytest.raises(InvalidInputError, match="never registered"):
        FeatureStore(sqlite_project, require_current=False).definitions  # noqa: B018
