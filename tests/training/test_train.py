"""`keel.training.train` end to end in a temporary git project: a scikit-learn and a LightGBM
trainer over features from the feature store, with everything the run must record."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.errors import InvalidInputError, NotFoundError
from keel.project import Project, init_project
from keel.tracking.records import RunInfo
from keel.training.evaluate import evaluate
from keel.training.seeding import NondeterminismWarning
from keel.training.train import train

START = pd.Timestamp("2026-01-01", tz="UTC")
VALID_FROM = "2026-02-15"
GIT = {
    "GIT_AUTHOR_NAME": "Keel Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Keel Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}

FEATURES = '''"""Fraud features of the test project."""

from keel.features import Aggregation, DatasetSource, Entity, FeatureService, FeatureView

user = Entity("user", join_keys={"user_id": "int64"})
transactions = DatasetSource(
    "data/transactions.parquet",
    event_timestamp="event_timestamp",
    created_timestamp="created_timestamp",
)
user_spending = FeatureView(
    "user_spending",
    entity=user,
    source=transactions,
    aggregations=[
        Aggregation("amount", "sum", "7d", default=0.0),
        Aggregation("amount", "count", "7d"),
        Aggregation("is_fraud", "mean", "30d", name="user_fraud_rate_30d", default=0.0),
    ],
    owner="risk@example.com",
)
fraud_features = FeatureService(
    "fraud_features", features=[user_spending], owner="risk@example.com"
)
'''

TRAINERS = '''"""Trainers of the test project."""

from dataclasses import dataclass

from keel.training import TimeSplit, TrainingData, deterministic_params, trainer
from features import fraud_features

SPLIT = TimeSplit(valid_from="2026-02-15")


@dataclass
class ForestParams:
    n_estimators: int = 20
    max_depth: int = 4


@trainer(name="fraud-forest", features=fraud_features, label="is_fraud",
         entities="data/transactions.parquet", split=SPLIT)
def forest(training: TrainingData, params: ForestParams):
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(
        n_estimators=params.n_estimators, max_depth=params.max_depth,
        random_state=training.seed, n_jobs=1,
    )
    return model.fit(training.X_train, training.y_train), {"train_rows": len(training.train)}


@trainer(name="fraud-lgbm", features=fraud_features, label="is_fraud",
         entities="data/transactions.parquet", split=SPLIT)
def lgbm(training: TrainingData, params: dict):
    import lightgbm as lgb

    settings = {"n_estimators": 30, "num_leaves": 7, "verbose": -1} | params
    model = lgb.LGBMClassifier(**deterministic_params(settings, seed=training.seed))
    return model.fit(training.X_train, training.y_train)
'''


def transactions(rows: int = 2000, seed: int = 1) -> pd.DataFrame:
    """Card transactions over 60 days; fraud is likelier for big amounts of risky users."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, rows)
    risky = users % 5 == 0
    seconds = np.sort(rng.integers(0, 60 * 86400, rows))
    amount = rng.gamma(2.0, 30.0, rows) * np.where(risky, 2.0, 1.0)
    fraud = rng.random(rows) < np.where(risky, 0.25, 0.03) + (amount > 150) * 0.1
    event = START + pd.to_timedelta(seconds, unit="s")
    return pd.DataFrame(
        {
            "transaction_id": np.arange(rows, dtype=np.int64),
            "user_id": users.astype(np.int64),
            "amount": amount,
            "event_timestamp": event,
            "created_timestamp": event + pd.Timedelta(seconds=1),
            "is_fraud": fraud.astype(np.int64),
        }
    )


def git(root: Path, *args: str) -> str:
    import os

    done = subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **GIT},
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.rstrip()


def make_training_project(root: Path, rows: int = 2000) -> Project:
    """A git project with versioned transactions, registered features.py and train.py."""
    from keel.data import add
    from keel.features.registry import apply_definitions

    init_project(root)
    git(root, "-c", "init.defaultBranch=main", "init", "-q")
    (root / "data").mkdir()
    transactions(rows).to_parquet(root / "data" / "transactions.parquet", index=False)
    project = Project(root, environ={})
    add(project, ["data/transactions.parquet"])
    (root / "features.py").write_text(FEATURES, "utf-8")
    (root / "train.py").write_text(TRAINERS, "utf-8")
    apply_definitions(project)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "Fraud project")
    return project


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = make_training_project(tmp_path / "proj")
    yield proj
    proj.close()


def artifact(project: Project, run: RunInfo, path: str) -> bytes:
    [record] = [a for a in run.artifacts if a.path == path]
    return project.artifacts.get_bytes(record.sha256)


def test_sklearn_trainer_records_the_run_lineage_and_model(project: Project) -> None:
    from keel.data import resolve
    from keel.features.store import FeatureStore
    from keel.registry import lineage
    from keel.tracking.query import get_run

    steps: list[int] = []
    result = train(
        "fraud-forest", params={"max_depth": "3"}, seed=5, project=project, on_step=steps.append
    )
    assert steps == [0, 1, 2, 3, 4]
    assert result.model_version is not None
    assert result.model_version.ref == "fraud-forest@1"
    assert result.model_version.flavor == "sklearn"
    assert result.artifact_sha256 == result.model_version.artifact_sha256
    run = get_run(project, result.run_id)
    assert run.status == "finished"
    assert run.experiment == "fraud-forest"
    assert run.params == {"n_estimators": "20", "max_depth": "3"}
    assert run.tags["keel.trainer"] == "fraud-forest"
    assert run.tags["keel.trainer_file"] == "train.py"
    assert run.tags["keel.kind"] == "train"
    assert run.seeds == {"global": 5}
    assert run.git_commit == git(project.root, "rev-parse", "HEAD")

    record = json.loads(artifact(project, run, "keel/train.json"))
    assert record == result.record
    entities = resolve("data/transactions.parquet", project=project)
    assert {k: record[k] for k in ("trainer", "file", "params", "seed", "data_rev")} == {
        "trainer": "fraud-forest",
        "file": "train.py",
        "params": {"n_estimators": 20, "max_depth": 3},
        "seed": 5,
        "data_rev": None,
    }
    assert record["entities"] == "data/transactions.parquet"
    assert record["entities_sha256"] == entities.sha256
    assert record["label"] == "is_fraud"
    assert record["features"] == ["amount_sum_7d", "amount_count_7d", "user_fraud_rate_30d"]
    assert record["split"]["valid_from"] == "2026-02-15T00:00:00+00:00"
    assert record["threads"]["sklearn"] == 1
    assert record["nondeterminism"] == []

    frame = transactions()
    n_valid = int((frame["event_timestamp"] >= pd.Timestamp(VALID_FROM, tz="UTC")).sum())
    assert record["valid_rows"] == n_valid
    assert record["train_rows"] == len(frame) - n_valid
    validation = pd.read_parquet(io.BytesIO(artifact(project, run, "keel/validation.parquet")))
    assert validation.columns.tolist() == [*record["features"], "is_fraud"]
    assert len(validation) == n_valid
    assert validation["is_fraud"].tolist() == frame["is_fraud"].tolist()[-n_valid:]

    # Metrics: the evaluation on the validation rows, plus what the trainer returned.
    assert set(run.metrics) == {"auc", "log_loss", "average_precision", "accuracy", "train_rows"}
    assert run.metrics["train_rows"] == record["train_rows"]
    assert run.metrics == result.metrics
    from keel.registry.versions import load_model

    model = load_model(project, "fraud-forest@1").raw
    expected = evaluate(model, validation[record["features"]], validation["is_fraud"])
    assert run.metrics["auc"] == pytest.approx(expected["auc"])
    assert 0.5 < run.metrics["auc"] <= 1.0

    trail = lineage(project, "fraud-forest@1")
    assert [d.ref for d in trail.datasets] == [entities.sha256]
    assert trail.datasets[0].details["role"] == "entities"
    with FeatureStore(project) as store:
        version = store.versions["user_spending"]
    assert [v.ref for v in trail.feature_views] == [f"user_spending@{version}"]
    [training_set] = trail.training_sets
    assert training_set.details["rows"] == len(frame)
    assert training_set.details["dataset_versions"] == {
        "data/transactions.parquet": entities.sha256
    }


def test_lightgbm_trainer_is_bit_identical_with_the_same_seed(project: Project) -> None:
    first = train("fraud-lgbm", project=project)
    second = train("fraud-lgbm", project=project)
    other_seed = train(
        "fraud-lgbm", params={"subsample": "0.5", "subsample_freq": "1"}, seed=1, project=project
    )
    assert first.model_version is not None
    assert second.model_version is not None
    assert first.model_version.flavor == "lightgbm"
    assert (first.model_version.version, second.model_version.version) == (1, 2)
    assert first.artifact_sha256 == second.artifact_sha256
    assert first.metrics == second.metrics
    assert other_seed.artifact_sha256 != first.artifact_sha256
    assert first.record["threads"]["lightgbm"] == 1
    assert first.record["params"] == {}
    assert other_seed.record["params"] == {"subsample": 0.5, "subsample_freq": 1}


def test_output_folder_and_reproduce_mode(project: Project, tmp_path: Path) -> None:
    from keel.registry.versions import list_versions
    from keel.tracking.query import get_run

    registered = train("fraud-lgbm", project=project)
    out = tmp_path / "out"
    again = train("fraud-lgbm", project=project, reproduce=True, output=out)
    assert again.model_version is None
    assert again.artifact_sha256 == registered.artifact_sha256
    assert [v.version for v in list_versions(project, "fraud-lgbm")] == [1]
    result = json.loads((out / "result.json").read_text())
    assert result == {
        "run_id": again.run_id,
        "artifact_sha256": registered.artifact_sha256,
        "metrics": registered.metrics,
    }
    assert json.loads((out / "train.json").read_text())["trainer"] == "fraud-lgbm"
    assert (out / "model" / "keel-model.json").is_file()
    run = get_run(project, again.run_id)
    assert (run.experiment, run.tags["keel.kind"]) == ("reproductions", "reproduce")
    with pytest.raises(InvalidInputError, match="is not empty"):
        train("fraud-lgbm", project=project, output=out)


def test_reproduce_mode_accepts_a_past_feature_version(project: Project) -> None:
    """features.py at an older registered version: a plain run refuses it, a reproduction
    (FeatureStore(require_current=False)) builds the training set with it."""
    from keel.features.registry import apply_definitions

    old = (project.root / "features.py").read_text()
    (project.root / "features.py").write_text(old.replace('"7d"', '"3d"'))
    apply_definitions(project)
    (project.root / "features.py").write_text(old)
    with pytest.raises(InvalidInputError, match="has changed since `keel features apply`"):
        train("fraud-lgbm", project=project)
    assert train("fraud-lgbm", project=project, reproduce=True).model_version is None


def test_data_rev_reads_the_entities_at_a_revision(project: Project) -> None:
    from keel.data import add
    from keel.tracking.query import get_run

    def training_inputs(run_id: str) -> dict[str, str]:
        inputs = get_run(project, run_id).inputs
        return {i.kind + ":" + (i.name or ""): i.ref for i in inputs if i.kind != "feature_view"}

    first = git(project.root, "rev-parse", "HEAD")
    before = train("fraud-lgbm", project=project, register=False)
    old_sha = before.record["entities_sha256"]
    transactions(2500, seed=2).to_parquet(project.root / "data/transactions.parquet", index=False)
    add(project, ["data/transactions.parquet"])
    git(project.root, "commit", "-qam", "More data")
    at_rev = train("fraud-lgbm", project=project, data_rev=first, register=False)
    assert at_rev.record["entities_sha256"] == old_sha
    assert at_rev.record["data_rev"] == first
    assert at_rev.record["train_rows"] + at_rev.record["valid_rows"] == 2000
    # The feature views read their dataset at that revision too: the same training set.
    assert training_inputs(at_rev.run_id) == training_inputs(before.run_id)
    now = train("fraud-lgbm", project=project, register=False)
    assert now.record["entities_sha256"] != old_sha
    assert training_inputs(now.run_id) != training_inputs(before.run_id)


def test_bad_input_fails_before_any_run(project: Project) -> None:
    from keel.data.cache import cache_for
    from keel.tracking.query import list_runs

    with pytest.raises(NotFoundError, match=r"'nope' is not declared .* fraud-forest, fraud-lgbm"):
        train("nope", project=project)
    with pytest.raises(InvalidInputError, match="'max_depth' = 'deep' is not a valid int"):
        train("fraud-forest", params={"max_depth": "deep"}, project=project)
    with pytest.raises(InvalidInputError, match="git revision 'nope-rev' not found"):
        train("fraud-forest", data_rev="nope-rev", project=project)
    source = (project.root / "train.py").read_text()
    (project.root / "train.py").write_text(source.replace("2026-02-15", "2027-01-01"))
    with pytest.raises(InvalidInputError, match="leaves no validation rows"):
        train("fraud-forest", project=project)
    (project.root / "train.py").write_text(source)
    # The data version is in no cache and no remote is configured.
    sha = resolve_sha(project)
    cache_for(project).path_of(sha).unlink()
    with pytest.raises(NotFoundError, match="not in the data cache and no data remote"):
        train("fraud-forest", project=project)
    assert list_runs(project) == []


def resolve_sha(project: Project) -> str:
    from keel.data import resolve

    return resolve("data/transactions.parquet", project=project).sha256


def test_an_unseeded_trainer_is_warned(project: Project) -> None:
    source = (project.root / "train.py").read_text()
    (project.root / "train.py").write_text(source.replace("random_state=training.seed,", ""))
    with pytest.warns(NondeterminismWarning, match="RandomForestClassifier has random_state"):
        result = train("fraud-forest", project=project)
    assert result.nondeterminism == result.record["nondeterminism"] != []


EXTRA_TRAINERS = """from keel.training import TimeSplit, trainer

COMMON = dict(features=["user_spending:amount_sum_7d"], entities="data/transactions.parquet",
              split=TimeSplit(valid_fraction=0.25))


@trainer(name="amount", label="amount", **COMMON)
def amount(training, params):
    from sklearn.linear_model import Ridge

    return Ridge(alpha=params.get("alpha", 1.0)).fit(training.X_train, training.y_train)


@trainer(name="nothing", label="is_fraud", **COMMON)
def nothing(training, params):
    return None


@trainer(name="triple", label="is_fraud", **COMMON)
def triple(training, params):
    return 1, 2, 3
"""


def test_another_file_a_regression_and_bad_returns(project: Project) -> None:
    (project.root / "more").mkdir()
    (project.root / "more" / "extra.py").write_text(EXTRA_TRAINERS)
    result = train("amount", params={"alpha": "0.5"}, file="more/extra.py", project=project)
    assert set(result.metrics) == {"rmse", "mae", "r2"}
    assert result.record["file"] == "more/extra.py"
    assert result.record["params"] == {"alpha": 0.5}
    assert result.record["features"] == ["amount_sum_7d"]
    assert result.record["valid_rows"] == pytest.approx(500, abs=40)  # last quarter of 60 days
    assert result.model_version is not None
    with pytest.raises(InvalidInputError, match="returned None; return the fitted model"):
        train("nothing", file="more/extra.py", project=project)
    with pytest.raises(InvalidInputError, match=r"returned a tuple of 3; return the model"):
        train("triple", file="more/extra.py", project=project)
