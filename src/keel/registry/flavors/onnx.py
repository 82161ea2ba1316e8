"""ONNX flavor: an onnx.ModelProto, or the bytes of a serialized one, run with onnxruntime.

The model file is the serialized protobuf as is. At load time it runs in an onnxruntime
InferenceSession on the CPU provider. Inputs are fed by the session's own input names and types:
a single input receives the whole batch as one array (cast to the input's element type, e.g.
float32); several inputs (as skl2onnx makes for a DataFrame) receive one column each, matched by
name. ``predict`` returns the first output; ``predict_proba`` the second when there is one (the
probabilities of a converted classifier, either as a tensor or as a ZipMap list of dicts).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keel.errors import FlavorError, SignatureError
from keel.registry.flavors.base import Flavor, FlavorModel, SavedModel, comes_from, versions_of

MODEL_FILE = "model.onnx"
PROVIDERS = ["CPUExecutionProvider"]
# ONNX tensor element types → numpy dtypes; strings go in as Python objects.
_ELEMENT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class OnnxFlavor(Flavor):
    name = "onnx"
    handles = "onnx.ModelProto or the bytes of a serialized ONNX model"

    def can_save(self, model: object) -> bool:
        if isinstance(model, bytes | bytearray):
            return _parses_as_onnx(bytes(model))
        if not comes_from(model, "onnx"):
            return False
        import onnx

        return isinstance(model, onnx.ModelProto)

    def save(self, model: object, directory: Path) -> SavedModel:
        if isinstance(model, bytes | bytearray):
            payload = bytes(model)
        else:
            payload = model.SerializeToString()  # type: ignore[attr-defined]
        session = _session(payload)  # refuse a model onnxruntime cannot run, before writing
        (directory / MODEL_FILE).write_bytes(payload)
        names = ("onnxruntime", "numpy", "onnx") if _has_onnx() else ("onnxruntime", "numpy")
        return SavedModel(
            data={
                "file": MODEL_FILE,
                "inputs": [i.name for i in session.get_inputs()],
                "outputs": [o.name for o in session.get_outputs()],
            },
            library_versions=versions_of(*names),
        )

    def load(self, directory: Path, data: Mapping[str, Any]) -> FlavorModel:
        session = _session((directory / str(data["file"])).read_bytes())
        outputs = [o.name for o in session.get_outputs()]

        def predict(batch: Any) -> Any:
            return session.run(outputs[:1], _feeds(session, batch))[0]

        proba_type = session.get_outputs()[1].type if len(outputs) > 1 else ""

        def predict_proba(batch: Any) -> Any:
            return _as_matrix(session.run(outputs[1:2], _feeds(session, batch))[0], proba_type)

        return FlavorModel(
            raw=session,
            predict=predict,
            predict_proba=predict_proba if len(outputs) > 1 else None,
            no_proba_reason="the ONNX model has a single output (no probabilities)",
        )


def _parses_as_onnx(payload: bytes) -> bool:
    try:
        import onnx
    except ImportError:
        return False
    try:
        proto = onnx.ModelProto.FromString(payload)
    except Exception:  # protobuf's DecodeError (untyped module): these bytes are no model
        return False
    return proto.ir_version > 0 and len(proto.graph.node) > 0


def _has_onnx() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def _session(payload: bytes) -> Any:
    from keel.registry.flavors.base import import_library

    ort = import_library("onnxruntime")
    try:
        return ort.InferenceSession(payload, providers=PROVIDERS)
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph errors
        raise FlavorError(f"onnxruntime cannot run this ONNX model: {exc}") from exc


def _feeds(session: Any, batch: Any) -> dict[str, Any]:
    import pandas as pd

    inputs = session.get_inputs()
    if len(inputs) == 1:
        values = batch.to_numpy() if isinstance(batch, pd.DataFrame) else batch
        return {inputs[0].name: _cast(values, inputs[0].type)}
    if not isinstance(batch, pd.DataFrame):
        names = ", ".join(i.name for i in inputs)
        raise SignatureError(f"this ONNX model takes named inputs ({names}); pass a DataFrame")
    missing = [i.name for i in inputs if i.name not in batch.columns]
    if missing:
        raise SignatureError(
            f"input is missing column {missing[0]!r} "
            f"(the ONNX model's inputs: {', '.join(i.name for i in inputs)})"
        )
    return {i.name: _cast(batch[i.name].to_numpy().reshape(-1, 1), i.type) for i in inputs}


def _cast(values: Any, onnx_type: str) -> Any:
    import numpy as np

    dtype = _ELEMENT_TYPES.get(onnx_type)
    if dtype is None:
        raise FlavorError(f"keel cannot feed ONNX inputs of type {onnx_type}")
    array = np.asarray(values)
    if dtype == "object":
        return array.astype(str).astype(object)
    return array.astype(dtype, copy=False)


def _as_matrix(output: Any, onnx_type: str) -> Any:
    """Probabilities as an (n, classes) array, also from skl2onnx's ZipMap list of dicts."""
    import numpy as np

    if not isinstance(output, list):
        return np.asarray(output)
    # ZipMap hands floats over as Python floats; restore the model's own precision.
    dtype = "float64" if "tensor(double)" in onnx_type else "float32"
    if not output:
        return np.empty((0, 0), dtype=dtype)
    keys = list(output[0])
    return np.array([[row[k] for k in keys] for row in output], dtype=dtype)


FLAVOR = OnnxFlavor()
