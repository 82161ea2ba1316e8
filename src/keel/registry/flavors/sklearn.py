"""scikit-learn flavor: any fitted estimator, Pipelines included, pickled with cloudpickle.

Pickle is scikit-learn's own persistence format; it is tied to the library version, which is
why the versions are stamped in keel-model.json and compared (with a warning) at load time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keel.errors import FlavorError
from keel.registry.flavors.base import (
    Flavor,
    FlavorModel,
    SavedModel,
    comes_from,
    proba_of,
    read_pickle,
    require_fitted,
    type_name,
    versions_of,
    write_pickle,
)

MODEL_FILE = "model.pkl"


class SklearnFlavor(Flavor):
    name = "sklearn"
    handles = "any fitted scikit-learn estimator (sklearn.base.BaseEstimator), Pipelines included"

    def can_save(self, model: object) -> bool:
        if not comes_from(model, "sklearn"):
            return False
        from sklearn.base import BaseEstimator

        return isinstance(model, BaseEstimator)

    def save(self, model: object, directory: Path) -> SavedModel:
        if not callable(getattr(model, "predict", None)):
            raise FlavorError(
                f"{type_name(model)} has no predict(); save an estimator that predicts, "
                "e.g. a Pipeline that ends with a classifier or regressor"
            )
        require_fitted(model)
        write_pickle(model, directory / MODEL_FILE)
        return SavedModel(
            data={"file": MODEL_FILE, "format": "cloudpickle"},
            library_versions=versions_of("scikit-learn", "numpy", "cloudpickle"),
        )

    def load(self, directory: Path, data: Mapping[str, Any]) -> FlavorModel:
        model: Any = read_pickle(directory / str(data["file"]))
        return load_estimator(model)


def load_estimator(model: Any) -> FlavorModel:
    """Wrap an object with the scikit-learn API (predict, maybe predict_proba)."""
    return FlavorModel(
        raw=model,
        predict=model.predict,
        predict_proba=proba_of(model),
        no_proba_reason=f"{type(model).__name__} has no predict_proba (not a classifier?)",
    )


FLAVOR = SklearnFlavor()
