"""Comparing a rebuilt model with a registered version: package hash, files, predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.ensemble import RandomForestClassifier

from keel.errors import InvalidInputError
from keel.project import Project
from keel.registry.manifest import upload_package
from keel.registry.packaging import save_model
from keel.registry.versions import register_model_version
from keel.training.modelcompare import compare_models, compare_predictions, package_sha256

FEATURES = ["amount", "age"]


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"amount": rng.normal(size=200), "age": rng.integers(18, 80, 200)})
    data["label"] = (data["amount"] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    return data


def forest(frame: pd.DataFrame, seed: int) -> RandomForestClassifier:
    model = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=seed)
    return model.fit(frame[FEATURES], frame["label"])


def saved(model: object, folder: Path, frame: pd.DataFrame) -> Path:
    save_model(model, folder, input_example=frame[FEATURES].head(20))
    return folder


def test_package_hash_is_the_registry_hash(
    sqlite_project: Project, frame: pd.DataFrame, tmp_path: Path
) -> None:
    model = forest(frame, 1)
    folder = saved(model, tmp_path / "model", frame)
    package = save_model(model, tmp_path / "again", input_example=frame[FEATURES].head(20))
    uploaded = upload_package(
        sqlite_project.artifacts,
        folder,
        flavor=package.flavor,
        signature=None if package.signature is None else package.signature.to_dict(),
        library_versions=package.library_versions,
    )
    version = register_model_version(
        sqlite_project, model, "forest", input_example=frame[FEATURES].head(20)
    )
    assert package_sha256(folder) == uploaded == version.artifact_sha256


def test_the_same_model_rebuilt_is_identical(
    sqlite_project: Project, frame: pd.DataFrame, tmp_path: Path
) -> None:
    version = register_model_version(
        sqlite_project, forest(frame, 1), "forest", input_example=frame[FEATURES].head(20)
    )
    rebuilt = saved(forest(frame, 1), tmp_path / "model", frame)
    comparison = compare_models(sqlite_project, version, rebuilt, frame, FEATURES)
    assert comparison.identical
    assert comparison.files == []
    assert comparison.new_sha256 == version.artifact_sha256
    predictions = comparison.predictions
    assert predictions is not None
    assert predictions.output == "predict_proba"
    assert (predictions.rows, predictions.differing_rows, predictions.max_abs) == (200, 0, 0.0)
    assert comparison.warnings == []


def test_another_model_shows_which_file_and_how_far_predictions_moved(
    sqlite_project: Project, frame: pd.DataFrame, tmp_path: Path
) -> None:
    old, new = forest(frame, 1), forest(frame, 2)
    version = register_model_version(
        sqlite_project, old, "forest", input_example=frame[FEATURES].head(20)
    )
    rebuilt = saved(new, tmp_path / "model", frame)
    comparison = compare_models(sqlite_project, version, rebuilt, frame, FEATURES)
    assert not comparison.identical
    assert [f.path for f in comparison.files] == ["model.pkl"]
    predictions = comparison.predictions
    assert predictions is not None
    expected = np.abs(old.predict_proba(frame[FEATURES]) - new.predict_proba(frame[FEATURES]))
    assert predictions.max_abs == pytest.approx(expected.max())
    assert predictions.differing_rows == int((expected > 0).any(axis=1).sum()) > 0
    row, shown_old, shown_new = predictions.examples[0]
    assert shown_old != shown_new
    assert expected[row].max() > 0
    assert predictions.within(0.0, predictions.max_abs)
    assert not predictions.within(0.0, predictions.max_abs / 2)


def test_a_validation_set_without_the_features_is_refused(
    sqlite_project: Project, frame: pd.DataFrame, tmp_path: Path
) -> None:
    version = register_model_version(sqlite_project, forest(frame, 1), "forest")
    rebuilt = saved(forest(frame, 1), tmp_path / "model", frame)
    with pytest.raises(InvalidInputError, match=r"lacks feature columns \['age'\]"):
        compare_models(sqlite_project, version, rebuilt, frame.drop(columns="age"), FEATURES)


def test_prediction_gaps_handle_nan_zero_labels_and_shapes() -> None:
    same_nan = compare_predictions(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert same_nan.equal
    assert same_nan.max_abs == 0.0
    one_nan = compare_predictions(np.array([np.nan, 1.0]), np.array([0.5, 1.0]))
    assert one_nan.differing_rows == 1
    assert one_nan.max_abs == np.inf
    from_zero = compare_predictions(np.array([0.0, 2.0]), np.array([0.1, 2.0]))
    assert from_zero.max_rel == np.inf
    assert from_zero.within(0.0, 0.1)
    labels = compare_predictions(np.array(["a", "b", "c"]), np.array(["a", "x", "c"]))
    assert labels.differing_rows == 1
    assert labels.examples[0][0] == 1
    assert not labels.within(1.0, 1.0)  # labels have no numeric tolerance
    shapes = compare_predictions(np.zeros((3, 2)), np.zeros(3))
    assert shapes.differing_rows == 3
    assert not shapes.within(1.0, 1.0)


values = arrays(
    np.float64, 12, elements=st.floats(-1e6, 1e6) | st.just(np.nan) | st.sampled_from([0.0, 1.0])
)


@given(values, values, st.sampled_from([0.0, 1e-9, 1e-3, 0.5]), st.sampled_from([0.0, 1e-6, 1.0]))
def test_tolerance_follows_numpy_isclose(
    recorded: np.ndarray, new: np.ndarray, rtol: float, atol: float
) -> None:
    diff = compare_predictions(recorded, new)
    expected = np.isclose(new, recorded, rtol=rtol, atol=atol, equal_nan=True).all()
    assert diff.within(rtol, atol) == bool(expected)
    assert diff.equal == bool(np.array_equal(recorded, new, equal_nan=True))
