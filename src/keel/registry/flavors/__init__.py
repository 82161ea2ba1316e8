"""Flavors: how each kind of model object is saved to a folder and loaded back.

Detection tries the flavors in ``FLAVOR_NAMES`` order and takes the first whose ``can_save``
accepts the object: the LightGBM and XGBoost scikit-learn wrappers are also scikit-learn
estimators, and every estimator has a ``.predict`` that pyfunc would accept, so the specific
flavors come first. Flavor modules are imported only when needed.
"""

from __future__ import annotations

import importlib

from keel.errors import FlavorError
from keel.registry.flavors.base import (
    Flavor,
    FlavorModel,
    LibraryVersionWarning,
    SavedModel,
    type_name,
)

__all__ = [
    "FLAVOR_NAMES",
    "Flavor",
    "FlavorModel",
    "LibraryVersionWarning",
    "SavedModel",
    "detect_flavor",
    "get_flavor",
    "select_flavor",
]

FLAVOR_NAMES = ("lightgbm", "xgboost", "onnx", "sklearn", "pyfunc")


def get_flavor(name: str) -> Flavor:
    """The flavor called ``name``; an unknown name raises FlavorError listing the flavors.

    >>> get_flavor("sklearn").name
    'sklearn'
    """
    if name not in FLAVOR_NAMES:
        raise FlavorError(f"unknown flavor {name!r}; supported flavors: {_supported()}")
    module = importlib.import_module(f"keel.registry.flavors.{name}")
    flavor: Flavor = module.FLAVOR
    return flavor


def detect_flavor(model: object) -> Flavor:
    """The first flavor, in ``FLAVOR_NAMES`` order, that can save ``model``.

    >>> detect_flavor(lambda frame: frame["x"] * 2).name
    'pyfunc'
    """
    for name in FLAVOR_NAMES:
        flavor = get_flavor(name)
        if flavor.can_save(model):
            return flavor
    raise FlavorError(
        f"no flavor can save a {type_name(model)}; supported flavors: {_supported()} "
        "(for any other model, save a function f(DataFrame) -> array or an object with "
        ".predict, which the pyfunc flavor pickles)"
    )


def select_flavor(model: object, name: str | None = None) -> Flavor:
    """``get_flavor(name)`` checked against ``model``, or ``detect_flavor(model)`` if no name."""
    if name is None:
        return detect_flavor(model)
    flavor = get_flavor(name)
    if not flavor.can_save(model):
        raise FlavorError(
            f"flavor {name!r} cannot save a {type_name(model)}: it handles {flavor.handles}; "
            f"supported flavors: {_supported()} (pass flavor=None to detect it)"
        )
    return flavor


def _supported() -> str:
    return ", ".join(FLAVOR_NAMES)
