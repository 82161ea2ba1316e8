"""LightGBM flavor: a Booster in LightGBM's native text format, or a pickled LGBMModel.

A Booster must use the native format: it is stable across LightGBM versions and readable by
other tools. The scikit-learn wrappers (LGBMClassifier, LGBMRegressor, LGBMRanker) are pickled
instead, because the native file holds only the trees: the wrapper's fitted state — classes_
(and so string labels), the objective, n_features_in_, feature_names_in_ and the
hyper-parameters — would be lost, and predict() would no longer return class labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keel.registry.flavors.base import (
    Flavor,
    FlavorModel,
    SavedModel,
    comes_from,
    read_pickle,
    require_fitted,
    versions_of,
    write_pickle,
)
from keel.registry.flavors.sklearn import load_estimator

BOOSTER_FILE = "model.txt"
WRAPPER_FILE = "model.pkl"


class LightGBMFlavor(Flavor):
    name = "lightgbm"
    handles = "lightgbm.Booster and the LightGBM scikit-learn estimators (lightgbm.LGBMModel)"

    def can_save(self, model: object) -> bool:
        if not comes_from(model, "lightgbm"):
            return False
        import lightgbm

        return isinstance(model, lightgbm.Booster | lightgbm.LGBMModel)

    def save(self, model: object, directory: Path) -> SavedModel:
        import lightgbm

        if isinstance(model, lightgbm.Booster):
            model.save_model(str(directory / BOOSTER_FILE))
            return SavedModel(
                data={"kind": "booster", "file": BOOSTER_FILE, "format": "lightgbm-text"},
                library_versions=versions_of("lightgbm", "numpy"),
            )
        require_fitted(model)
        write_pickle(model, directory / WRAPPER_FILE)
        return SavedModel(
            data={"kind": "sklearn", "file": WRAPPER_FILE, "format": "cloudpickle"},
            library_versions=versions_of("lightgbm", "numpy", "scikit-learn", "cloudpickle"),
        )

    def load(self, directory: Path, data: Mapping[str, Any]) -> FlavorModel:
        path = directory / str(data["file"])
        if data["kind"] == "sklearn":
            return load_estimator(read_pickle(path))
        import lightgbm

        booster = lightgbm.Booster(model_file=str(path))
        return FlavorModel(
            raw=booster,
            predict=booster.predict,
            no_proba_reason=(
                "a LightGBM Booster has no predict_proba; its predict() already returns "
                "probabilities for classification objectives"
            ),
        )


FLAVOR = LightGBMFlavor()
