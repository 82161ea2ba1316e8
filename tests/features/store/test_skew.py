"""Skew check: logged online lookups recomputed through the offline path agree value for value,
and a skewed online store is caught with the right feature, rate and example rows."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from keel.cli import features_skew
from keel.errors import InvalidInputError
from keel.features.online.base import RowBatch
from keel.features.registry import apply_definitions
from keel.features.served_log import read_served
from keel.features.skew import check_skew, same_value
from keel.features.store import FeatureStore
from keel.project import Project

DEFINITIONS = """
from keel.features.definitions import Entity, FeatureView, Field
from keel.features.ondemand import RequestField, on_demand_feature_view
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


@on_demand_feature_view(
    inputs=["user_stats:spend"],
    request=[RequestField("amount", "float64")],
    outputs=[Field("ratio", "float64")],
    owner="risk",
)
def ratio(columns):
    return {"ratio": columns["amount"] / (columns["spend"] + 2.0)}
"""


def day(n: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, n, hour, tzinfo=UTC)


END = day(4)  # materialized up to here; every source row is older
# user, event time, created time, spend, visits
ROWS = [
    (1, day(1), day(1), 10.0, 1),
    (1, day(3), day(3), 30.0, 3),
    (2, day(2, 6), day(2, 6), 2.5, None),
    (3, day(2), day(3, 12), 5.0, 5),  # ingested a day late, still before END
    (4, day(3, 18), day(3, 18), float("nan"), 4),
    (5, day(1), day(1), 7.0, 7),  # older than END - ttl: never served, never joined
]


def write_users(root: Path, rows: list[tuple[object, ...]], name: str = "a.parquet") -> None:
    folder = root / "data" / "users"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_ts": pa.array([r[1] for r in rows], pa.timestamp("us", "UTC")),
            "created_ts": pa.array([r[2] for r in rows], pa.timestamp("us", "UTC")),
            "spend": pa.array([r[3] for r in rows], pa.float64()),
            "visits": pa.array([r[4] for r in rows], pa.int64()),
        }
    )
    pq.write_table(table, folder / name)


def make_store(project: Project, definitions: str = DEFINITIONS) -> FeatureStore:
    """A materialized project: ROWS in data/users, the definitions applied, loaded up to END."""
    write_users(project.root, ROWS)
    (project.root / "features.py").write_text(definitions)
    apply_definitions(project)
    store = FeatureStore(project, log_served=True)
    store.materialize(end=END)
    return store


@pytest.fixture
def store(sqlite_project: Project) -> Iterator[FeatureStore]:
    with make_store(sqlite_project) as feature_store:
        yield feature_store


def skewed_batch() -> RowBatch:
    """User 1's row rewritten with another spend (created later than the materialized row, so
    it replaces it): what a serving-side transformation bug leaves in the online store."""
    return RowBatch(
        keys=[(1,)],
        features={"spend": [31.5], "visits": [3]},
        event_ts=[day(3)],
        created_ts=[day(3, 1)],
    )


def reset_log(store: FeatureStore) -> None:
    store.served_log.close()
    shutil.rmtree(store.served_log.folder, ignore_errors=True)


CALLS = st.lists(
    st.tuples(
        st.integers(0, 4 * 24 * 60),  # request time: minutes after END, across the ttl expiry
        st.lists(st.integers(1, 7), min_size=1, max_size=4),  # users; 6 and 7 are unknown
    ),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(calls=CALLS)
def test_logged_lookups_recompute_to_the_same_values(
    store: FeatureStore, calls: list[tuple[int, list[int]]]
) -> None:
    reset_log(store)
    for minutes, users in calls:
        when = END + timedelta(minutes=minutes)
        store.get_online_features(
            ["user_stats:spend", "user_stats:visits"],
            [{"user_id": u} for u in users],
            request_time=when,
        )
    report = check_skew(store)
    served = sum(len(users) for _, users in calls)
    assert report.rows == served
    assert [(f.feature, f.view, f.rows, f.mismatches) for f in report.features] == [
        ("spend", "user_stats", served, 0),
        ("visits", "user_stats", served, 0),
    ]
    assert report.ok


def test_on_demand_features_and_request_fields_are_recomputed(store: FeatureStore) -> None:
    rows = [{"user_id": 1, "amount": 8.0}, {"user_id": 9, "amount": 3.0}]
    result = store.get_online_features(["ratio"], rows, request_time=day(4, 1))
    assert result.to_dict()["ratio"] == [0.25, 3.0]  # 8 / (30 + 2); 3 / (default -1 + 2)
    store.get_online_features(["user_stats:spend"], [{"user_id": 2}], request_time=day(4, 2))
    report = check_skew(store)
    assert report.rows == 3
    assert [(f.feature, f.rows, f.mismatches) for f in report.features] == [
        ("ratio", 2, 0),
        ("spend", 1, 0),
    ]


def test_a_skewed_online_value_is_caught_with_its_rate_and_example(store: FeatureStore) -> None:
    # Overwrite user 1's spend online (same version, same event time): serving now disagrees.
    version = store.versions["user_stats"]
    batch = skewed_batch()
    store.online.write_batch("user_stats", version, batch)
    entity_rows = [{"user_id": u} for u in (1, 2, 3, 4)]
    store.get_online_features(
        ["user_stats:spend", "user_stats:visits"], entity_rows, request_time=END
    )
    report = check_skew(store)
    spend, visits = report.features
    assert (spend.feature, spend.rows, spend.mismatches, spend.rate) == ("spend", 4, 1, 0.25)
    assert (visits.mismatches, visits.rate) == (0, 0.0)
    [example] = spend.examples
    assert example.entity == {"user_id": 1}
    assert (example.request_time, example.served, example.offline) == (END, 31.5, 30.0)
    assert example.version == version
    assert not report.ok
    assert report.max_rate == 0.25
    # The feature filter and a tolerance wide enough to accept the difference.
    store.get_online_features(["ratio"], [{"user_id": 2, "amount": 1.0}], request_time=END)
    only = check_skew(store, features=["user_stats:visits"])
    assert only.rows == 4  # the rows that served visits, not the ratio request
    assert [f.feature for f in only.features] == ["visits"]
    assert only.ok
    assert check_skew(store, features=["spend"], rel_tol=0.1).ok
    with pytest.raises(InvalidInputError, match="'amount' was not served"):
        check_skew(store, features=["amount"])


def test_a_skewed_transformation_is_caught(sqlite_project: Project) -> None:
    # Serving ran an older transformation (x + 1) of the same version: every live value differs.
    with make_store(sqlite_project) as store:
        version = store.versions["user_stats"]
        keys = [(1,), (2,), (3,)]
        served = {"spend": [31.0, 3.5, 6.0], "visits": [3, None, 5]}
        events = [day(3), day(2, 6), day(2)]
        later = [day(3, 23)] * 3  # a rewrite: same event times, created later, so it wins
        store.online.write_batch("user_stats", version, RowBatch(keys, served, events, later))
        store.get_online_features(
            ["user_stats:spend"], [{"user_id": u} for u in (1, 2, 3, 6)], request_time=END
        )
        [spend] = check_skew(store, examples=2).features
        assert (spend.rows, spend.mismatches, spend.rate) == (4, 3, 0.75)
        assert [(e.entity, e.served, e.offline) for e in spend.examples] == [
            ({"user_id": 1}, 31.0, 30.0),
            ({"user_id": 2}, 3.5, 2.5),
        ]


def test_an_explicit_table_and_a_time_range(store: FeatureStore) -> None:
    store.get_online_features(["user_stats:spend"], [{"user_id": 1}], request_time=END)
    store.get_online_features(["user_stats:spend"], [{"user_id": 2}], request_time=day(5))
    logged = read_served(store.project)
    assert check_skew(store, since=day(4, 12)).rows == 1
    assert check_skew(store, until=day(4, 12)).rows == 1
    # A table from elsewhere (e.g. a serving log) names its features as refs.
    table = logged.select(["request_time", "user_id", "spend"])
    [spend] = check_skew(store, table, features=["user_stats:spend"]).features
    assert (spend.rows, spend.mismatches) == (2, 0)
    assert check_skew(store, table, features=["user_stats:spend"], since=day(5)).rows == 1
    with pytest.raises(InvalidInputError, match="no 'served' column"):
        check_skew(store, table)
    with pytest.raises(InvalidInputError, match="no 'request_time' column"):
        check_skew(store, table.drop(["request_time"]), features=["user_stats:spend"])
    assert check_skew(store, since=day(9)).rows == 0


def test_same_value_semantics() -> None:
    nan = float("nan")
    assert same_value(None, None)
    assert same_value(nan, nan)
    assert same_value(math.inf, math.inf)
    assert not same_value(None, 0.0)
    assert not same_value(nan, 1.0)
    assert not same_value(0.0, None)
    assert same_value(1.0, 1.0 + 1e-12, 1e-9)
    assert not same_value(1.0, 1.0 + 1e-6, 1e-9)
    assert same_value(3, 3.0)
    assert not same_value(True, 1)
    assert same_value(True, True)
    assert not same_value(math.inf, -math.inf, 1.0)
    assert same_value("a", "a")
    assert not same_value(b"a", "a")


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def cli(sqlite_project: Project, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(sqlite_project.root))
    from keel.cli import output

    monkeypatch.setattr(output.console, "width", 250)
    group = typer.Typer()
    features_skew.register(group)
    root = typer.Typer()
    root.callback()(lambda: None)
    root.add_typer(group, name="features")
    return root


def invoke(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["features", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_skew_check_command_exit_codes(cli: typer.Typer, store: FeatureStore) -> None:
    code, out = invoke(cli, "skew-check")
    assert code == 0
    assert "no served feature vectors" in out
    rows = [{"user_id": u} for u in (1, 2, 3, 4)]
    store.get_online_features(["user_stats:spend", "user_stats:visits"], rows, request_time=END)
    store.served_log.close()
    code, out = invoke(cli, "skew-check")
    assert code == 0
    assert "Skew over 4 served rows" in out
    batch = skewed_batch()
    store.online.write_batch("user_stats", store.versions["user_stats"], batch)
    store.get_online_features(["user_stats:spend", "user_stats:visits"], rows, request_time=END)
    code, out = invoke(cli, "skew-check")
    assert code == 1
    assert "31.5" in out
    assert "30.0" in out
    assert "12.50%" in out
    assert "mismatch rate above 0.00% for spend 12.50%" in out
    assert invoke(cli, "skew-check", "--max-rate", "0.2")[0] == 0
    assert invoke(cli, "skew-check", "--feature", "visits")[0] == 0
    assert invoke(cli, "skew-check", "--since", "2026-03-05T00:00:00")[0] == 0
    code, out = invoke(cli, "skew-check", "--json", "--max-rate", "0.5")
    data = json.loads(out)
    spend = data["features"][0]
    assert (data["rows"], data["ok"], spend["feature"], spend["mismatches"]) == (
        8,
        False,
        "spend",
        1,
    )
    assert spend["examples"][0]["served"] == 31.5
    with pytest.raises(InvalidInputError, match=r"--max-rate 2\.0"):
        invoke(cli, "skew-check", "--max-rate", "2")
