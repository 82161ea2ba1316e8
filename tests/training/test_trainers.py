"""Declaring and loading trainers; seeding, nondeterminism checks and evaluation metrics."""

from __future__ import annotations

import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from keel.errors import InvalidInputError, NotFoundError
from keel.training.evaluate import evaluate, infer_task
from keel.training.seeding import (
    NondeterminismWarning,
    check_determinism,
    deterministic_params,
    seed_everything,
    thread_counts,
)
from keel.training.split import TimeSplit
from keel.training.trainers import Trainer, TrainingData, get_trainer, load_trainers, trainer


@dataclass
class Depth:
    depth: int = 3


def test_the_decorator_builds_a_trainer_with_its_params_schema() -> None:
    @trainer(name="fraud", features=["user:amount"], label="y", entities="data/e.parquet")
    def fraud(training: TrainingData, params: Depth) -> Any:
        return params.depth

    assert isinstance(fraud, Trainer)
    assert (fraud.name, fraud.label, fraud.entities, fraud.timestamp) == (
        "fraud",
        "y",
        "data/e.parquet",
        "event_timestamp",
    )
    assert fraud.split == TimeSplit(valid_fraction=0.2)
    assert fraud.params.model is Depth
    assert fraud.params.defaults == {"depth": 3}
    assert fraud.feature_request == {"features": ["user:amount"]}
    assert fraud(None, Depth(5)) == 5  # type: ignore[arg-type]


def test_a_service_is_requested_by_name() -> None:
    from keel.features import FeatureService

    service = FeatureService("svc", features=["user:amount"])
    made = trainer(name="m", features=service, label="y", entities="e.parquet")(lambda t, p: 1)
    assert made.feature_request == {"service": "svc"}
    assert made.params.model is None  # untyped params: a free dict


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name!"}, "model name 'bad name!' is invalid"),
        ({"label": ""}, "label '' must be a non-empty str"),
        ({"split": "2026-01-01"}, "is not a TimeSplit"),
    ],
)
def test_bad_declarations_are_refused(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"name": "m", "features": ["v:f"], "label": "y", "entities": "e"}
    with pytest.raises(InvalidInputError, match=message):
        trainer(**(args | kwargs))(lambda t, p: None)


def test_the_function_must_take_training_and_params() -> None:
    with pytest.raises(InvalidInputError, match="takes 1 arguments"):
        trainer(name="m", features=["v:f"], label="y", entities="e")(lambda t: None)


def test_training_data_properties() -> None:
    train = pd.DataFrame({"a": [1, 2], "b": [3, 4], "y": [0, 1]})
    valid = pd.DataFrame({"a": [5], "b": [6], "y": [1]})
    data = TrainingData(train, valid, ["a", "b"], "y", seed=9)
    assert data.X_train.columns.tolist() == ["a", "b"]
    assert data.y_train.tolist() == [0, 1]
    assert data.X_valid.to_numpy().tolist() == [[5, 6]]
    assert data.y_valid.tolist() == [1]


def write_project(root: Path, helper_value: int) -> None:
    (root / "helpers.py").write_text(f"VALUE = {helper_value}\n")
    (root / "train.py").write_text(
        "from keel.training import trainer\n"
        "from helpers import VALUE\n"
        "@trainer(name='one', features=['v:f'], label='y', entities='e.parquet')\n"
        "def one(training, params):\n"
        "    return VALUE\n"
        "@trainer(name='two', features=['v:f'], label='y', entities='e.parquet')\n"
        "def two(training, params):\n"
        "    return VALUE\n"
    )


def test_loading_finds_project_modules_and_forgets_them(tmp_path: Path) -> None:
    write_project(tmp_path, 1)
    trainers = load_trainers(tmp_path / "train.py", tmp_path)
    assert sorted(trainers) == ["one", "two"]
    assert trainers["one"](None, {}) == 1  # type: ignore[arg-type]
    assert "helpers" not in sys.modules
    assert str(tmp_path) not in sys.path
    write_project(tmp_path, 2)  # a changed helper is read afresh on the next load
    assert get_trainer("two", tmp_path / "train.py", tmp_path)(None, {}) == 2  # type: ignore[arg-type]


def test_a_same_named_module_from_elsewhere_does_not_stand_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    stranger = types.ModuleType("helpers")
    stranger.VALUE = "another project's"  # type: ignore[attr-defined]
    stranger.__file__ = str(tmp_path / "elsewhere" / "helpers.py")
    monkeypatch.setitem(sys.modules, "helpers", stranger)
    (tmp_path / "proj").mkdir()
    write_project(tmp_path / "proj", 7)
    trainers = load_trainers(tmp_path / "proj" / "train.py", tmp_path / "proj")
    assert trainers["one"](None, {}) == 7  # type: ignore[arg-type]
    assert sys.modules["helpers"] is stranger  # put back as it was


def test_an_unknown_trainer_lists_the_known_ones(tmp_path: Path) -> None:
    write_project(tmp_path, 1)
    with pytest.raises(NotFoundError, match=r"trainer 'three' is not declared .* one, two"):
        get_trainer("three", tmp_path / "train.py", tmp_path)
    with pytest.raises(NotFoundError, match="does not exist; create it"):
        get_trainer("one", tmp_path / "missing.py", tmp_path)


def test_a_broken_trainer_file_names_the_error(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("import does_not_exist_anywhere\n")
    with pytest.raises(InvalidInputError, match="failed while loading: ModuleNotFoundError"):
        load_trainers(tmp_path / "train.py", tmp_path)


# --- seeding ------------------------------------------------------------------------------


def test_seed_everything_repeats_every_generator() -> None:
    rng = seed_everything(11)
    first = (random.random(), np.random.rand(), rng.random())
    rng = seed_everything(11)
    assert (random.random(), np.random.rand(), rng.random()) == first
    seed_everything(12)
    assert random.random() != first[0]
    with pytest.raises(InvalidInputError, match="seed -1 is not an integer"):
        seed_everything(-1)


def test_deterministic_params_keep_the_callers_values() -> None:
    assert deterministic_params({"num_leaves": 7}, seed=3) == {
        "num_leaves": 7,
        "deterministic": True,
        "force_row_wise": True,
        "n_jobs": 1,
        "random_state": 3,
    }
    mine = deterministic_params({"n_jobs": 4, "force_col_wise": True, "random_state": 1}, seed=3)
    assert mine == {"n_jobs": 4, "force_col_wise": True, "random_state": 1, "deterministic": True}
    assert deterministic_params({}, library="xgboost", seed=5) == {"random_state": 5}
    with pytest.raises(InvalidInputError, match="library 'catboost' is unknown"):
        deterministic_params({}, library="catboost")


def test_known_nondeterminism_is_warned() -> None:
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with pytest.warns(NondeterminismWarning, match="n_jobs=4 without deterministic=True"):
        check_determinism(lgb.LGBMClassifier(n_jobs=4))
    with pytest.warns(NondeterminismWarning, match="on the GPU"):
        check_determinism(xgb.XGBClassifier(device="cuda"))
    with pytest.warns(NondeterminismWarning, match="RandomForestClassifier has random_state=None"):
        check_determinism(make_pipeline(StandardScaler(), RandomForestClassifier()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_determinism(lgb.LGBMClassifier(**deterministic_params({}, seed=0))) == []
        assert check_determinism(lgb.LGBMClassifier(n_jobs=1)) == []
        assert check_determinism(xgb.XGBClassifier(random_state=0)) == []
        assert check_determinism(RandomForestClassifier(random_state=0)) == []
        assert check_determinism(LogisticRegression()) == []  # lbfgs uses no randomness
        assert check_determinism(Ridge()) == []
    assert check_determinism(LogisticRegression(solver="saga"), warn=False) == [
        "LogisticRegression has random_state=None: it draws a new seed on each fit — pass "
        "random_state=training.seed"
    ]
    assert check_determinism(Ridge(solver="saga"), warn=False) != []


def test_thread_counts_record_the_environment_and_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lightgbm as lgb

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    counts = thread_counts(lgb.LGBMClassifier(n_jobs=2))
    assert counts["omp"] == "3"
    assert counts["lightgbm"] == 2
    assert isinstance(counts["cpu_count"], int)
    assert all({"api", "library", "threads"} <= set(p) for p in counts["threadpools"])


# --- evaluation ---------------------------------------------------------------------------


def test_classification_and_regression_metrics() -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    y = pd.Series([0, 0, 0, 1, 1, 1])
    classifier = LogisticRegression().fit(x, y)
    assert infer_task(classifier) == "classification"
    metrics = evaluate(classifier, x, y)
    assert sorted(metrics) == ["accuracy", "auc", "average_precision", "log_loss"]
    assert metrics["auc"] == 1.0
    assert metrics["accuracy"] == 1.0
    regressor = LinearRegression().fit(x, 2 * x["a"] + 1)
    scores = evaluate(regressor, x, 2 * x["a"] + 1)
    assert sorted(scores) == ["mae", "r2", "rmse"]
    assert scores["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert scores["r2"] == pytest.approx(1.0)
    with pytest.raises(InvalidInputError, match="task 'ranking' is unknown"):
        evaluate(regressor, x, y, task="ranking")
    with pytest.raises(InvalidInputError, match="validation set is empty"):
        evaluate(regressor, x.head(0), y.head(0))
