"""Model signatures: the columns (or tensor) a model takes and the shape of what it returns.

A signature is inferred from an input example when a model is saved, stored as JSON in
``keel-model.json`` and checked on every prediction, so that a request with a missing column or
a string where a float belongs fails with a clear message instead of a wrong prediction.

Two kinds of schema exist: named columns (from a DataFrame, a dict of lists or records), each
with a logical type (integer, float, boolean, string, datetime) and the exact dtype seen at save
time; and a tensor (from a numpy array) with a dtype and a shape whose first (batch) dimension
is -1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError, SignatureError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

COLUMN_TYPES = ("integer", "float", "boolean", "string", "datetime")

# A found type may go into a column of another type only if no value changes meaning.
_WIDENINGS = {("integer", "float")}
_NUMPY_KINDS = {
    "b": "boolean",
    "i": "integer",
    "u": "integer",
    "f": "float",
    "U": "string",
    "S": "string",
    "M": "datetime",
}
_INFERRED_TYPES = {
    "string": "string",
    "integer": "integer",
    "floating": "float",
    "mixed-integer-float": "float",
    "boolean": "boolean",
    "datetime": "datetime",
    "datetime64": "datetime",
    "empty": "empty",  # only missing values: the conversion decides
}


@dataclass(frozen=True)
class ColumnSpec:
    """One named input column: its logical ``type`` and the exact ``dtype`` seen at save time."""

    name: str
    type: str
    dtype: str


@dataclass(frozen=True)
class ColumnSchema:
    """Named columns, in the order the model receives them."""

    columns: tuple[ColumnSpec, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class TensorSpec:
    """An array: numpy dtype name (``"str"`` for text) and shape, -1 meaning any size."""

    dtype: str
    shape: tuple[int, ...]


Schema = ColumnSchema | TensorSpec


@dataclass(frozen=True)
class Signature:
    """What a model takes (``inputs``) and, when known, what it returns (``outputs``).

    >>> sig = infer_signature(pd.DataFrame({"amount": [9.5], "country": ["FR"]}))
    >>> sig.validate_input([{"country": "DE", "amount": 3}]).dtypes.to_dict()
    {'amount': dtype('float64'), 'country': <StringDtype(na_value=nan)>}
    """

    inputs: Schema
    outputs: Schema | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``Signature.from_dict`` reads it back."""
        return {
            "inputs": _schema_to_dict(self.inputs),
            "outputs": None if self.outputs is None else _schema_to_dict(self.outputs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Read a signature written by ``to_dict``; a malformed dict raises InvalidInputError."""
        try:
            outputs = data.get("outputs")
            return cls(
                inputs=_schema_from_dict(data["inputs"]),
                outputs=None if outputs is None else _schema_from_dict(outputs),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInputError(
                f"malformed signature {dict(data)!r} ({exc!r}); "
                "it must be the output of Signature.to_dict()"
            ) from exc

    def validate_input(self, data: object) -> pd.DataFrame | np.ndarray:
        """Check ``data`` against the inputs and return it ready for the model.

        ``data`` may be a DataFrame, a dict of lists (or of scalars, for one row), a list of
        dict records, or a numpy array. For named columns: a missing column raises
        SignatureError; extra columns are dropped; columns are put in the signature's order;
        each column is converted to the dtype seen at save time when its logical type allows
        it (int32 → int64, int → float, str ↔ object; also to a narrower int or float dtype
        the model was trained on, when the values fit); anything else (strings in a float
        column, floats in an integer column, naive timestamps for a UTC column) raises
        SignatureError naming the column and both types. For tensors the trailing shape
        must match and the dtype is converted under the same rules. Validating twice gives
        the same result as validating once.

        >>> sig.validate_input({"amount": [1.0]})
        Traceback (most recent call last):
        keel.errors.SignatureError: input is missing column 'country' (expected columns: ...)
        """
        value = to_model_input(data)
        if isinstance(self.inputs, ColumnSchema):
            return _validate_columns(self.inputs, value)
        return _validate_tensor(self.inputs, value)


def infer_signature(input_example: object, output: object = None) -> Signature:
    """Infer a signature from an input example and, optionally, the model's output on it.

    >>> infer_signature(np.zeros((3, 4), dtype="float32")).inputs
    TensorSpec(dtype='float32', shape=(-1, 4))
    """
    outputs = None if output is None else infer_schema(output)
    return Signature(inputs=infer_schema(input_example), outputs=outputs)


def infer_schema(data: object) -> Schema:
    """The schema of a DataFrame, dict of lists, records, numpy array or Series."""
    import pandas as pd

    if isinstance(data, pd.Series):
        data = data.to_numpy()
    value = to_model_input(data)
    if isinstance(value, pd.DataFrame):
        return ColumnSchema(tuple(_column_spec(value, name) for name in value.columns))
    if value.ndim == 0:
        raise SignatureError(f"cannot infer a signature from a 0-d array {value!r}; pass rows")
    return TensorSpec(dtype=_tensor_dtype_name(value), shape=(-1, *value.shape[1:]))


def to_model_input(data: object) -> pd.DataFrame | np.ndarray:
    """Turn a dict of lists/scalars or a list of records into a DataFrame, lists into arrays."""
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame | np.ndarray):
        return data
    if isinstance(data, Mapping):
        if not any(_is_list_like(v) for v in data.values()):
            return pd.DataFrame({k: [v] for k, v in data.items()})
        return pd.DataFrame(dict(data))
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if data and all(isinstance(row, Mapping) for row in data):
            return pd.DataFrame.from_records(list(data))
        return np.asarray(data)
    raise SignatureError(
        f"cannot use a {type(data).__name__} as model input; pass a pandas DataFrame, "
        "a dict of lists, a list of dict records or a numpy array"
    )


def _is_list_like(value: object) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_list_like(value))


def _column_spec(frame: pd.DataFrame, name: object) -> ColumnSpec:
    if not isinstance(name, str):
        raise SignatureError(
            f"column name {name!r} is a {type(name).__name__}; signatures need string names "
            "(df.columns = df.columns.astype(str)) or pass a numpy array for a tensor signature"
        )
    column = frame[name]
    kind = series_type(column)
    if kind is None or kind == "empty":
        raise SignatureError(
            f"cannot infer the type of column {name!r} (dtype {column.dtype}); give it "
            f"values of one of {', '.join(COLUMN_TYPES)} (e.g. df[{name!r}].astype(float))"
        )
    return ColumnSpec(name=name, type=kind, dtype=str(column.dtype))


def series_type(column: pd.Series) -> str | None:
    """The logical type of a column, ``"empty"`` when all values are missing, else None."""
    import pandas as pd

    dtype = column.dtype
    types = pd.api.types
    if types.is_bool_dtype(dtype):
        return "boolean"
    if types.is_integer_dtype(dtype):
        return "integer"
    if types.is_float_dtype(dtype):
        return "float"
    if types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_object_dtype(dtype):
        return _INFERRED_TYPES.get(types.infer_dtype(column, skipna=True))
    if types.is_string_dtype(dtype):
        return "string"
    return None


def _validate_columns(schema: ColumnSchema, value: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    import pandas as pd

    names = schema.names
    if not isinstance(value, pd.DataFrame):
        raise SignatureError(
            f"the model expects named columns ({', '.join(names)}) but got an array of shape "
            f"{value.shape}; pass a DataFrame, a dict of lists or a list of records"
        )
    missing = [n for n in names if n not in value.columns]
    if missing:
        label = "column" if len(missing) == 1 else "columns"
        raise SignatureError(
            f"input is missing {label} {', '.join(repr(m) for m in missing)} "
            f"(expected columns: {', '.join(names)})"
        )
    duplicated = sorted({n for n in value.columns[value.columns.duplicated()] if n in names})
    if duplicated:
        raise SignatureError(f"input has column {duplicated[0]!r} more than once; keep one")
    converted = {
        spec.name: _convert_column(value[spec.name], spec).array for spec in schema.columns
    }
    return pd.DataFrame(converted, index=value.index)


def _convert_column(column: pd.Series, spec: ColumnSpec) -> pd.Series:
    import numpy as np
    import pandas as pd

    if str(column.dtype) == spec.dtype:
        return column
    found = series_type(column)
    if not _fits(found, spec.type):
        shown = f"{found} values" if found else f"values of dtype {column.dtype}"
        raise SignatureError(
            f"column {spec.name!r} has {shown} but the model expects {spec.type} "
            f"({spec.dtype}); convert the column to {spec.type} before predicting"
        )
    target = pd.api.types.pandas_dtype(spec.dtype)
    if spec.type == "datetime":
        _check_time_zone(column, spec, target)
    if spec.type == "integer" and found == "integer" and len(column):
        _check_int_range(column.min(), column.max(), target, f"column {spec.name!r}")
    try:
        with np.errstate(over="ignore"):  # overflow is checked below, with a clear message
            converted = column.astype(target)
    except (ValueError, TypeError, OverflowError) as exc:
        raise SignatureError(
            f"column {spec.name!r} cannot be converted to the model's {spec.dtype}: {exc}"
        ) from exc
    if spec.type == "float":
        _check_no_overflow(column.to_numpy(), converted.to_numpy(), f"column {spec.name!r}")
    return converted


def _fits(found: str | None, expected: str | None) -> bool:
    """Whether values of type ``found`` may go into ``expected`` without changing meaning."""
    if found is None or expected is None:
        return False
    return found in (expected, "empty") or (found, expected) in _WIDENINGS


def _check_time_zone(column: pd.Series, spec: ColumnSpec, target: Any) -> None:
    import pandas as pd

    found_tz = getattr(column.dtype, "tz", None)
    expected_tz = getattr(target, "tz", None)
    is_object = pd.api.types.is_object_dtype(column.dtype)
    if not is_object and (found_tz is None) != (expected_tz is None):
        found = "without a time zone" if found_tz is None else f"in time zone {found_tz}"
        raise SignatureError(
            f"column {spec.name!r} has timestamps {found} but the model expects {spec.dtype}; "
            "give timestamps a time zone the way the model was trained "
            "(e.g. pd.to_datetime(values, utc=True))"
        )


def _check_int_range(low: Any, high: Any, target: Any, where: str) -> None:
    import numpy as np

    if not isinstance(target, np.dtype):
        return  # nullable pandas integers: astype checks the range itself
    bounds = np.iinfo(target)
    if int(low) < bounds.min or int(high) > bounds.max:
        raise SignatureError(
            f"{where} has values from {low} to {high}, outside the model's {target} range "
            f"[{bounds.min}, {bounds.max}]"
        )


def _check_no_overflow(before: Any, after: Any, where: str) -> None:
    import numpy as np

    try:
        grew = np.isinf(after.astype(float)) & np.isfinite(before.astype(float))
    except (TypeError, ValueError):
        return  # values that cannot be seen as floats were refused by astype already
    if grew.any():
        raise SignatureError(f"{where} has values too large for the model's {after.dtype}")


def _validate_tensor(spec: TensorSpec, value: pd.DataFrame | np.ndarray) -> np.ndarray:
    import numpy as np
    import pandas as pd

    array = value.to_numpy() if isinstance(value, pd.DataFrame) else value
    shape_ok = array.ndim == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape[1:], array.shape[1:], strict=True)
    )
    if not shape_ok:
        raise SignatureError(
            f"input has shape {array.shape} but the model expects {spec.shape} (-1: any size); "
            "for a single row pass a 2-D array (x.reshape(1, -1))"
        )
    if spec.dtype == "object":
        return array
    found = _NUMPY_KINDS.get(array.dtype.kind)
    if spec.dtype == "str":
        if not _holds_strings(array):
            raise SignatureError(f"input has dtype {array.dtype} but the model expects strings")
        return array
    target = np.dtype(spec.dtype)
    if array.dtype == target:
        return array
    expected = _NUMPY_KINDS.get(target.kind)
    if not _fits(found, expected):
        raise SignatureError(
            f"input has dtype {array.dtype} ({found or 'unsupported'}) which cannot be cast "
            f"safely to the model's {spec.dtype} ({expected}); convert it with .astype()"
        )
    if expected == "integer" and array.size:
        _check_int_range(array.min(), array.max(), target, "input")
    with np.errstate(over="ignore"):  # overflow is checked below, with a clear message
        converted = array.astype(target)
    if expected == "float":
        _check_no_overflow(array, converted, "input")
    return converted


def _tensor_dtype_name(array: np.ndarray) -> str:
    return "str" if _holds_strings(array) else array.dtype.name


def _holds_strings(array: np.ndarray) -> bool:
    """Whether an array is text: a numpy string dtype, or objects that are all str."""
    if array.dtype.kind in "US":
        return True
    return array.dtype.kind == "O" and all(isinstance(v, str) for v in array.flat)


def _schema_to_dict(schema: Schema) -> dict[str, Any]:
    if isinstance(schema, ColumnSchema):
        columns = [{"name": c.name, "type": c.type, "dtype": c.dtype} for c in schema.columns]
        return {"kind": "columns", "columns": columns}
    return {"kind": "tensor", "dtype": schema.dtype, "shape": list(schema.shape)}


def _schema_from_dict(data: Mapping[str, Any]) -> Schema:
    if data["kind"] == "columns":
        columns = tuple(
            ColumnSpec(name=str(c["name"]), type=str(c["type"]), dtype=str(c["dtype"]))
            for c in data["columns"]
        )
        unknown = [c.type for c in columns if c.type not in COLUMN_TYPES]
        if unknown:
            raise ValueError(f"unknown column type {unknown[0]!r}")
        return ColumnSchema(columns)
    if data["kind"] == "tensor":
        return TensorSpec(dtype=str(data["dtype"]), shape=tuple(int(d) for d in data["shape"]))
    raise ValueError(f"unknown schema kind {data['kind']!r}")
