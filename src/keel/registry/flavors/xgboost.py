"""XGBoost flavor: a Booster in XGBoost's native UBJSON format, or a pickled XGBModel.

A Booster must use the native format, which XGBoost keeps loadable across versions (a pickled
Booster is not). The scikit-learn wrappers (XGBClassifier, XGBRegressor, XGBRanker) are pickled
like any scikit-learn estimator: the native file does not keep the wrapper's full state (all
hyper-parameters, callbacks, a custom objective), and a wrapper usually travels inside a
Pipeline, which is pickled anyway.
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

BOOSTER_FILE = "model.ubj"
WRAPPER_FILE = "model.pkl"


class XGBoostFlavor(Flavor):
    name = "xgboost"
    handles = "xgboost.Booster and the XGBoost scikit-learn estimators (xgboost.XGBModel)"

    def can_save(self, model: object) -> bool:
        if not comes_from(model, "xgboost"):
            return False
        import xgboost

        return isinstance(model, xgboost.Booster | xgboost.XGBModel)

    def save(self, model: object, directory: Path) -> SavedModel:
        import xgboost

        if isinstance(model, xgboost.Booster):
            model.save_model(str(directory / BOOSTER_FILE))
            return SavedModel(
                data={"kind": "booster", "file": BOOSTER_FILE, "format": "xgboost-ubj"},
                library_versions=versions_of("xgboost", "numpy"),
            )
        require_fitted(model)
        write_pickle(model, directory / WRAPPER_FILE)
        return SavedModel(
            data={"kind": "sklearn", "file": WRAPPER_FILE, "format": "cloudpickle"},
            library_versions=versions_of("xgboost", "numpy", "scikit-learn", "cloudpickle"),
        )

    def load(self, directory: Path, data: Mapping[str, Any]) -> FlavorModel:
        path = directory / str(data["file"])
        if data["kind"] == "sklearn":
            return load_estimator(read_pickle(path))
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))

        def predict(frame: Any) -> Any:
            return booster.predict(xgboost.DMatrix(frame))

        return FlavorModel(
            raw=booster,
            predict=predict,
            no_proba_reason=(
                "an XGBoost Booster has no predict_proba; its predict() already returns "
                "probabilities for classification objectives"
            ),
        )


FLAVOR = XGBoostFlavor()
