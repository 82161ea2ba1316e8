"""The MLflow scoring protocol: ``POST /invocations``, so MLflow clients work unchanged.

The body is JSON in one of MLflow's four forms:

- ``{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}}``
- ``{"dataframe_records": [{"a": 1, "b": 2}]}``
- ``{"instances": [{"a": 1, "b": 2}]}`` (records) or ``[[1, 2]]`` (values in input order)
- ``{"inputs": {"a": [1, 3], "b": [2, 4]}}`` (columns), or records / values as for instances

The endpoint is the server's only one, else the one named by ``?endpoint=NAME`` or the
``X-Keel-Endpoint`` header. The answer is ``{"predictions": [...]}`` as MLflow's.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from keel.errors import InvalidInputError
from keel.serving.endpoints import Endpoint
from keel.serving.native import predictor_of

router = APIRouter(tags=["mlflow"])

ENDPOINT_HEADER = "x-keel-endpoint"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


@router.post("/invocations")
async def invocations(request: Request) -> dict[str, Any]:
    """Score rows sent in any of MLflow's JSON forms."""
    predictor = predictor_of(request)
    name = _endpoint_name(request, sorted(predictor.registry.configs))
    endpoint = predictor.registry.get(name)
    content_type = request.headers.get("content-type", "application/json")
    if not content_type.startswith("application/json"):
        raise InvalidInputError(
            f"content type {content_type!r} is not supported; send application/json"
        )
    try:
        payload = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"the request body is not valid JSON: {exc}") from None
    rows = parse_payload(payload, endpoint)
    served = predictor.predict(name, rows)
    return {"predictions": served.predictions}


def parse_payload(payload: object, endpoint: Endpoint) -> list[dict[str, Any]]:
    """The rows of an MLflow request body; InvalidInputError naming what is wrong."""
    keys = list(payload) if isinstance(payload, dict) else []
    present = [k for k in keys if k in FORMATS]
    if not isinstance(payload, dict) or len(present) != 1:
        raise InvalidInputError(
            f"the body must be an object with exactly one of {list(FORMATS)}; it has {keys}"
        )
    form = present[0]
    value = payload[form]
    if form == "dataframe_split":
        return _split(value)
    if form == "dataframe_records":
        return _records(value, form)
    if form == "inputs" and isinstance(value, dict):
        return _columns(value)
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return _values(value, form, [f.name for f in endpoint.inputs])
    return _records(value, form)


def _split(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        raise InvalidInputError("'dataframe_split' must be an object with 'columns' and 'data'")
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInputError("'dataframe_split.columns' must be a list of column names")
    if not isinstance(data, list):
        raise InvalidInputError("'dataframe_split.data' must be a list of rows")
    rows = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InvalidInputError(
                f"dataframe_split.data[{i}] must be a list of {len(columns)} values, one per "
                f"column {columns}"
            )
        rows.append(dict(zip(columns, row, strict=True)))
    return rows


def _records(value: object, form: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise InvalidInputError(f"'{form}' must be a list of records such as [{{'a': 1}}]")
    return value


def _columns(value: dict[str, Any]) -> list[dict[str, Any]]:
    lengths = {len(v) if isinstance(v, list) else 1 for v in value.values()}
    if len(lengths) != 1:
        raise InvalidInputError("every column of 'inputs' must have the same number of values")
    count = lengths.pop()
    columns = {k: v if isinstance(v, list) else [v] for k, v in value.items()}
    return [{k: columns[k][i] for k in columns} for i in range(count)]


def _values(value: list[Any], form: str, names: list[str]) -> list[dict[str, Any]]:
    for i, row in enumerate(value):
        if len(row) != len(names):
            raise InvalidInputError(
                f"{form}[{i}] has {len(row)} values; send {len(names)}, one per input {names}"
            )
    return [dict(zip(names, row, strict=True)) for row in value]


def _endpoint_name(request: Request, served: list[str]) -> str:
    name = request.query_params.get("endpoint") or request.headers.get(ENDPOINT_HEADER)
    if name:
        return name
    if len(served) == 1:
        return served[0]
    raise InvalidInputError(
        f"this server serves {served}; name one with ?endpoint=NAME or the X-Keel-Endpoint header"
    )
