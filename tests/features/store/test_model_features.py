"""The feature-version check at model load: a model trained inside a run records its feature
views; once the online store serves another version, loading it is refused (or warned)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

import keel
from keel.cli import features_skew
from keel.features.compat import (
    FeatureVersionMismatchError,
    FeatureVersionWarning,
    check_model_features,
)
from keel.features.registry import apply_definitions
from keel.features.store import FeatureStore
from keel.project import Project
from keel.registry.lookup import ModelVersion
from tests.features.store.test_skew import DEFINITIONS, END, make_store

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
Y = np.array([0, 1, 0, 1])


@pytest.fixture
def store(sqlite_project: Project) -> Iterator[FeatureStore]:
    with make_store(sqlite_project) as feature_store:
        yield feature_store


def train(store: FeatureStore, features: list[str]) -> ModelVersion:
    """Build a training set inside a run and register a tiny model from that run."""
    from sklearn.linear_model import LogisticRegression

    entities = pa.table(
        {
            "user_id": pa.array([1, 2, 3, 4], pa.int64()),
            "amount": pa.array([1.0, 2.0, 3.0, 4.0]),
            "event_timestamp": pa.array([END] * 4, pa.timestamp("us", "UTC")),
        }
    )
    with keel.start_run("fraud", project=store.project) as run:
        store.get_training_set(entities, features)
        return run.log_model(LogisticRegression().fit(X, Y), "fraud")


def change_and_materialize(project: Project, definitions: str) -> FeatureStore:
    (project.root / "features.py").write_text(definitions)
    apply_definitions(project)
    changed = FeatureStore(project)
    changed.materialize(end=END)
    return changed


def statuses(store: FeatureStore, ref: str) -> list[tuple[str, str, str]]:
    return [(v.view, v.kind, v.status) for v in check_model_features(store, ref).views]


def test_a_model_matching_the_online_store_loads(store: FeatureStore) -> None:
    model = train(store, ["user_stats:spend", "ratio"])
    check = check_model_features(store, "fraud@1")
    assert check.model == model.ref == "fraud@1"
    assert check.ok
    assert statuses(store, "fraud@1") == [
        ("ratio", "on_demand", "match"),
        ("user_stats", "batch", "match"),
    ]
    [view] = [v for v in check.views if v.view == "user_stats"]
    version = store.versions["user_stats"]
    assert (view.trained, view.online, view.current) == (version, version, version)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = store.load_model("fraud@1")
    assert loaded.flavor == "sklearn"
    assert list(loaded.raw.predict(X)) == list(Y)


def test_a_changed_and_materialized_view_refuses_the_model(
    sqlite_project: Project, store: FeatureStore
) -> None:
    train(store, ["user_stats:spend", "ratio"])
    trained = store.versions["user_stats"]
    with change_and_materialize(sqlite_project, DEFINITIONS.replace('ttl="2d"', 'ttl="3d"')) as new:
        served = new.versions["user_stats"]
        assert served != trained
        assert statuses(new, "fraud@1") == [
            ("ratio", "on_demand", "match"),
            ("user_stats", "batch", "mismatch"),
        ]
        with pytest.raises(FeatureVersionMismatchError) as caught:
            new.load_model("fraud@1")
    message = str(caught.value)
    assert f"user_stats trained {trained[:12]}, online store serves {served[:12]}" in message
    assert "keel features materialize" in message
    assert "Retrain fraud" in message
    assert caught.value.exit_code == 1
    # A newly trained version matches again; the old one stays refused.
    with FeatureStore(sqlite_project) as again:
        assert train(again, ["user_stats:spend"]).version == 2
        assert check_model_features(again, "fraud@2").ok
        assert not check_model_features(again, "fraud@1").ok


def test_warn_mode_loads_with_a_warning(sqlite_project: Project, store: FeatureStore) -> None:
    train(store, ["user_stats:spend"])
    change_and_materialize(sqlite_project, DEFINITIONS.replace('ttl="2d"', 'ttl="3d"')).close()
    warn = Project(
        sqlite_project.root, overrides={"features.on_version_mismatch": "warn"}, environ={}
    )
    try:
        with (
            FeatureStore(warn) as lenient,
            pytest.warns(FeatureVersionWarning, match="user_stats trained") as caught,
        ):
            loaded = lenient.load_model("fraud@1")
    finally:
        warn.close()
    assert loaded.flavor == "sklearn"
    assert len(caught) == 1


def test_a_changed_on_demand_view_and_a_view_missing_online(
    sqlite_project: Project, store: FeatureStore
) -> None:
    train(store, ["user_stats:spend", "ratio"])
    edited = DEFINITIONS.replace("+ 2.0", "+ 3.0")
    with change_and_materialize(sqlite_project, edited) as new:
        assert statuses(new, "fraud@1") == [
            ("ratio", "on_demand", "mismatch"),
            ("user_stats", "batch", "match"),
        ]
        new.online.delete_view("user_stats")
        check = check_model_features(new, "fraud@1")
        assert [v.status for v in check.views] == ["mismatch", "missing"]
        assert "user_stats (trained" in check.describe()
        assert "has nothing in the online store" in check.describe()
        with pytest.raises(FeatureVersionMismatchError, match="ratio trained"):
            new.load_model("fraud@1")


def test_a_model_without_feature_lineage_passes(store: FeatureStore) -> None:
    from sklearn.linear_model import LogisticRegression

    with keel.start_run("plain", project=store.project) as run:
        run.log_model(LogisticRegression().fit(X, Y), "plain")
    check = check_model_features(store, "plain@1")
    assert (check.ok, check.views) == (True, ())
    assert store.load_model("plain@1").flavor == "sklearn"


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


def invoke(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, ["features", "check-model", *args], catch_exceptions=False)


def test_check_model_command(
    cli: typer.Typer, sqlite_project: Project, store: FeatureStore
) -> None:
    train(store, ["user_stats:spend"])
    result = invoke(cli, "fraud@1")
    assert result.exit_code == 0, result.output
    assert "user_stats" in result.output
    assert "match" in result.output
    change_and_materialize(sqlite_project, DEFINITIONS.replace('ttl="2d"', 'ttl="3d"')).close()
    result = invoke(cli, "fraud@1")
    assert result.exit_code == 1
    assert "mismatch" in result.output
    assert "online store serves" in result.output
    data = json.loads(invoke(cli, "fraud@1", "--json").stdout)
    assert (data["model"], data["ok"]) == ("fraud@1", False)
    assert [(v["view"], v["status"]) for v in data["views"]] == [("user_stats", "mismatch")]
