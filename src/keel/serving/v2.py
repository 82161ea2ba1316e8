"""The Open Inference Protocol V2 (KServe, Triton): health, model metadata, readiness, infer.

Each endpoint is a V2 model of the same name whose one version is the registry version it
serves. An infer request sends one named tensor per input field, of shape ``[n]`` or ``[n, 1]``
(the entity keys and request fields of an endpoint with a feature service, else the model's
input columns; ``GET /v2/models/{name}`` lists them); the answer has one output tensor,
``probability`` or ``prediction``. Tensors may be JSON or use the binary tensor extension
(``Inference-Header-Content-Length``), as tritonclient does by default.

    POST /v2/models/fraud/infer
    {"inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [7, 8]}]}
"""

from __future__ import annotations

import json
import struct
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from keel.errors import InvalidInputError, NotFoundError, StateError
from keel.serving.endpoints import V2_TYPES, Endpoint
from keel.serving.native import predictor_of

router = APIRouter(tags=["open inference protocol v2"])

_HEADER = "inference-header-content-length"
_NUMPY = {
    "BOOL": "bool",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    from keel import __version__

    return {"name": "keel", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    is_ready = predictor_of(request).registry.ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    endpoint = _endpoint(request, name, version)
    return {
        "name": endpoint.name,
        "versions": [str(endpoint.version.version)],
        "platform": f"keel_{endpoint.version.flavor}",
        "inputs": [
            {"name": f.name, "datatype": V2_TYPES.get(f.type, "BYTES"), "shape": [-1]}
            for f in endpoint.inputs
        ],
        "outputs": [{"name": endpoint.output, "datatype": _output_type(endpoint), "shape": [-1]}],
    }


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    endpoint = _endpoint(request, name, version)
    return {"name": endpoint.name, "ready": True}


@router.post("/v2/models/{name}/infer")
@router.post("/v2/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    endpoint = _endpoint(request, name, version)
    body = await request.body()
    header, binary = _split(body, request.headers.get(_HEADER))
    try:
        payload = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"the infer request is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InvalidInputError("an infer request needs 'inputs': a list of named tensors")
    _check_outputs(payload.get("outputs"), endpoint.output)
    rows = _rows(payload["inputs"], binary)
    served = predictor_of(request).predict(endpoint.name, rows)
    output = {
        "name": endpoint.output,
        "shape": [len(served.predictions)],
        "datatype": _datatype(served.predictions),
        "data": served.predictions,
    }
    answer: dict[str, Any] = {
        "model_name": endpoint.name,
        "model_version": str(served.model_version),
        "outputs": [output],
        "parameters": {"request_ids": served.request_ids, "variant": served.variant},
    }
    if "id" in payload:
        answer["id"] = payload["id"]
    return JSONResponse(answer)


def _endpoint(request: Request, name: str, version: str | None) -> Endpoint:
    predictor = predictor_of(request)
    endpoint = predictor.registry.get(name)
    if version is not None and version != str(endpoint.version.version):
        raise NotFoundError(
            f"model {name!r} has no version {version!r} here; it serves version "
            f"{endpoint.version.version}"
        )
    if not predictor.registry.ready:
        raise StateError(f"model {name!r} is still loading")
    return endpoint


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 <= size <= len(body):
        raise InvalidInputError(
            f"Inference-Header-Content-Length {header_length!r} is not a length within the "
            f"{len(body)}-byte body"
        )
    return body[:size], body[size:]


def _rows(inputs: list[Any], binary: bytes) -> list[dict[str, Any]]:
    columns: dict[str, list[Any]] = {}
    offset = 0
    count: int | None = None
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInputError(f"inputs[{i}] must be an object with a 'name'")
        name = tensor["name"]
        values, offset = _values(tensor, binary, offset)
        shape = tensor.get("shape")
        if not (
            isinstance(shape, list)
            and shape
            and all(isinstance(d, int) for d in shape)
            and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
            and shape[0] == len(values)
        ):
            raise InvalidInputError(
                f"input {name!r} has shape {shape!r} for {len(values)} values; send one value "
                "per row with shape [n] or [n, 1]"
            )
        if count is not None and len(values) != count:
            raise InvalidInputError(
                f"input {name!r} has {len(values)} values, other inputs {count}; every input "
                "needs one value per row"
            )
        count = len(values)
        columns[name] = values
    if not count:
        raise InvalidInputError("an infer request needs at least one input with values")
    names = list(columns)
    return [{n: columns[n][i] for n in names} for i in range(count)]


def _values(tensor: dict[str, Any], binary: bytes, offset: int) -> tuple[list[Any], int]:
    name, datatype = tensor["name"], tensor.get("datatype")
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise InvalidInputError(f"input {name!r} has no 'data' list")
        return _flatten(data), offset
    if not isinstance(size, int) or size < 0 or offset + size > len(binary):
        raise InvalidInputError(f"input {name!r} has binary_data_size {size!r} past the body")
    chunk = binary[offset : offset + size]
    if datatype == "BYTES":
        return _bytes_elements(name, chunk), offset + size
    if datatype not in _NUMPY:
        raise InvalidInputError(f"input {name!r} has datatype {datatype!r}; use one of V2's")
    import numpy as np

    dtype = np.dtype(_NUMPY[datatype])
    if size % dtype.itemsize:
        raise InvalidInputError(f"input {name!r}: {size} bytes is not a whole {datatype} count")
    values: list[Any] = np.frombuffer(chunk, dtype=dtype).tolist()
    return values, offset + size


def _bytes_elements(name: str, chunk: bytes) -> list[Any]:
    out: list[Any] = []
    at = 0
    while at < len(chunk):
        if at + 4 > len(chunk):
            raise InvalidInputError(f"input {name!r}: truncated BYTES element")
        (length,) = struct.unpack_from("<I", chunk, at)
        at += 4
        if at + length > len(chunk):
            raise InvalidInputError(f"input {name!r}: truncated BYTES element")
        out.append(chunk[at : at + length].decode("utf-8", errors="replace"))
        at += length
    return out


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in data:
        if isinstance(item, list):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def _check_outputs(requested: object, output: str) -> None:
    if requested is None:
        return
    if not isinstance(requested, list) or any(
        not isinstance(o, dict) or o.get("name") != output for o in requested
    ):
        raise InvalidInputError(f"this model has one output, {output!r}; request that one")


def _datatype(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "FP64"
    return "BYTES"


def _output_type(endpoint: Endpoint) -> str:
    if endpoint.output == "probability":
        return "FP64"
    outputs = (endpoint.version.signature or {}).get("outputs") or {}
    dtype = str(outputs.get("dtype", ""))
    if dtype.startswith(("int", "uint")):
        return "INT64"
    if dtype.startswith("bool"):
        return "BOOL"
    if dtype.startswith("float") or not dtype:
        return "FP64"
    return "BYTES"
