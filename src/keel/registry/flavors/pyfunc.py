"""pyfunc flavor: a plain Python callable ``f(DataFrame) -> array``, or any object with
``.predict``, serialized with cloudpickle.

cloudpickle serializes lambdas, closures and classes defined in a notebook by value, so the
loaded model needs no source file; in exchange the file is tied to the Python minor version
(bytecode), which is why a Python mismatch warns at load time. Modules the function imports
must be installed where it is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keel.registry.flavors.base import (
    Flavor,
    FlavorModel,
    SavedModel,
    proba_of,
    read_pickle,
    versions_of,
    write_pickle,
)

MODEL_FILE = "model.pkl"


class PyfuncFlavor(Flavor):
    name = "pyfunc"
    handles = "a Python callable f(DataFrame) -> array, or an object with a .predict method"

    def can_save(self, model: object) -> bool:
        if isinstance(model, type):
            return False  # a class is callable, but calling it builds an instance
        return callable(getattr(model, "predict", None)) or callable(model)

    def save(self, model: object, directory: Path) -> SavedModel:
        write_pickle(model, directory / MODEL_FILE)
        call = "predict" if callable(getattr(model, "predict", None)) else "call"
        return SavedModel(
            data={"file": MODEL_FILE, "format": "cloudpickle", "call": call},
            library_versions=versions_of("cloudpickle", "numpy", "pandas"),
        )

    def load(self, directory: Path, data: Mapping[str, Any]) -> FlavorModel:
        model: Any = read_pickle(directory / str(data["file"]))
        if data["call"] == "predict":
            return FlavorModel(
                raw=model,
                predict=model.predict,
                predict_proba=proba_of(model),
                no_proba_reason=f"{type(model).__name__} has no predict_proba method",
            )
        return FlavorModel(
            raw=model,
            predict=model,
            no_proba_reason="a plain function has no predict_proba; wrap it in a class with one",
        )


FLAVOR = PyfuncFlavor()
