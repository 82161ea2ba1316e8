"""One pass over a request's rows: check them, look up their features, build the model input
in the signature's column order, predict; and the prediction-log record of each answer.

keel.serving.predict runs these for each variant of a request (and keel.serving.shadow for a
shadow copy); a binary classifier with ``predict_proba`` answers with the probability of its
positive class, any other model with ``predict``.

    rows = check_rows([{"user_id": 7, "amount": 12.5}])
    check_types(endpoint, rows)
    features, lookup_s = lookup(endpoint, rows)
    inputs, predictions, model_s = predict_rows(endpoint, rows, features)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import (
    InvalidInputError,
    KeelError,
    NotFoundError,
    SignatureError,
    StateError,
    StoreError,
)
from keel.registry.array_input import quiet_unnamed_input

if TYPE_CHECKING:
    from keel.serving.endpoints import Endpoint

MAX_ROWS = 10_000


def status_for(exc: BaseException) -> int:
    """The HTTP status of an error: the client's fault is a 4xx, never a 500."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, InvalidInputError):
        return 422
    if isinstance(exc, StateError | StoreError):
        return 503
    return 500


def check_rows(rows: object) -> list[dict[str, Any]]:
    """``rows`` as a non-empty list of JSON objects; InvalidInputError naming the bad row."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInputError("'rows' must be a non-empty list of objects such as [{'id': 1}]")
    if len(rows) > MAX_ROWS:
        raise InvalidInputError(
            f"'rows' has {len(rows)} rows, more than {MAX_ROWS}; split the request"
        )
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidInputError(
                f"rows[{i}] is a {type(row).__name__}, not an object; send {{'field': value}}"
            )
    return rows


_ACCEPTS: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "float": (int, float),
    "boolean": (bool,),
    "string": (str,),
    "datetime": (str,),
}


def check_types(endpoint: Endpoint, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reject a field of the wrong JSON type (a list for a join key, text for a number)
    before it reaches the online store or the model."""
    for field in endpoint.inputs:
        accepted = _ACCEPTS.get(field.type)
        if accepted is None:
            continue
        for i, row in enumerate(rows):
            value = row.get(field.name)
            if value is None:
                continue
            wrong_bool = isinstance(value, bool) and bool not in accepted
            if wrong_bool or not isinstance(value, accepted):
                raise InvalidInputError(
                    f"rows[{i}].{field.name} is {value!r} ({type(value).__name__}); "
                    f"{field.name!r} takes {field.type} values"
                )
    return rows


def lookup(
    endpoint: Endpoint, rows: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, list[Any]], float]:
    """The online features of ``rows`` as columns (none without a service), and the time (s)."""
    started = time.perf_counter()
    features: dict[str, list[Any]] = {}
    if endpoint.store is not None and endpoint.features is not None:
        try:
            result = endpoint.store.get_online_features(entity_rows=rows, service=endpoint.features)
        except (OverflowError, ValueError, TypeError) as exc:
            # A key the store cannot even encode (an integer past 64 bits...): bad input.
            raise InvalidInputError(
                f"the entity rows of endpoint {endpoint.name!r} cannot be looked up: {exc}; "
                f"send the inputs {[f.name for f in endpoint.inputs]} with their types"
            ) from exc
        features = {name: result.columns[name] for name in result.sources}
    return features, time.perf_counter() - started


def predict_rows(
    endpoint: Endpoint, rows: Sequence[Mapping[str, Any]], features: Mapping[str, list[Any]]
) -> tuple[list[dict[str, Any]], list[Any], float]:
    """Per row: the model input and the prediction; and the model time (s)."""
    started = time.perf_counter()
    columns = model_columns(endpoint, rows, features)
    predictions = run_model(endpoint, columns, len(rows))
    names = list(columns)
    inputs = [{n: columns[n][i] for n in names} for i in range(len(rows))]
    return inputs, predictions, time.perf_counter() - started


def model_columns(
    endpoint: Endpoint, rows: Sequence[Mapping[str, Any]], features: Mapping[str, list[Any]]
) -> dict[str, list[Any]]:
    """The model input as columns, in the signature's order: each from the features when the
    service computes it, else from the rows' own fields."""
    if endpoint.columns is None:
        names = list(features) if features else _row_fields(rows)
    else:
        names = endpoint.columns
    columns: dict[str, list[Any]] = {}
    for name in names:
        if name in features:
            columns[name] = features[name]
            continue
        try:
            columns[name] = [row[name] for row in rows]
        except KeyError:
            missing = next(i for i, row in enumerate(rows) if name not in row)
            raise SignatureError(
                f"rows[{missing}] lacks field {name!r}, a model input of endpoint "
                f"{endpoint.name!r}; send it in every row (the inputs are "
                f"{[f.name for f in endpoint.inputs]})"
            ) from None
    return columns


def run_model(endpoint: Endpoint, columns: dict[str, list[Any]], count: int) -> list[Any]:
    model = endpoint.model
    data: object = columns if columns else [{}] * count
    # Plain numbers for a model with a verified matrix path skip the DataFrame round trip
    # (keel.registry.array_input); anything else is checked against the signature.
    matrix = None if endpoint.fast is None else endpoint.fast.matrix(columns)
    try:
        if matrix is not None:
            quiet_unnamed_input()
            runtime = model.runtime
            if endpoint.output == "probability" and runtime.predict_proba is not None:
                values = np.asarray(runtime.predict_proba(matrix))[:, 1]
            else:
                values = np.asarray(runtime.predict(matrix))
        elif endpoint.output == "probability":
            values = model.predict_proba(data)[:, 1]
        else:
            values = model.predict(data)
    except KeelError:
        raise
    except (ValueError, TypeError) as exc:
        # The model library refused the values (NaN, a category it never saw, ...): the
        # request's fault, so a 422 with the library's reason rather than a 500.
        raise InvalidInputError(
            f"model {endpoint.version.ref} rejected the input of endpoint {endpoint.name!r}: {exc}"
        ) from exc
    return json_safe(values.tolist())


def json_safe(values: list[Any]) -> list[Any]:
    """Predictions as JSON values: NaN and infinities become null."""
    return [
        None if isinstance(v, float) and not math.isfinite(v) else v
        for v in (json_safe(v) if isinstance(v, list) else v for v in values)
    ]


def _row_fields(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(rows[0]) if rows else []


def source_of(endpoint: Endpoint) -> tuple[str, str, int]:
    """The endpoint, model name and model version a prediction of ``endpoint`` is logged under."""
    return endpoint.name, endpoint.version.name, endpoint.version.version


def log_record(
    source: tuple[str, str, int],
    variant: str,
    request_id: str,
    time_us: int,
    features: dict[str, Any],
    prediction: Any,
    latency_us: int,
    status: int,
) -> dict[str, Any]:
    """One prediction-log record (see keel.serving.predlog); ``source`` is (endpoint, model
    name, model version), see source_of."""
    endpoint, model, model_version = source
    return {
        "request_id": request_id,
        "time_us": time_us,
        "endpoint": endpoint,
        "variant": variant,
        "model": model,
        "model_version": model_version,
        "features": features,
        "prediction": prediction,
        "latency_us": latency_us,
        "status": status,
    }
