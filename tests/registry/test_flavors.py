"""Flavors: save → load parity per flavor, detection order, errors and version warnings."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from keel.errors import FlavorError, InvalidInputError, SignatureError
from keel.registry.flavors import FLAVOR_NAMES, LibraryVersionWarning, detect_flavor, get_flavor
from keel.registry.packaging import MANIFEST, ModelPackage, load_model, save_model
from keel.registry.signature import ColumnSchema, TensorSpec

# --- data and models (tiny, so the whole file runs in seconds) -------------------------------


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    n = 160
    frame = pd.DataFrame(
        {
            "amount": rng.normal(50, 20, n),
            "age": rng.integers(18, 80, n),
            "score": rng.normal(0, 1, n),
        }
    )
    label = ((frame["amount"] > 55) ^ (frame["score"] > 1)).astype(int)
    countries = pd.Series(rng.choice(["FR", "DE", "US"], n), dtype="str")
    return {
        "train": frame.iloc[:120],
        "test": frame.iloc[120:],
        "y": label.iloc[:120],
        "countries": countries,
    }


def roundtrip(model: object, folder: Path, example: object = None, **kw: Any) -> Any:
    package = save_model(model, folder / "model", input_example=example, **kw)
    loaded = load_model(folder / "model")
    assert loaded.flavor == package.flavor
    assert loaded.signature == package.signature
    assert loaded.library_versions == package.library_versions
    return package, loaded


def assert_same_predictions(loaded: Any, model: Any, frame: Any, proba: bool = True) -> None:
    expected = model.predict(frame)
    assert np.array_equal(loaded.predict(frame), expected)
    if proba:
        assert np.array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


# --- parity per flavor -----------------------------------------------------------------------


def test_sklearn_logistic_regression(data: dict[str, Any], tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(data["train"], data["y"])
    package, loaded = roundtrip(model, tmp_path, data["train"].head(5))
    assert package.flavor == "sklearn"
    assert package.files == ["keel-model.json", "model.pkl"]
    assert set(package.library_versions) == {"scikit-learn", "numpy", "cloudpickle"}
    assert package.signature.outputs == TensorSpec("int64", (-1,))
    assert_same_predictions(loaded, model, data["test"])
    assert type(loaded.raw) is LogisticRegression


def test_sklearn_pipeline_with_column_transformer(data: dict[str, Any], tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.concat([data["train"], data["test"]]).assign(country=data["countries"].to_numpy())
    labels = np.where(frame["amount"] > 50, "fraud", "ok")
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["amount", "age"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["country"]),
                    ]
                ),
            ),
            ("classify", LogisticRegression()),
        ]
    ).fit(frame.iloc[:120], labels[:120])
    package, loaded = roundtrip(pipeline, tmp_path, frame.head(3))
    assert package.flavor == "sklearn"
    assert package.signature.outputs == TensorSpec("str", (-1,))
    held_out = frame.iloc[120:]
    assert_same_predictions(loaded, pipeline, held_out)
    # The request may come as records in any column order, with extra fields.
    records = held_out[["country", "score", "age", "amount"]].assign(note="x").to_dict("records")
    assert np.array_equal(loaded.predict(records), pipeline.predict(held_out))


def test_lightgbm_booster_uses_the_native_text_format(data: dict[str, Any], tmp_path: Path) -> None:
    import lightgbm

    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1}
    booster = lightgbm.train(params, lightgbm.Dataset(data["train"], data["y"]), 5)
    package, loaded = roundtrip(booster, tmp_path, data["train"].head(5))
    assert (package.flavor, package.files) == ("lightgbm", ["keel-model.json", "model.txt"])
    assert "tree" in (tmp_path / "model" / "model.txt").read_text()[:200].lower()
    assert manifest(tmp_path)["flavor_data"]["kind"] == "booster"
    assert set(package.library_versions) == {"lightgbm", "numpy"}
    assert np.array_equal(loaded.predict(data["test"]), booster.predict(data["test"]))
    assert isinstance(loaded.raw, lightgbm.Booster)
    with pytest.raises(FlavorError, match="Booster has no predict_proba"):
        loaded.predict_proba(data["test"])


def test_lightgbm_classifier_is_pickled(data: dict[str, Any], tmp_path: Path) -> None:
    import lightgbm

    model = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1)
    model.fit(data["train"], data["y"])
    package, loaded = roundtrip(model, tmp_path, data["train"].head(5))
    assert (package.flavor, package.files) == ("lightgbm", ["keel-model.json", "model.pkl"])
    assert manifest(tmp_path)["flavor_data"]["kind"] == "sklearn"
    assert set(package.library_versions) >= {"lightgbm", "scikit-learn"}
    assert_same_predictions(loaded, model, data["test"])


def test_xgboost_booster_uses_the_native_format(data: dict[str, Any], tmp_path: Path) -> None:
    import xgboost

    params = {"objective": "binary:logistic", "max_depth": 2, "nthread": 1}
    booster = xgboost.train(params, xgboost.DMatrix(data["train"], data["y"]), 5)
    package, loaded = roundtrip(booster, tmp_path, data["train"].head(5))
    assert (package.flavor, package.files) == ("xgboost", ["keel-model.json", "model.ubj"])
    assert set(package.library_versions) == {"xgboost", "numpy"}
    expected = booster.predict(xgboost.DMatrix(data["test"]))
    assert np.array_equal(loaded.predict(data["test"]), expected)
    with pytest.raises(FlavorError, match="Booster has no predict_proba"):
        loaded.predict_proba(data["test"])


def test_xgboost_classifier_is_pickled(data: dict[str, Any], tmp_path: Path) -> None:
    import xgboost

    model = xgboost.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1)
    model.fit(data["train"], data["y"])
    package, loaded = roundtrip(model, tmp_path, data["train"].head(5))
    assert (package.flavor, package.files) == ("xgboost", ["keel-model.json", "model.pkl"])
    assert manifest(tmp_path)["flavor_data"]["kind"] == "sklearn"
    assert_same_predictions(loaded, model, data["test"])


def test_onnx_model_from_skl2onnx(data: dict[str, Any], tmp_path: Path) -> None:
    import onnxruntime
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    train = data["train"].to_numpy(np.float32)
    proto = to_onnx(LogisticRegression().fit(train, data["y"]), train[:1])
    package, loaded = roundtrip(proto, tmp_path, train[:5])
    assert (package.flavor, package.files) == ("onnx", ["keel-model.json", "model.onnx"])
    assert package.signature.inputs == TensorSpec("float32", (-1, 3))
    assert {"onnxruntime", "numpy", "onnx"} == set(package.library_versions)

    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=PROVIDERS)
    test = data["test"].to_numpy(np.float32)
    labels, zipmap = session.run(None, {"X": test})
    assert np.array_equal(loaded.predict(test), labels)
    proba = loaded.predict_proba(test)
    assert proba.dtype == np.float32
    assert np.array_equal(proba, np.array([[row[0], row[1]] for row in zipmap], np.float32))


def test_onnx_bytes_with_one_input_per_column(data: dict[str, Any], tmp_path: Path) -> None:
    import onnxruntime
    from skl2onnx import to_onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame(
        {
            "amount": data["train"]["amount"].astype(np.float32),
            "country": data["countries"].iloc[:120].to_numpy(),
        }
    )
    prepare = ColumnTransformer(
        [("num", StandardScaler(), ["amount"]), ("cat", OneHotEncoder(), ["country"])]
    )
    pipeline = Pipeline([("prepare", prepare), ("classify", LogisticRegression())])
    pipeline.fit(frame, np.where(frame["amount"] > 50, "fraud", "ok"))
    payload = to_onnx(pipeline, frame[:1], options={"zipmap": False}).SerializeToString()
    package, loaded = roundtrip(payload, tmp_path, frame.head(4))
    assert package.flavor == "onnx"
    assert isinstance(package.signature.inputs, ColumnSchema)

    session = onnxruntime.InferenceSession(payload, providers=PROVIDERS)
    feeds = {
        "amount": frame[["amount"]].to_numpy(),
        "country": frame[["country"]].to_numpy().astype(object),
    }
    labels, proba = session.run(None, feeds)
    assert np.array_equal(loaded.predict(frame), labels)
    assert np.array_equal(loaded.predict_proba(frame), proba)
    assert np.array_equal(loaded.predict(frame), pipeline.predict(frame))


def test_pyfunc_closure(data: dict[str, Any], tmp_path: Path) -> None:
    threshold = 55.0

    def model(frame: pd.DataFrame) -> np.ndarray:
        return (frame["amount"] > threshold).astype(int).to_numpy()

    package, loaded = roundtrip(model, tmp_path, data["train"].head(5))
    assert package.flavor == "pyfunc"
    assert set(package.library_versions) == {"cloudpickle", "numpy", "pandas"}
    assert np.array_equal(loaded.predict(data["test"]), model(data["test"]))
    with pytest.raises(FlavorError, match="plain function has no predict_proba"):
        loaded.predict_proba(data["test"])


def test_pyfunc_lambda_without_signature(data: dict[str, Any], tmp_path: Path) -> None:
    package, loaded = roundtrip(lambda frame: frame["age"].to_numpy() * 2, tmp_path)
    assert package.signature is None
    assert loaded.predict({"age": [1, 2]}).tolist() == [2, 4]
    assert np.array_equal(loaded.predict(data["test"]), data["test"]["age"].to_numpy() * 2)


class Rules:
    """A hand-written model: an object with predict and predict_proba."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(frame)[:, 1] > 0.5).astype(int)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        high = 1 / (1 + np.exp(-(frame["amount"].to_numpy() - self.limit) / 10))
        return np.column_stack([1 - high, high])


def test_pyfunc_class_instance(data: dict[str, Any], tmp_path: Path) -> None:
    model = Rules(limit=52.0)
    package, loaded = roundtrip(model, tmp_path, data["train"].head(5))
    assert package.flavor == "pyfunc"
    assert manifest(tmp_path)["flavor_data"]["call"] == "predict"
    assert_same_predictions(loaded, model, data["test"])
    assert loaded.raw.limit == 52.0


PROVIDERS = ["CPUExecutionProvider"]


def manifest(tmp_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((tmp_path / "model" / MANIFEST).read_text())
    return result


# --- detection -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(data: dict[str, Any]) -> dict[str, Any]:
    """One fitted model of each kind, for detection and error tests."""
    import lightgbm
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = data["train"], data["y"]
    logistic = LogisticRegression().fit(x, y)
    lgbm = lightgbm.LGBMClassifier(n_estimators=2, num_leaves=4, verbose=-1).fit(x, y)
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1}
    onnx_model = to_onnx(logistic, x.to_numpy(np.float32)[:1])
    return {
        "logistic": logistic,
        "linear": LinearRegression().fit(x, y),
        "lgbm_classifier": lgbm,
        "lgbm_booster": lightgbm.train(params, lightgbm.Dataset(x, y), 2),
        "xgb_classifier": xgboost.XGBClassifier(n_estimators=2, max_depth=2).fit(x, y),
        "xgb_booster": xgboost.train({"max_depth": 2}, xgboost.DMatrix(x, y), 2),
        "onnx_proto": onnx_model,
        "onnx_bytes": onnx_model.SerializeToString(),
        "pipeline_with_lgbm": make_pipeline(StandardScaler(), lgbm).fit(x, y),
        "lambda": lambda frame: frame,
        "rules": Rules(1.0),
    }


@pytest.mark.parametrize(
    ("kind", "flavor"),
    [
        ("lgbm_classifier", "lightgbm"),  # also a sklearn estimator with .predict
        ("lgbm_booster", "lightgbm"),
        ("xgb_classifier", "xgboost"),  # also a sklearn estimator with .predict
        ("xgb_booster", "xgboost"),
        ("onnx_proto", "onnx"),
        ("onnx_bytes", "onnx"),
        ("logistic", "sklearn"),  # has .predict, so pyfunc would take it too
        ("pipeline_with_lgbm", "sklearn"),
        ("lambda", "pyfunc"),
        ("rules", "pyfunc"),
    ],
)
def test_detection_order(fitted: dict[str, Any], kind: str, flavor: str) -> None:
    assert detect_flavor(fitted[kind]).name == flavor


def test_flavor_names_are_in_detection_order() -> None:
    assert FLAVOR_NAMES == ("lightgbm", "xgboost", "onnx", "sklearn", "pyfunc")
    assert [get_flavor(name).name for name in FLAVOR_NAMES] == list(FLAVOR_NAMES)


def test_an_explicit_flavor_that_fits_is_used(fitted: dict[str, Any], tmp_path: Path) -> None:
    package = save_model(fitted["logistic"], tmp_path / "m", flavor="pyfunc")
    assert package.flavor == "pyfunc"
    row = pd.DataFrame({"amount": [1.0], "age": [30], "score": [0.0]})
    assert (
        load_model(tmp_path / "m").predict(row).tolist() == fitted["logistic"].predict(row).tolist()
    )


def test_detection_and_import_stay_lazy() -> None:
    """Neither ``import`` nor detecting a plain function loads pandas or an ML library."""
    code = (
        "import sys\n"
        "import keel.registry.packaging\n"
        "heavy = ('pandas', 'sklearn', 'lightgbm', 'xgboost', 'onnxruntime', 'onnx')\n"
        "before = [m for m in heavy if m in sys.modules]\n"
        "from keel.registry.flavors import detect_flavor\n"
        "assert detect_flavor(lambda frame: frame).name == 'pyfunc'\n"
        "print(before, [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[] []"


# --- FlavorError paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "type_name"),
    [
        (42, "builtins.int"),
        ("model.pkl", "builtins.str"),
        (b"not onnx", "builtins.bytes"),
        (Rules, "builtins.type"),
    ],
)
def test_an_object_no_flavor_handles(model: object, type_name: str, tmp_path: Path) -> None:
    with pytest.raises(FlavorError) as caught:
        save_model(model, tmp_path / "m")
    message = str(caught.value)
    assert f"no flavor can save a {type_name}" in message
    assert "supported flavors: lightgbm, xgboost, onnx, sklearn, pyfunc" in message
    assert not (tmp_path / "m").exists()


def test_an_explicit_flavor_that_does_not_fit(fitted: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FlavorError) as caught:
        save_model(fitted["logistic"], tmp_path / "m", flavor="xgboost")
    message = str(caught.value)
    assert (
        "flavor 'xgboost' cannot save a sklearn.linear_model._logistic.LogisticRegression"
        in message
    )
    assert "supported flavors: lightgbm, xgboost, onnx, sklearn, pyfunc" in message
    with pytest.raises(FlavorError, match="unknown flavor 'torch'; supported flavors: lightgbm"):
        save_model(fitted["logistic"], tmp_path / "m", flavor="torch")


def test_unfitted_and_non_predicting_estimators(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    with pytest.raises(FlavorError, match=r"LogisticRegression model is not fitted; call .fit"):
        save_model(LogisticRegression(), tmp_path / "a")
    scaler = StandardScaler().fit(np.zeros((3, 2)))
    with pytest.raises(FlavorError, match="StandardScaler has no predict"):
        save_model(scaler, tmp_path / "b")
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_an_unpicklable_function_leaves_the_folder_empty(tmp_path: Path) -> None:
    lock = threading.Lock()

    def model(frame: pd.DataFrame) -> Any:
        with lock:
            return frame

    (tmp_path / "m").mkdir()
    with pytest.raises(FlavorError, match=r"cannot pickle the .* model"):
        save_model(model, tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == []


def test_predict_proba_missing_is_a_flavor_error(fitted: dict[str, Any], tmp_path: Path) -> None:
    loaded = roundtrip(fitted["linear"], tmp_path)[1]
    assert not loaded.has_predict_proba
    with pytest.raises(FlavorError, match="sklearn model does not support predict_proba"):
        loaded.predict_proba(pd.DataFrame(np.zeros((1, 3)), columns=["amount", "age", "score"]))


# --- save_model / load_model contract --------------------------------------------------------


def test_package_and_manifest(fitted: dict[str, Any], data: dict[str, Any], tmp_path: Path) -> None:
    package = save_model(fitted["logistic"], tmp_path / "model", input_example=data["train"][:2])
    with pytest.raises(AttributeError):
        package.flavor = "pyfunc"  # type: ignore[misc]
    assert isinstance(package, ModelPackage)
    saved = manifest(tmp_path)
    assert saved["format_version"] == 1
    assert saved["flavor"] == "sklearn"
    assert saved["flavor_data"] == {"file": "model.pkl", "format": "cloudpickle"}
    assert saved["model_type"] == "sklearn.linear_model._logistic.LogisticRegression"
    assert saved["python_version"] == platform.python_version()
    assert saved["library_versions"] == package.library_versions
    assert saved["signature"] == package.signature.to_dict()


def test_save_refuses_a_non_empty_folder_or_a_file(fitted: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="busy is not empty"):
        save_model(fitted["logistic"], tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidInputError, match="is a file"):
        save_model(fitted["logistic"], tmp_path / "file")


def test_a_bad_input_example_leaves_nothing(fitted: dict[str, Any], tmp_path: Path) -> None:
    wrong = pd.DataFrame({"unrelated": [1.0, 2.0]})
    with pytest.raises(InvalidInputError, match="failed to predict on input_example"):
        save_model(fitted["logistic"], tmp_path / "m", input_example=wrong)
    assert not (tmp_path / "m").exists()


def test_predict_checks_the_signature(
    fitted: dict[str, Any], data: dict[str, Any], tmp_path: Path
) -> None:
    loaded = roundtrip(fitted["logistic"], tmp_path, data["train"][:5])[1]
    with pytest.raises(SignatureError, match="input is missing column 'amount'"):
        loaded.predict({"age": [30], "score": [0.1]})
    with pytest.raises(SignatureError, match="column 'age' has string values"):
        loaded.predict({"amount": [1.0], "age": ["thirty"], "score": [0.1]})


def test_load_refuses_what_is_not_a_model(fitted: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FlavorError, match="not a Keel model folder"):
        load_model(tmp_path)
    save_model(fitted["logistic"], tmp_path / "model")
    edit_manifest(tmp_path, format_version=99)
    with pytest.raises(FlavorError, match="format version 99, newer than this Keel reads"):
        load_model(tmp_path / "model")
    edit_manifest(tmp_path, format_version=1, flavor="torch")
    with pytest.raises(FlavorError, match="unknown flavor 'torch'"):
        load_model(tmp_path / "model")
    edit_manifest(tmp_path, flavor="sklearn")
    (tmp_path / "model" / "model.pkl").write_bytes(b"truncated")
    with pytest.raises(FlavorError, match=r"cannot load the sklearn model in .*UnpicklingError"):
        load_model(tmp_path / "model")


# --- library version warnings ----------------------------------------------------------------


def edit_manifest(tmp_path: Path, **changes: Any) -> None:
    path = tmp_path / "model" / MANIFEST
    content = json.loads(path.read_text())
    content.update(changes)
    path.write_text(json.dumps(content))


def bumped(version: str, part: int) -> str:
    numbers = [int(p) for p in version.split(".")[:3]]
    numbers[part] += 1
    return ".".join(str(n) for n in numbers)


@pytest.mark.parametrize("part", [0, 1, 2], ids=["major", "minor", "patch"])
def test_a_different_library_version_warns(
    fitted: dict[str, Any], tmp_path: Path, part: int
) -> None:
    import sklearn

    package = save_model(fitted["logistic"], tmp_path / "model")
    recorded = bumped(sklearn.__version__, part)
    edit_manifest(tmp_path, library_versions={**package.library_versions, "scikit-learn": recorded})
    with pytest.warns(LibraryVersionWarning) as caught:
        loaded = load_model(tmp_path / "model")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"saved with scikit-learn {recorded} but scikit-learn {sklearn.__version__}" in message
    assert caught[0].filename == __file__  # points at the caller of load_model
    assert loaded.library_versions["scikit-learn"] == recorded


def test_python_version_warns_on_minor_not_patch(fitted: dict[str, Any], tmp_path: Path) -> None:
    save_model(fitted["logistic"], tmp_path / "model")
    major, minor, *_ = platform.python_version().split(".")
    edit_manifest(tmp_path, python_version=f"{major}.{minor}.999")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(tmp_path / "model")
    edit_manifest(tmp_path, python_version=f"{major}.{int(minor) - 1}.0")
    with pytest.warns(LibraryVersionWarning, match=f"saved with Python {major}.{int(minor) - 1}.0"):
        load_model(tmp_path / "model")


def test_a_missing_library_is_a_flavor_error(fitted: dict[str, Any], tmp_path: Path) -> None:
    package = save_model(fitted["logistic"], tmp_path / "model")
    edit_manifest(
        tmp_path, library_versions={**package.library_versions, "keel-no-such-lib": "1.0"}
    )
    with pytest.raises(
        FlavorError, match="needs the keel-no-such-lib library, which is not installed"
    ):
        load_model(tmp_path / "model")
