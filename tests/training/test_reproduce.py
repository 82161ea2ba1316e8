"""`keel reproduce` end to end: models trained in a temporary git project are rebuilt after
the code, the data and the feature definitions changed on main, and match bit for bit; an
unseeded trainer is reported as not reproduced, with the difference shown."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from rich.console import Console

from keel.cli import output
from keel.cli import reproduce as reproduce_cli
from keel.data import add
from keel.data.cache import cache_for
from keel.errors import InvalidInputError, NotFoundError, StateError
from keel.features.registry import apply_definitions
from keel.project import Project, init_project
from keel.registry.versions import get_model_version, register_model_version
from keel.tracking.query import get_run
from keel.training.envcompare import EnvironmentBuildError
from keel.training.reproduce import ReproductionReport, reproduce, store_settings
from keel.training.seeding import NondeterminismWarning
from keel.training.train import train

GIT = {
    "GIT_AUTHOR_NAME": "Keel Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Keel Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
START = pd.Timestamp("2026-01-01", tz="UTC")

FEATURES = """
from keel.features import Aggregation, DatasetSource, Entity, FeatureService, FeatureView

user = Entity("user", join_keys={"user_id": "int64"})
source = DatasetSource("data/tx.parquet", event_timestamp="event_timestamp")
spend = FeatureView(
    "spend", entity=user, source=source, owner="risk@example.com",
    aggregations=[Aggregation("amount", "sum", "WINDOW", default=0.0),
                  Aggregation("amount", "count", "WINDOW")],
)
fraud_features = FeatureService("fraud_features", features=[spend], owner="risk@example.com")
"""

TRAINERS = """
from keel.training import TimeSplit, deterministic_params, trainer
from features import fraud_features

COMMON = dict(features=fraud_features, label="is_fraud", entities="data/tx.parquet",
              split=TimeSplit(valid_from="2026-02-10"))


@trainer(name="forest", **COMMON)
def forest(training, params: dict):
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=TREES, max_depth=4, random_state=training.seed)
    return model.fit(training.X_train, training.y_train)


@trainer(name="boosted", **COMMON)
def boosted(training, params: dict):
    import lightgbm as lgb

    settings = {"n_estimators": 20, "num_leaves": LEAVES, "verbose": -1} | params
    return lgb.LGBMClassifier(**deterministic_params(settings, seed=training.seed)).fit(
        training.X_train, training.y_train
    )


@trainer(name="unseeded", **COMMON)
def unseeded(training, params: dict):
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    np.random.seed()  # fresh entropy: what Keel seeded is thrown away
    model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=None)
    return model.fit(training.X_train, training.y_train)
"""


def git(root: Path, *args: str) -> str:
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


def transactions(seed: int, rows: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 20, rows)
    amount = rng.gamma(2.0, 30.0, rows) * np.where(users % 4 == 0, 2.0, 1.0)
    fraud = rng.random(rows) < np.where(users % 4 == 0, 0.3, 0.05) + (amount > 150) * 0.1
    seconds = np.sort(rng.integers(0, 50 * 86400, rows))
    return pd.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "amount": amount,
            "event_timestamp": START + pd.to_timedelta(seconds, unit="s"),
            "is_fraud": fraud.astype(np.int64),
        }
    )


def write_code(root: Path, *, window: str, trees: int, leaves: int) -> None:
    (root / "features.py").write_text(FEATURES.replace("WINDOW", window), "utf-8")
    code = TRAINERS.replace("TREES", str(trees)).replace("LEAVES", str(leaves))
    (root / "train.py").write_text(code, "utf-8")


def new_project(root: Path, metadata_url: str | None = None) -> Project:
    """A git project with versioned transactions and registered features, committed."""
    init_project(root)
    git(root, "-c", "init.defaultBranch=main", "init", "-q")
    (root / "data").mkdir()
    transactions(seed=1).to_parquet(root / "data" / "tx.parquet", index=False)
    overrides = {} if metadata_url is None else {"metadata.url": metadata_url}
    project = Project(root, overrides=overrides, environ={})
    add(project, ["data/tx.parquet"])
    write_code(root, window="7d", trees=10, leaves=7)
    apply_definitions(project)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    return project


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """forest@1 (entities read at tag data-v1) and unseeded@1 trained on commit v1; boosted@1
    on v1 plus an uncommitted edit; then main moves on: other data, feature windows, code."""
    project = new_project(tmp_path_factory.mktemp("reproduce") / "proj")
    git(project.root, "tag", "data-v1")
    train("forest", data_rev="data-v1", project=project)
    with pytest.warns(NondeterminismWarning, match="random_state"):
        train("unseeded", project=project)
    write_code(project.root, window="7d", trees=10, leaves=5)  # not committed: in the diff
    train("boosted", project=project)
    transactions(seed=2).to_parquet(project.root / "data" / "tx.parquet", index=False)
    add(project, ["data/tx.parquet"])
    write_code(project.root, window="3d", trees=30, leaves=15)
    apply_definitions(project)
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "v2: new data, features and code")
    yield project
    project.close()


def reproductions(project: Project) -> list[Path]:
    folder = project.keel_dir / "reproduce"
    return sorted(folder.iterdir()) if folder.exists() else []


def run_cli(*args: str) -> int:
    app = typer.Typer()
    reproduce_cli.register(app)
    app.callback()(lambda: None)
    # As keel.cli.main.main runs it: click returns the exit code instead of exiting.
    code = app(args=["reproduce", *args], standalone_mode=False)
    return code if isinstance(code, int) else 0


@pytest.fixture
def cli(trained: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(trained.root))
    monkeypatch.setattr(output, "console", Console(width=200, color_system=None))
    monkeypatch.setattr(output, "err_console", Console(width=200, color_system=None, stderr=True))
    return trained


def test_sklearn_model_is_rebuilt_from_old_code_data_and_features(trained: Project) -> None:
    before = reproductions(trained)
    report = reproduce(trained, "forest@1")

    assert report.status == "identical"
    assert report.reproduced
    version = get_model_version(trained, "forest@1")
    assert report.comparison.new_sha256 == version.artifact_sha256
    assert report.comparison.files == []
    predictions = report.comparison.predictions
    assert predictions is not None
    assert predictions.equal
    assert predictions.rows > 50
    # The old commit, clean; the old data version, not the one on main now.
    recorded = get_run(trained, report.run_id)
    assert report.commit == recorded.git_commit != git(trained.root, "rev-parse", "HEAD")
    assert not report.diff_applied
    (data,) = report.datasets
    assert data.ok
    assert data.path == "data/tx.parquet"
    assert data.recorded != add(trained, ["data/tx.parquet"])[0].sha256
    assert report.environment.identical
    assert not report.isolated_environment
    assert {k: v[0] for k, v in report.metrics.items()} == {
        k: v[1] for k, v in report.metrics.items()
    }
    # The rebuild is a run of its own, in "reproductions", against this project's stores.
    rebuilt = get_run(trained, report.new_run_id)
    assert rebuilt.experiment == "reproductions"
    assert rebuilt.tags["keel.kind"] == "reproduce"
    assert rebuilt.tags["keel.data_rev"] == "data-v1"
    assert rebuilt.git_commit == report.commit
    assert {i.ref for i in rebuilt.inputs if i.kind == "feature_view"} == {
        i.ref for i in recorded.inputs if i.kind == "feature_view"
    }
    assert report.worktree is None
    assert reproductions(trained) == before
    assert ".keel/reproduce" not in git(trained.root, "worktree", "list")


def test_lightgbm_model_with_an_uncommitted_diff_is_rebuilt(
    cli: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("boosted@1", "--json", "--keep") == 0

    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "identical"
    assert shown["reproduced"] is True
    assert shown["diff_applied"] is True
    assert shown["artifact"]["rebuilt"] == get_model_version(cli, "boosted@1").artifact_sha256
    assert shown["predictions"]["differing_rows"] == 0
    assert shown["environment"]["changes"] == {}
    # --keep leaves the worktree: the recorded code, with the uncommitted edit (5 leaves).
    tree = Path(shown["worktree"])
    assert '"num_leaves": 5' in (tree / "train.py").read_text()
    assert (tree / "data" / "tx.parquet").is_file()
    from keel.training.worktree import Worktree, remove_worktree

    remove_worktree(Worktree(tree, cli.root, tree, shown["commit"], True))
    shutil.rmtree(tree.parent)


def test_unseeded_trainer_is_not_reproduced_and_the_difference_is_shown(
    cli: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("unseeded@1") == 1

    shown = capsys.readouterr().out
    assert "NOT REPRODUCED" in shown
    assert "DIFFERENT" in shown
    assert "model.pkl" in shown
    assert "predict_proba on" in shown
    assert "max abs" in shown
    assert "random_state" in shown  # the nondeterminism warned at training time


def test_tolerance_decides_when_the_artifact_differs(trained: Project) -> None:
    report = reproduce(trained, "unseeded@1", rtol=0.0, atol=0.0)
    predictions = report.comparison.predictions
    assert predictions is not None
    assert predictions.differing_rows > 0
    assert 0.0 < predictions.max_abs <= 1.0
    assert report.status == "not reproduced"
    loose: ReproductionReport = dataclasses.replace(report, atol=predictions.max_abs)
    assert loose.status == "within tolerance"
    assert loose.reproduced
    tight = dataclasses.replace(report, atol=predictions.max_abs / 2)
    assert not tight.reproduced
    untold = dataclasses.replace(report, rtol=None, atol=None)
    assert untold.status == "not reproduced"


def test_reproduces_against_postgresql_metadata(tmp_path: Path, pg_url: str) -> None:
    project = new_project(tmp_path / "proj", pg_url)
    try:
        train("forest", project=project)
        report = reproduce(project, "forest@1")
        assert report.status == "identical"
        # The rebuild's run went to the same PostgreSQL database as the original.
        assert get_run(project, report.new_run_id).experiment == "reproductions"
        assert store_settings(project)["metadata.url"] == pg_url
    finally:
        project.close()


def test_store_settings_are_absolute(trained: Project) -> None:
    settings = store_settings(trained)
    assert settings["metadata.url"] == f"sqlite:///{trained.root / '.keel' / 'keel.db'}"
    assert Path(settings["artifacts.url"]).is_absolute()
    assert settings["data.cache"] == str((trained.root / ".keel" / "cache").resolve())


def test_bad_input_is_refused_before_any_work(trained: Project) -> None:
    with pytest.raises(NotFoundError, match="not registered"):
        reproduce(trained, "nope@1")
    with pytest.raises(NotFoundError, match="has no version 9"):
        reproduce(trained, "forest@9")
    before = reproductions(trained)
    with pytest.raises(InvalidInputError, match=r"--rtol -1.0 must be a number >= 0"):
        reproduce(trained, "forest@1", rtol=-1.0)
    assert reproductions(trained) == before


def test_a_lost_dataset_or_commit_is_a_clear_error_before_any_work(tmp_path: Path) -> None:
    project = new_project(tmp_path / "proj")
    try:
        result = train("forest", project=project)
        cache = cache_for(project)
        inputs = get_run(project, result.run_id).inputs
        sha = next(i.ref for i in inputs if i.kind == "dataset")
        stored = cache.path_of(sha)
        hidden = stored.with_name("hidden")
        stored.rename(hidden)
        with pytest.raises(NotFoundError, match=r"data/tx.parquet .* not in the data cache"):
            reproduce(project, "forest@1")
        hidden.rename(stored)
        # History rewritten: the training commit is gone from the repository.
        git(project.root, "commit", "-q", "--amend", "-m", "v1 reworded")
        git(project.root, "reflog", "expire", "--expire=now", "--all")
        git(project.root, "gc", "-q", "--prune=now")
        with pytest.raises(NotFoundError, match="is not in the repository"):
            reproduce(project, "forest@1")
        assert not (project.keel_dir / "reproduce").exists()
    finally:
        project.close()


def test_a_model_registered_without_a_run_cannot_be_reproduced(tmp_path: Path) -> None:
    project = Project(tmp_path, environ={})
    init_project(tmp_path)
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    register_model_version(project, model, "plain")
    try:
        with pytest.raises(StateError, match="registered without a run"):
            reproduce(project, "plain@1")
    finally:
        project.close()


def test_an_environment_that_cannot_be_built_is_a_clear_error(
    trained: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No package index (as offline, without waiting for a network timeout).
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    before = reproductions(trained)
    with pytest.raises(EnvironmentBuildError, match="reproduce without --env"):
        reproduce(trained, "forest@1", env=True)
    assert reproductions(trained) == before
    assert ".keel/reproduce" not in git(trained.root, "worktree", "list")


def test_the_report_names_every_environment_difference(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.tracking.records import EnvironmentRecord
    from keel.training.envcompare import compare_environments
    from keel.training.modelcompare import ModelComparison, compare_predictions

    monkeypatch.setattr(output, "console", Console(width=200, color_system=None))
    old = EnvironmentRecord("a", "3.11.7", "Linux", {"numpy": "2.4.0", "six": "1.16"})
    new = EnvironmentRecord("b", "3.12.1", "Linux", {"numpy": "2.4.1", "torch": "2.9"})
    report = ReproductionReport(
        model="forest@1",
        run_id="r1",
        new_run_id="r2",
        commit="c" * 40,
        diff_applied=False,
        omitted_files=["big.bin"],
        datasets=[],
        environment=compare_environments(old, new),
        isolated_environment=False,
        comparison=ModelComparison(
            "a" * 64, "b" * 64, [], compare_predictions(np.array([0.5]), np.array([0.5]))
        ),
        metrics={"auc": (0.9, 0.9)},
        rtol=1e-6,
    )
    reproduce_cli.print_report(report)
    shown = capsys.readouterr().out
    assert "WITHIN TOLERANCE" in shown
    assert "Python 3.11.7 -> 3.12.1" in shown
    assert "1 changed, 1 added, 1 removed" in shown
    for change in ("numpy 2.4.0 -> 2.4.1", "six 1.16 -> (none)", "torch (none) -> 2.9"):
        assert change in shown
    assert "big.bin" in shown
    environment = reproduce_cli.report_dict(report)["environment"]
    assert isinstance(environment, dict)
    assert environment["changes"] == {
        "numpy": ["2.4.0", "2.4.1"],
        "six": ["1.16", None],
        "torch": [None, "2.9"],
    }
