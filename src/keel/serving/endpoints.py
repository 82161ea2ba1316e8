"""Endpoints: a name bound to one registered model version and, optionally, the feature service
that feeds it, loaded once at server start.

An endpoint's model reference (``fraud@champion``) is resolved to a version number when the
server starts and that exact version is loaded, so an alias moving later changes nothing until
the next start. A model served through a feature service is loaded by the feature store, which
refuses it when the online store serves other feature versions than it was trained on.

    registry = EndpointRegistry.from_config(project, {"fraud": EndpointConfig(model="fraud@1")})
    registry.load()
    registry.get("fraud").version.ref      # 'fraud@1'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.config import EndpointConfig
from keel.errors import InvalidInputError, NotFoundError, StateError

if TYPE_CHECKING:
    from keel.features.store import FeatureStore
    from keel.project import Project
    from keel.registry.array_input import ArrayInput
    from keel.registry.loaded import LoadedModel
    from keel.registry.lookup import ModelVersion

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# Logical column types (see keel.registry.signature) as Open Inference Protocol datatypes.
V2_TYPES = {"integer": "INT64", "float": "FP64", "boolean": "BOOL", "string": "BYTES"}
_MODEL_OUTPUTS = {"probability": "predict_proba", "prediction": "predict"}
_DTYPE_TYPES = {"int": "integer", "uint": "integer", "float": "float", "bool": "boolean"}


@dataclass(frozen=True)
class InputField:
    """One value a client sends per row: an entity key, a request field or a model column."""

    name: str
    type: str  # integer | float | boolean | string | datetime


@dataclass
class Endpoint:
    """A loaded endpoint: its model version, the model, and what a request must carry.

    ``columns`` are the model's input columns in signature order (None: the model has no
    column signature); ``inputs`` are the fields a client sends per row; ``output`` says what
    a prediction is: ``"probability"`` (of the positive class, for a binary classifier with
    ``predict_proba``) or ``"prediction"`` (``predict``'s value); ``keys`` are the feature
    service's entity join keys, which identify a row's unit for traffic splitting; ``fast``
    is the model's verified matrix input path, when it has one (keel.registry.array_input).
    """

    name: str
    model_ref: str
    features: str | None
    version: ModelVersion
    model: LoadedModel
    columns: list[str] | None
    inputs: list[InputField]
    output: str
    store: FeatureStore | None = field(default=None, repr=False)
    keys: list[str] = field(default_factory=list)
    fast: ArrayInput | None = field(default=None, repr=False)


def parse_endpoint_spec(spec: str) -> tuple[str, EndpointConfig]:
    """Read ``NAME=MODEL@ALIAS[:SERVICE]`` (the `keel serve --endpoint` form).

    >>> parse_endpoint_spec("fraud=fraud@champion:fraud_features")
    ('fraud', EndpointConfig(model='fraud@champion', features='fraud_features'))
    """
    name, sep, rest = spec.partition("=")
    model, _, service = rest.partition(":")
    if not sep or not name or not model:
        raise InvalidInputError(
            f"endpoint {spec!r} is not NAME=MODEL@ALIAS[:SERVICE]; "
            "for example fraud=fraud@champion:fraud_features"
        )
    check_endpoint_name(name)
    return name, EndpointConfig(model=model, features=service or None)


def check_endpoint_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInputError(
            f"endpoint name {name!r} is invalid; use letters, digits, '_', '.' or '-' "
            "(at most 128 characters, starting with a letter or digit)"
        )
    return name


class EndpointRegistry:
    """The endpoints one server process serves; ``ready`` once every one has loaded."""

    def __init__(self, project: Project, configs: Mapping[str, EndpointConfig]) -> None:
        self.project = project
        self.configs = {check_endpoint_name(k): v for k, v in configs.items()}
        self.endpoints: dict[str, Endpoint] = {}
        self.ready = False
        self._store: FeatureStore | None = None

    @classmethod
    def from_config(
        cls, project: Project, configs: Mapping[str, EndpointConfig] | None = None
    ) -> EndpointRegistry:
        """The endpoints given, else those of the project's ``serving.endpoints``."""
        chosen = project.config.serving.endpoints if configs is None else configs
        return cls(project, chosen)

    def load(self) -> None:
        """Resolve and load every endpoint's model (artifact hashes verified on read)."""
        for name, config in self.configs.items():
            self.endpoints[name] = self.load_endpoint(name, config)
        self.ready = True

    def get(self, name: str) -> Endpoint:
        """The endpoint ``name``; NotFoundError naming the served ones otherwise."""
        found = self.endpoints.get(name)
        if found is not None:
            return found
        if not self.ready and name in self.configs:
            raise StateError(f"endpoint {name!r} is still loading; retry when /ready says so")
        raise NotFoundError(
            f"endpoint {name!r} does not exist; this server serves {sorted(self.configs)}"
        )

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _feature_store(self) -> FeatureStore:
        if self._store is None:
            from keel.features.store import FeatureStore

            self._store = FeatureStore(self.project)
        return self._store

    def load_endpoint(self, name: str, config: EndpointConfig) -> Endpoint:
        """Load ``config``'s model for endpoint ``name`` without registering it (the router
        loads every variant of a deployment this way)."""
        from keel.registry.array_input import array_input
        from keel.registry.versions import get_model_version, load_model

        version = get_model_version(self.project, config.model)
        store = None
        if config.features is not None:
            store = self._feature_store()
            model = store.load_model(version.ref)
        else:
            model = load_model(self.project, version.ref)
        columns = _signature_columns(version.signature)
        _warm_up(model, columns)
        output = _output_kind(model)
        return Endpoint(
            name=name,
            model_ref=config.model,
            features=config.features,
            version=version,
            model=model,
            columns=None if columns is None else [c.name for c in columns],
            inputs=_request_inputs(store, config.features, columns),
            output=output,
            store=store,
            keys=_entity_keys(store, config.features),
            fast=array_input(model, output=_MODEL_OUTPUTS[output]),
        )


def _warm_up(model: Any, columns: list[InputField] | None) -> None:
    """Predict once on a row of zeros before the model takes traffic: a model's first calls
    are slow (lazy imports, allocations), which would show as a latency spike — and fail a
    canary's p99 gate — on the first requests routed to it."""
    if not columns:
        return
    import pandas as pd

    kinds = {"bool": bool, "string": str}
    row = {c.name: [kinds.get(c.type, float)(0)] for c in columns}
    predict = getattr(model, "predict_proba", None) or getattr(model, "predict", None)
    if predict is None:
        return
    for _ in range(3):
        try:
            predict(pd.DataFrame(row))
        except Exception:  # a model that cannot take a row of zeros is warmed by its traffic
            return


def _signature_columns(signature: Mapping[str, Any] | None) -> list[InputField] | None:
    if not signature:
        return None
    inputs = signature.get("inputs") or {}
    if inputs.get("kind") != "columns":
        return None
    return [InputField(str(c["name"]), str(c["type"])) for c in inputs["columns"]]


def _request_inputs(
    store: FeatureStore | None, service: str | None, columns: list[InputField] | None
) -> list[InputField]:
    """What a client sends: the service's entity keys and request fields, then any model
    column the service does not compute."""
    if store is None or service is None:
        return list(columns or [])
    selection = store.select(service=service)
    out: dict[str, InputField] = {}
    for view_name in selection.views:
        for key, dtype in store.view(view_name).entity.join_keys.items():
            out.setdefault(key, InputField(key, _logical(dtype)))
    for request in selection.request_fields:
        out.setdefault(request.name, InputField(request.name, _logical(request.dtype)))
    computed = {feature for _, feature in selection.order}
    for column in columns or []:
        if column.name not in computed:
            out.setdefault(column.name, column)
    return list(out.values())


def _entity_keys(store: FeatureStore | None, service: str | None) -> list[str]:
    if store is None or service is None:
        return []
    keys: dict[str, None] = {}
    for view_name in store.select(service=service).views:
        keys.update(dict.fromkeys(store.view(view_name).entity.join_keys))
    return list(keys)


def _logical(dtype: str) -> str:
    for prefix, kind in _DTYPE_TYPES.items():
        if dtype.startswith(prefix):
            return kind
    return "datetime" if dtype.startswith(("timestamp", "datetime")) else "string"


def _output_kind(model: LoadedModel) -> str:
    # A binary classifier answers with the positive class's probability: the score a
    # threshold, a canary gate or an AUC needs. Other models answer with predict().
    classes = getattr(model.raw, "classes_", None)
    if model.has_predict_proba and classes is not None and len(classes) == 2:
        return "probability"
    return "prediction"
