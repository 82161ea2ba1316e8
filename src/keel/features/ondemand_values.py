"""Conversions between the two paths of an on-demand feature view and its function.

Online, one row of Python values becomes length-1 numpy arrays shaped as Arrow's ``to_numpy``
gives them offline, so the function sees the same kinds of values on both paths. Whatever the
function returns is checked and cast to the declared output dtypes: a column at a time to
Arrow offline (`_cast_column`), a value at a time online (`_cast_value`), with matching results.
Kept apart from `keel.features.ondemand`, which defines the view and runs the two paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.features.definitions import Field
    from keel.features.ondemand import OnDemandFeatureView

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_DAYS = np.dtype("datetime64[D]")
_GROUPS = {"bool": "number", "string": "string", "binary": "binary", "date": "date"}
_GROUPS |= {"timestamp": "timestamp", "float32": "number", "float64": "number"}


def _group(dtype: str) -> str:
    return _GROUPS.get(dtype, "number")  # the int and uint dtypes


# --- one row: Python values -> length-1 arrays, as Arrow's to_numpy gives them offline ---------


def _obj(value: Any) -> Any:
    array = np.empty(1, dtype=object)
    array[0] = value
    return array


def _micros(value: Any) -> Any:
    if isinstance(value, str):  # a timestamp sent as JSON text: ISO 8601 with its offset
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(
                f"timestamp {value!r} is not ISO 8601; send e.g. 2026-03-01T12:00:00+00:00"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInputError(
                f"timestamp {value!r} is naive; pass a timezone-aware datetime (e.g. UTC)"
            )
        return np.array([(value - _EPOCH) // _US], dtype="datetime64[us]")
    return np.array([value], dtype="datetime64[us]")  # np.datetime64, or None -> NaT


def _number(np_type: Any, null_as_float: bool) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return np.array([math.nan], dtype=np.float64 if null_as_float else np_type)
        return np.array([value], dtype=np_type)

    return convert


_ONLINE_IN: dict[str, Callable[[Any], Any]] = {
    "bool": lambda v: _obj(None) if v is None else np.array([v], dtype=np.bool_),
    "string": _obj,
    "binary": _obj,
    "date": lambda v: np.array([v], dtype="datetime64[D]"),
    "timestamp": _micros,
    "float32": _number(np.float32, False),
    "float64": _number(np.float64, False),
}
_ONLINE_IN |= {t: _number(getattr(np, t), True) for t in ("int8", "int16", "int32", "int64")}
_ONLINE_IN |= {t: _number(getattr(np, t), True) for t in ("uint8", "uint16", "uint32", "uint64")}


def _any(value: Any) -> Any:
    """An input of unknown dtype: typed by its value (None as float NaN)."""
    if value is None or isinstance(value, float):
        return np.array([math.nan if value is None else value], dtype=np.float64)
    if isinstance(value, bool | int | np.generic):
        return np.array([value])
    if isinstance(value, datetime):
        return _micros(value)
    if isinstance(value, date):
        return np.array([value], dtype="datetime64[D]")
    return _obj(value)


# --- outputs: whatever the function returned -> declared dtypes ---------------------------------


def _result_columns(view: OnDemandFeatureView, result: Any, rows: int) -> dict[str, Any]:
    """The declared outputs of ``result`` as arrays of ``rows`` values (checked)."""
    if type(result).__name__ == "DataFrame" and hasattr(result, "columns"):
        result = {str(c): result[c].to_numpy() for c in result.columns}
    if not isinstance(result, Mapping):
        raise _failed(view, f"returned {type(result).__name__}, not a mapping name -> array")
    columns = {}
    for name in view.output_names:
        if name not in result:
            raise _failed(view, f"returned no column {name!r} (it returned {list(result)})")
        value = result[name]
        if not isinstance(value, np.ndarray | list | tuple):
            value = np.asarray(value)
        if getattr(value, "ndim", 1) != 1 or len(value) != rows:
            shape = value.shape if isinstance(value, np.ndarray) else (len(value),)
            raise _failed(view, f"returned {name!r} of shape {shape} for {rows} input rows")
        columns[name] = value
    return columns


def _failed(view: OnDemandFeatureView, problem: str) -> InvalidInputError:
    return InvalidInputError(
        f"on-demand feature view {view.name!r} {problem}; make its function return one value "
        "per input row for each declared output"
    )


def _wrong_type(view: OnDemandFeatureView, out: Field, got: object) -> InvalidInputError:
    return InvalidInputError(
        f"output {out.name!r} of on-demand feature view {view.name!r} is declared "
        f"{out.dtype!r} but the function returned {got}; return {out.dtype} values or "
        "change the declared dtype"
    )


def _is_null(value: Any) -> bool:
    """None, NaN, NaT or pandas' NA (whose truth value raises)."""
    try:
        return value is None or bool(value != value)
    except TypeError:
        return True


_TO_PYTHON: dict[str, Callable[[Any], Any]] = {
    "float64": float,
    "float32": lambda v: float(np.float32(v)),
    "bool": bool,
}


def _cast_value(view: OnDemandFeatureView, out: Field, value: Any) -> Any:
    """One output value as Arrow's safe cast and ``to_pylist`` give it on the offline path."""
    if _is_null(value):
        return None
    group = _group(out.dtype)
    if group == "number" and isinstance(value, int | float | np.number | np.bool_):
        if out.dtype in _TO_PYTHON:
            return _TO_PYTHON[out.dtype](value)
        if not isinstance(value, int | np.integer) and not float(value).is_integer():
            raise _wrong_type(view, out, f"the non-integer {value!r}")
        info = np.iinfo(out.dtype)
        if not info.min <= int(value) <= info.max:
            raise _wrong_type(view, out, f"{value!r}, out of its range")
        return int(value)
    if (group, type(value)) in (("string", str), ("binary", bytes)):
        return value
    if group == "string" and isinstance(value, str):  # np.str_
        return str(value)
    if group == "timestamp" and isinstance(value, datetime):  # naive: UTC, like datetime64
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if group == "timestamp" and isinstance(value, np.datetime64):
        return _EPOCH + int(value.astype("datetime64[us]").astype(np.int64)) * _US
    if group == "date" and isinstance(value, np.datetime64) and value.dtype == _DAYS:
        return value.astype("datetime64[D]").item()
    if group == "date" and isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise _wrong_type(view, out, f"{value!r} ({type(value).__name__})")


def _arrow_group(arrow: pa.DataType) -> str | None:
    import pyarrow as pa

    if pa.types.is_null(arrow):
        return None
    checks = (
        (pa.types.is_boolean, "number"),
        (pa.types.is_integer, "number"),
        (pa.types.is_floating, "number"),
        (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string"),
        (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), "binary"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_date, "date"),
    )
    return next((group for check, group in checks if check(arrow)), str(arrow))


def _cast_column(view: OnDemandFeatureView, out: Field, values: Any) -> pa.Array:
    import pyarrow as pa

    from keel.features.offline.frames import arrow_type

    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _wrong_type(view, out, f"values Arrow cannot read ({exc})") from exc
    if _arrow_group(array.type) not in (None, _group(out.dtype)):
        raise _wrong_type(view, out, f"{array.type} values")
    try:
        return array.cast(arrow_type(out.dtype), safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _wrong_type(view, out, f"values that do not fit ({exc})") from exc
