"""`apply_definitions` on SQLite and PostgreSQL: versions, history, validation, training sets."""

from __future__ import annotations

import re
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


# --- on-demand views and services --------------------------------------------------------------

ON_DEMAND = """
import numpy as np
from keel.features.ondemand import RequestField, on_demand_feature_view
from keel.features.service import FeatureService

@on_demand_feature_view(
    inputs=["user_stats:amount", "user_stats:amount_sum_2d"],
    request=[RequestField("price", "float64")],
    outputs=[Field("share", "float64")],
    owner={odfv_owner!r},
)
def spend_share(columns):
    return {{"share": {body}}}

fraud = FeatureService("fraud", features=[user_stats, {service_ref!r}], owner="risk")
"""
SHARE = 'columns["price"] / (np.abs(columns["amount_sum_2d"]) + 1.0)'


def write_on_demand(root: Path, **changes: object) -> None:
    values: dict[str, object] = {"odfv_owner": "risk", "body": SHARE, "service_ref": "spend_share"}
    values.update(changes)
    write_defs(root)
    with (root / "features.py").open("a") as handle:
        handle.write(ON_DEMAND.format(**values))


def test_on_demand_views_and_services_are_registered_and_versioned(
    project: Project, root: Path
) -> None:
    write_on_demand(root)
    first = {r.name: r for r in apply_definitions(project)}
    assert {(n, r.kind, r.status) for n, r in first.items()} == {
        ("user_stats", "batch", "created"),
        ("spend_share", "on_demand", "created"),
        ("fraud", "service", "created"),
    }
    kinds = {v.name: (v.kind, v.current_version) for v in list_feature_views(project)}
    assert kinds == {n: (r.kind, r.version) for n, r in first.items()}
    assert {r.status for r in apply_definitions(project)} == {"unchanged"}

    write_on_demand(root, body=SHARE.replace("1.0", "2.0"))  # only the function body
    second = {r.name: r for r in apply_definitions(project)}
    assert (second["spend_share"].status, second["spend_share"].previous) == (
        "updated",
        first["spend_share"].version,
    )
    assert second["user_stats"].status == second["fraud"].status == "unchanged"
    info = get_feature_view(project, "spend_share")
    assert [v.version for v in info.versions] == [
        first["spend_share"].version,
        second["spend_share"].version,
    ]
    assert info.versions[0].definition["inputs"] == [
        "user_stats:amount",
        "user_stats:amount_sum_2d",
    ]
    (change,) = diff_versions(project, "spend_share")
    assert change.path == "source"
    assert "+ 1.0" in change.old
    assert "+ 2.0" in change.new

    write_on_demand(root, body=SHARE.replace("1.0", "2.0"), odfv_owner="fraud-team")
    owner_only = {r.name: r for r in apply_definitions(project)}["spend_share"]
    assert (owner_only.status, owner_only.version) == ("metadata", second["spend_share"].version)
    assert get_feature_view(project, "spend_share").owner == "fraud-team"

    write_on_demand(root, body=SHARE.replace("1.0", "2.0"), service_ref="spend_share:share")
    service = {r.name: r for r in apply_definitions(project)}["fraud"]
    assert (service.status, service.previous) == ("updated", first["fraud"].version)
    stored = get_feature_view(project, "fraud").versions[-1].definition
    assert stored["features"] == ["user_stats", "spend_share:share"]


def test_an_on_demand_view_whose_paths_disagree_is_refused(project: Project, root: Path) -> None:
    write_on_demand(root, body='columns["price"] * len(columns["price"])')
    with pytest.raises(InvalidInputError) as caught:
        apply_definitions(project)
    message = str(caught.value)
    assert "on-demand feature view 'spend_share' gives other values online" in message
    found = re.search(r"first: row 1, 'share' offline (\S+) vs online (\S+) for inputs", message)
    assert found is not None, message
    assert float(found[1]) == 64 * float(found[2])  # 64 rows at once vs one row
    assert version_count(project) == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"body": "columns['nope']"}, "'spend_share' failed on 64 rows: KeyError"),
        (
            {"service_ref": "spend_share:nope"},
            "feature service 'fraud' asks for 'spend_share:nope'",
        ),
        ({"service_ref": "fraud"}, "no feature view 'fraud'"),
        ({"odfv_owner": None}, "on-demand feature view 'spend_share' has no owner"),
    ],
)
def test_invalid_on_demand_views_and_services_write_nothing(
    project: Project, root: Path, changes: dict[str, object], message: str
) -> None:
    write_on_demand(root, **changes)
    with pytest.raises(InvalidInputError, match=message):
        apply_definitions(project)
    assert version_count(project) == 0


def test_names_clash_across_kinds_and_inputs_must_exist(project: Project, root: Path) -> None:
    write_on_demand(root)
    path = root / "features.py"
    path.write_text(path.read_text().replace('"fraud", features', '"user_stats", features'))
    with pytest.raises(InvalidInputError, match="a FeatureView and a FeatureService both named"):
        apply_definitions(project)
    write_on_demand(root)
    path.write_text(path.read_text().replace("user_stats:amount_sum_2d", "user_stats:nope"))
    with pytest.raises(InvalidInputError, match="'user_stats' has no feature 'nope'"):
        apply_definitions(project)


def test_the_definitions_file_comes_from_the_config(project: Project, root: Path) -> None:
    (root / "defs").mkdir()
    (root / "features.py").rename(root / "defs" / "stats.py")
    moved = Project(
        root,
        overrides={
            "metadata.url": project.config.metadata.url,
            "features.definitions": "defs/stats.py",
        },
        environ={},
    )
    try:
        assert [r.status for r in apply_definitions(moved)] == ["created"]
    finally:
        moved.close()
    with pytest.raises(InvalidInputError, match=r"features\.py' does not exist"):
        apply_definitions(project)
