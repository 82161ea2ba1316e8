"""`apply_definitions` on SQLite and PostgreSQL: versions, history, validation, training sets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from keel.errors import InvalidInputError, NotFoundError
from keel.features.offline import DuckDBEngine, JoinRequest
from keel.features.registry import (
    apply_definitions,
    diff_versions,
    get_feature_view,
    list_feature_views,
    to_view_input,
)
from keel.features.repo import load_definitions
from keel.metadata.schema import feature_view_versions
from keel.project import Project

DEFINITIONS = """
from keel.features.definitions import Aggregation, Entity, FeatureView, Field
from keel.features.sources import ParquetSource

user = Entity("user", join_keys={{"user_id": "int64"}})
user_stats = FeatureView(
    "user_stats",
    entity=user,
    source=ParquetSource({path!r}, event_timestamp="event_ts"{source_extra}),
    features=[Field("amount", {dtype!r}, default=-1.0)],
    aggregations=[Aggregation("amount", "sum", "2d")],
    ttl={ttl!r},
    owner={owner!r},
    description="spend per user",
)
"""


def day(n: int, hour: int = 0) -> datetime:
    return datetime(2026, 1, n, hour, tzinfo=UTC)


def write_data(root: Path, *, tz: str | None = "UTC") -> None:
    times = pa.array([day(1), day(2), day(3), day(1)], pa.timestamp("us", tz))
    table = pa.table(
        {
            "user_id": pa.array([1, 1, 1, 2], pa.int64()),
            "event_ts": times,
            "amount": pa.array([10.0, 20.0, 40.0, 5.0]),
            "note": ["a", "b", "c", "d"],
        }
    )
    (root / "data").mkdir(exist_ok=True)
    pq.write_table(table, root / "data" / "tx.parquet")


def write_defs(root: Path, **changes: object) -> Path:
    values: dict[str, object] = {
        "path": "data/tx.parquet",
        "dtype": "float64",
        "ttl": "3d",
        "owner": "risk",
        "source_extra": "",
    }
    values.update(changes)
    path = root / "features.py"
    path.write_text(DEFINITIONS.format(**values))
    return path


@pytest.fixture
def root(project: Project) -> Path:
    write_data(project.root)
    write_defs(project.root)
    return project.root


def version_count(project: Project) -> int:
    with project.metadata.read() as conn:
        return int(conn.execute(select(func.count()).select_from(feature_view_versions)).scalar())


def test_apply_registers_then_versions_changes(project: Project, root: Path) -> None:
    first = apply_definitions(project)
    assert [(r.name, r.status) for r in first] == [("user_stats", "created")]
    again = apply_definitions(project)
    assert again[0].status == "unchanged"
    assert again[0].version == first[0].version
    assert version_count(project) == 1

    write_defs(root, ttl="5d", owner="fraud")
    changed = apply_definitions(project)
    assert changed[0].status == "updated"
    assert changed[0].previous == first[0].version
    assert version_count(project) == 2
    info = get_feature_view(project, "user_stats")
    assert info.current_version == changed[0].version
    assert info.owner == "fraud"
    assert info.description == "spend per user"
    assert [v.version for v in info.versions] == [first[0].version, changed[0].version]
    assert info.versions[0].definition["ttl_seconds"] == 3 * 86400
    assert info.versions[0].created_by == project.user

    changes = {c.path: (c.old, c.new) for c in diff_versions(project, "user_stats")}
    assert changes == {"owner": ("risk", "fraud"), "ttl_seconds": (3 * 86400.0, 5 * 86400.0)}
    backwards = diff_versions(project, "user_stats", changed[0].version[:8], first[0].version)
    assert {c.path: (c.old, c.new) for c in backwards}["owner"] == ("fraud", "risk")
    assert [v.name for v in list_feature_views(project)] == ["user_stats"]


def test_an_owner_change_keeps_the_version_and_updates_the_metadata(
    project: Project, root: Path
) -> None:
    first = apply_definitions(project)[0]
    write_defs(root, owner="fraud")
    changed = apply_definitions(project)[0]
    assert (changed.status, changed.version) == ("metadata", first.version)
    assert version_count(project) == 1
    info = get_feature_view(project, "user_stats")
    assert info.owner == "fraud"
    assert info.versions[0].definition["owner"] == "fraud"
    assert apply_definitions(project)[0].status == "unchanged"


def test_reverting_reuses_the_old_version(project: Project, root: Path) -> None:
    first = apply_definitions(project)[0].version
    write_defs(root, ttl="5d")
    apply_definitions(project)
    write_defs(root)
    reverted = apply_definitions(project)[0]
    assert reverted.version == first
    assert reverted.status == "updated"
    assert version_count(project) == 2


def test_unknown_view_and_version(project: Project, root: Path) -> None:
    with pytest.raises(NotFoundError, match="'nope' is not registered"):
        get_feature_view(project, "nope")
    apply_definitions(project)
    with pytest.raises(NotFoundError, match="'zzzz' is not one of its versions"):
        diff_versions(project, "user_stats", "zzzz", "yyyy")
    assert diff_versions(project, "user_stats") == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"owner": ""}, "'user_stats' has no owner; pass owner="),
        ({"dtype": "int64"}, "'amount' is declared 'int64' but the source column is 'float64'"),
        ({"path": "data/none*.parquet"}, "matches no Parquet file; fix the source path"),
        ({"source_extra": ", created_timestamp='ingested'"}, "column 'ingested', which the"),
        ({"source_extra": ", created_timestamp='note'"}, "'note' is string, not a timestamp"),
    ],
)
def test_validation_errors_write_nothing(
    project: Project, root: Path, changes: dict[str, object], message: str
) -> None:
    write_defs(root, **changes)
    with pytest.raises(InvalidInputError, match=message) as caught:
        apply_definitions(project)
    assert "feature view 'user_stats'" in str(caught.value)
    assert version_count(project) == 0


def test_naive_timestamps_need_a_time_zone(project: Project, root: Path) -> None:
    write_data(root, tz=None)
    with pytest.raises(InvalidInputError, match="naive timestamps; declare the source's time_z"):
        apply_definitions(project)
    write_defs(root, source_extra=", time_zone='UTC'")
    assert apply_definitions(project)[0].status == "created"


def test_bad_files(project: Project, root: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist; create it"):
        apply_definitions(project, root / "missing.py")
    broken = root / "broken.py"
    broken.write_text("x = 1 / 0\n")
    with pytest.raises(InvalidInputError, match="ZeroDivisionError: division by zero; fix"):
        load_definitions(broken)
    empty = root / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(InvalidInputError, match="declares no FeatureView"):
        apply_definitions(project, empty)


def test_training_set_from_an_applied_view(project: Project, root: Path) -> None:
    apply_definitions(project)
    view = load_definitions(root / "features.py").views[0]
    entities = pa.table(
        {
            "user_id": pa.array([1, 1, 2, 3, 2], pa.int64()),
            "ts": pa.array([day(2, 12), day(3), day(1), day(3), day(5)], pa.timestamp("us", "UTC")),
        }
    )
    request = JoinRequest(entities, (to_view_input(view, project),), timestamp_column="ts")
    table = DuckDBEngine().get_training_set(request)
    assert table.column("amount").to_pylist() == [20.0, 40.0, 5.0, -1.0, -1.0]
    # sum over (T - 2d, T]: day(1) is outside the window of day(3).
    assert table.column("amount_sum_2d").to_pylist() == [30.0, 60.0, 5.0, None, None]


def test_dataset_source_must_be_tracked(project: Project, root: Path) -> None:
    from keel.data import add
    from keel.features.sources import DatasetSource

    source = DatasetSource("data/tx.parquet", event_timestamp="event_ts")
    with pytest.raises(NotFoundError):
        source.resolve(project)
    add(project, ["data/tx.parquet"])
    defs = root / "features.py"
    text = defs.read_text().replace("ParquetSource", "DatasetSource")
    defs.write_text(text)
    assert apply_definitions(project)[0].status == "created"
    assert source.resolve(project) == str(root / "data" / "tx.parquet")
    assert len(source.version(project)) == 64
