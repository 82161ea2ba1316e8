"""The contract every flavor implements, and helpers they share.

A flavor knows one kind of model object: whether it can save it (``can_save``), how to write it
to a folder in the library's own format (``save``), and how to read it back into a
``FlavorModel`` that predicts (``load``). Flavor modules import their library inside these
methods only, so that ``import keel`` stays fast and detection never imports a library the
model does not come from.
"""

from __future__ import annotations

import importlib
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from keel.errors import FlavorError

# Distribution name → import name, where they differ.
_IMPORT_NAMES = {"scikit-learn": "sklearn"}


class LibraryVersionWarning(UserWarning):
    """Emitted when a model is loaded under library versions other than the ones it was saved
    with: its predictions may differ from the ones measured at training time."""


Predict = Callable[[Any], Any]


@dataclass(frozen=True)
class FlavorModel:
    """A loaded model as a flavor hands it over: the library object and how to predict."""

    raw: object
    predict: Predict
    predict_proba: Predict | None = None
    # Why predict_proba is missing, for the error message.
    no_proba_reason: str = "the model has no predict_proba"


@dataclass(frozen=True)
class SavedModel:
    """What ``Flavor.save`` reports: JSON-safe flavor data and the library versions used."""

    data: dict[str, Any]
    library_versions: dict[str, str] = field(default_factory=dict)


class Flavor(ABC):
    """One kind of model: detect it, save it to a folder, load it back."""

    name: ClassVar[str]
    # What the flavor handles, for error messages ("lightgbm.Booster or an LGBMModel").
    handles: ClassVar[str]

    @abstractmethod
    def can_save(self, model: object) -> bool:
        """Whether this flavor can save ``model``; must not import a library needlessly."""

    @abstractmethod
    def save(self, model: object, directory: Path) -> SavedModel:
        """Write the model's files into ``directory`` and return the flavor data."""

    @abstractmethod
    def load(self, directory: Path, data: Mapping[str, Any]) -> FlavorModel:
        """Read back what ``save`` wrote; ``data`` is the flavor data it returned."""


def comes_from(model: object, package: str) -> bool:
    """Whether any class of the model's MRO is defined in ``package`` (or a submodule)."""
    return any(cls.__module__.split(".")[0] == package for cls in type(model).__mro__)


def import_library(name: str) -> Any:
    """Import a library by its distribution name, or raise FlavorError with an install hint."""
    module = _IMPORT_NAMES.get(name, name)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FlavorError(
            f"this model needs the {name} library, which is not installed; "
            f"install it with `pip install {name}` (or `pip install 'keel[ml]'`)"
        ) from exc


def library_version(name: str) -> str:
    """The installed version of a library (by distribution name), importing it if needed."""
    return str(getattr(import_library(name), "__version__", "unknown"))


def versions_of(*names: str) -> dict[str, str]:
    return {name: library_version(name) for name in names}


def type_name(model: object) -> str:
    """``module.QualName`` of the model's class, as error messages and keel-model.json show it."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def write_pickle(model: object, path: Path) -> None:
    """Pickle with cloudpickle, which also handles lambdas and classes defined in a notebook."""
    import cloudpickle

    try:
        payload = cloudpickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise FlavorError(
            f"cannot pickle the {type_name(model)} model: {exc}; it (or something it refers "
            "to, such as an open file, lock or connection) is not picklable"
        ) from exc
    path.write_bytes(payload)


def require_fitted(model: object) -> None:
    """Refuse an unfitted scikit-learn-style estimator: it could never predict."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise FlavorError(
            f"the {type(model).__name__} model is not fitted; call .fit() before saving it"
        ) from exc


def read_pickle(path: Path) -> object:
    # cloudpickle writes standard pickles; loading needs only the libraries they reference.
    return pickle.loads(path.read_bytes())


def proba_of(model: object) -> Predict | None:
    """The model's ``predict_proba`` when it has one that works (sklearn hides it on some)."""
    # getattr's default also covers sklearn's available_if, which raises AttributeError for
    # e.g. an SVC fitted without probability=True.
    method = getattr(model, "predict_proba", None)
    return method if callable(method) else None
