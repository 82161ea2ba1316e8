"""The matrix input path: offered only to numeric models that answer through it exactly as
through the checked DataFrame, and taken only by plain numbers of the signature's types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.registry.array_input import array_input
from keel.registry.loaded import LoadedModel
from keel.registry.packaging import load_model, save_model

COLUMNS = {"visits": "int64", "ratio": "float64", "online": "bool"}


def training_frame(rows: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "visits": rng.integers(0, 40, rows).astype("int64"),
            "ratio": rng.normal(0.0, 3.0, rows),
            "online": rng.integers(0, 2, rows).astype(bool),
        }
    )
    labels = (frame["ratio"] + frame["visits"] / 20 > 1).astype(int).to_numpy()
    return frame, labels


def saved(model: Any, frame: pd.DataFrame, folder: Path) -> LoadedModel:
    save_model(model, folder, input_example=frame.head(3))
    return load_model(folder)


@pytest.fixture(scope="module")
def pipeline_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame, labels = training_frame()
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, labels)
    return saved(model, frame, tmp_path_factory.mktemp("pipe") / "model")


rows_strategy = st.integers(1, 12).flatmap(
    lambda n: st.fixed_dictionaries(
        {
            "visits": st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n),
            "ratio": st.lists(
                st.one_of(st.floats(-1e12, 1e12), st.integers(-(10**9), 10**9)),
                min_size=n,
                max_size=n,
            ),
            "online": st.lists(st.booleans(), min_size=n, max_size=n),
        }
    )
)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy)
def test_the_matrix_answers_exactly_as_the_checked_input(
    pipeline_model: LoadedModel, rows: dict[str, list[Any]]
) -> None:
    fast = array_input(pipeline_model)
    assert fast is not None
    matrix = fast.matrix(rows)
    assert matrix is not None
    assert matrix.shape == (len(rows["visits"]), 3)
    direct = pipeline_model.runtime.predict_proba(matrix)  # type: ignore[misc]
    checked = pipeline_model.predict_proba(rows)
    assert np.array_equal(direct, checked)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("ratio", "1.5"),  # text: the signature converts or refuses it
        ("ratio", None),  # missing
        ("visits", 3.0),  # a float in an integer column is refused by the signature
        ("visits", True),  # a bool is not an integer here
        ("visits", 2**63),  # past int64
        ("online", 1),  # an integer in a boolean column
        ("visits", np.int64(3)),  # not a plain Python number
    ],
)
def test_values_the_signature_must_see_take_the_checked_path(
    pipeline_model: LoadedModel, column: str, value: Any
) -> None:
    fast = array_input(pipeline_model)
    assert fast is not None
    rows: dict[str, list[Any]] = {"visits": [3], "ratio": [0.5], "online": [False]}
    rows[column] = [value]
    assert fast.matrix(rows) is None


def test_a_missing_column_takes_the_checked_path(pipeline_model: LoadedModel) -> None:
    fast = array_input(pipeline_model)
    assert fast is not None
    assert fast.matrix({"visits": [3], "ratio": [0.5]}) is None


def test_a_model_that_selects_columns_by_name_keeps_the_checked_path(tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame, labels = training_frame()
    by_name = ColumnTransformer([("scale", StandardScaler(), ["ratio", "visits"])])
    model = make_pipeline(by_name, LogisticRegression()).fit(frame, labels)
    assert array_input(saved(model, frame, tmp_path / "m")) is None


def test_a_model_reading_columns_in_another_order_keeps_the_checked_path(
    tmp_path: Path,
) -> None:
    # Works on a matrix too, but reads positions its own way: the probe rows tell them apart.
    def score(frame: pd.DataFrame) -> np.ndarray:
        values = np.asarray(frame, dtype=float)
        if isinstance(frame, pd.DataFrame):
            return np.asarray(frame["ratio"] * 2.0 + frame["visits"])
        return values[:, 0] * 2.0 + values[:, 1]

    frame, _ = training_frame()
    model = saved(score, frame, tmp_path / "m")
    assert array_input(model, output="predict") is None


def test_non_numeric_or_narrow_columns_keep_the_checked_path(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    frame, labels = training_frame()
    narrow = frame.astype({"ratio": "float32"})
    model = LogisticRegression().fit(narrow, labels)
    assert array_input(saved(model, narrow, tmp_path / "narrow")) is None

    def constant(data: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(data))

    texts = frame.assign(country="FR")
    assert array_input(saved(constant, texts, tmp_path / "text"), output="predict") is None
