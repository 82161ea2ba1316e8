"""The feature-version check at model load: a model serves correctly only with the feature
definitions it was trained on.

A model's lineage names the ``view@version`` of every feature view its training sets used
(recorded by `FeatureStore.get_training_set` inside a run). `check_model_features` compares each
with the version the online store holds (the version of the view's most recent write) and with
the version registered now:

- ``match``: the online store serves the trained version (an on-demand view, computed at
  request time, matches when its registered version is the trained one);
- ``mismatch``: it serves another version — the definition changed and was materialized, or the
  model was trained on a definition never materialized;
- ``missing``: the online store has nothing of the view (never materialized or pushed, or
  no longer registered).

`FeatureStore.load_model` runs the check first and, on any mismatch or missing view, refuses
(`FeatureVersionMismatchError`) or warns (`FeatureVersionWarning`) as
``features.on_version_mismatch`` says.

    check = check_model_features(store, "fraud@champion")
    check.ok, [(v.view, v.status) for v in check.views]   # (True, [('user_stats', 'match')])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keel.errors import InvalidInputError, StateError

if TYPE_CHECKING:
    from keel.features.store import FeatureStore
    from keel.registry.lineage import LineageInput
    from keel.registry.loaded import LoadedModel

MATCH, MISMATCH, MISSING = "match", "mismatch", "missing"
ON_DEMAND = "on_demand"


class FeatureVersionMismatchError(StateError):
    """Raised when a model is loaded for serving while the online store holds other versions
    of its feature views than it was trained on (``features.on_version_mismatch: refuse``)."""


class FeatureVersionWarning(UserWarning):
    """Warned instead of FeatureVersionMismatchError under ``on_version_mismatch: warn``."""


@dataclass(frozen=True)
class ViewCheck:
    """One feature view of a model: the version it was trained on, the version the online
    store holds (None: nothing, or an on-demand view) and the registered one (None: not
    registered)."""

    view: str
    trained: str
    online: str | None
    current: str | None
    status: str  # match | mismatch | missing
    kind: str = "batch"  # batch | on_demand


@dataclass(frozen=True)
class FeatureCheck:
    """The result of `check_model_features`: ``ok`` when every view matches.

    >>> check_model_features(store, "fraud@3").describe()  # doctest: +SKIP
    'model fraud@3 matches the online store on 2 feature views'
    """

    model: str  # "name@version"
    views: tuple[ViewCheck, ...]

    @property
    def ok(self) -> bool:
        return all(v.status == MATCH for v in self.views)

    @property
    def problems(self) -> tuple[ViewCheck, ...]:
        return tuple(v for v in self.views if v.status != MATCH)

    def describe(self) -> str:
        if self.ok:
            return f"model {self.model} matches the online store on {len(self.views)} feature views"
        parts = []
        for v in self.problems:
            trained = v.trained[:12]
            if v.status == MISSING:
                parts.append(f"{v.view} (trained {trained}) has nothing in the online store")
            elif v.kind == ON_DEMAND:
                parts.append(f"{v.view} trained {trained}, registered now {_short(v.current)}")
            else:
                parts.append(f"{v.view} trained {trained}, online store serves {_short(v.online)}")
        name = self.model.partition("@")[0]
        return (
            f"model {self.model} was trained on other feature versions than the online store "
            f"serves: {'; '.join(parts)}. Retrain {name} on the current definitions, or "
            "materialize the versions it was trained on (`keel features apply` with its "
            "definitions, then `keel features materialize`)"
        )


def check_model_features(store: FeatureStore, ref: str) -> FeatureCheck:
    """Compare the feature-view versions model version ``ref`` ("fraud@3", "fraud@champion")
    was trained on with the online store's and the registered ones.

    >>> [(v.view, v.trained[:6], v.online[:6], v.status)
    ...  for v in check_model_features(store, "fraud@3").views]  # doctest: +SKIP
    [('user_stats', '3f9c1e', '3f9c1e', 'match')]
    """
    from keel.features.registry import list_feature_views
    from keel.registry.lineage import lineage

    trail = lineage(store.project, ref)
    registered = {info.name: info for info in list_feature_views(store.project)}
    online = store.online.views()
    checks = []
    for item in _nearest_inputs(trail.feature_views):
        view, _, trained = item.ref.rpartition("@")
        if not view or not trained:
            raise InvalidInputError(
                f"model {trail.model.ref} recorded feature input {item.ref!r}, which is not "
                "view@version; record training sets with FeatureStore.get_training_set"
            )
        info = registered.get(view)
        current = None if info is None else info.current_version
        if info is not None and info.kind == ON_DEMAND:
            status = MATCH if current == trained else MISMATCH
            checks.append(ViewCheck(view, trained, None, current, status, ON_DEMAND))
            continue
        served = online.get(view)
        status = MISSING if served is None else (MATCH if served == trained else MISMATCH)
        checks.append(ViewCheck(view, trained, served, current, status))
    return FeatureCheck(trail.model.ref, tuple(checks))


def load_checked_model(store: FeatureStore, ref: str) -> LoadedModel:
    """`FeatureStore.load_model`: check, then refuse or warn per the configuration, then load
    the very version that was checked (an alias moving meanwhile changes nothing)."""
    from keel.registry.versions import load_model

    check = check_model_features(store, ref)
    if not check.ok:
        message = check.describe()
        if store.project.config.features.on_version_mismatch == "warn":
            warnings.warn(message, FeatureVersionWarning, stacklevel=3)
        else:
            raise FeatureVersionMismatchError(
                message + " (or set features.on_version_mismatch: warn to load it anyway)"
            )
    return load_model(store.project, check.model)


def _nearest_inputs(inputs: list[LineageInput]) -> list[LineageInput]:
    """Per view, the versions recorded by the nearest run: the model's own run wins over a
    parent's (lineage lists the run's inputs first)."""
    chosen: dict[str, str] = {}
    out = []
    for item in inputs:
        view = item.ref.rpartition("@")[0] or item.ref
        if chosen.setdefault(view, item.run_id) == item.run_id:
            out.append(item)
    return out


def _short(version: str | None) -> str:
    return "nothing" if version is None else version[:12]
