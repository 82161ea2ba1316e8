"""Normalise one input column (a list, a NumPy array or a pyarrow array) to a typed column.

A column has one kind for all its non-null values, so a feature keeps its type: ints stay ints,
floats stay floats (NaN is a float, not a null), timestamps are aware UTC. The kinds:

    f float64   i int64   b bool   t timestamp (epoch microseconds, UTC)
    s str       y bytes   n null (every value of this column in this batch is null)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from keel.errors import InvalidInputError
from keel.features.online.base import EPOCH

_MICRO = timedelta(microseconds=1)
_KIND_NAMES = {"f": "float", "i": "int", "b": "bool", "t": "timestamp", "s": "str", "y": "bytes"}
_PY_KINDS: dict[type, str] = {float: "f", int: "i", bool: "b", str: "s", bytes: "y", datetime: "t"}
_NP_DTYPES = {"f": np.float64, "i": np.int64, "b": np.bool_}
# pandas' missing-value markers, recognised by name so pandas need not be imported.
_NULL_TYPE_NAMES = frozenset({"NoneType", "NAType", "NaTType"})


@dataclass(frozen=True, slots=True)
class Column:
    """A typed column: ``data`` is a NumPy array (kinds f i b t n) or a list of bytes (s y)."""

    kind: str
    data: Any
    nulls: Any  # a bool array, True where the value is null, or None when nothing is null

    def __getitem__(self, part: slice) -> Column:
        """Rows ``part`` of this column."""
        nulls = None if self.nulls is None else self.nulls[part]
        return Column(self.kind, self.data[part], nulls)


def to_column(name: str, values: object, length: int) -> Column:
    """Normalise ``values`` (``length`` items) to a :class:`Column`; ``name`` is for errors."""
    module = type(values).__module__
    if module.startswith("pyarrow"):
        column = _from_arrow(name, values)
    elif isinstance(values, np.ndarray):
        column = _from_numpy(name, values)
    elif isinstance(values, list | tuple):
        column = _from_objects(name, values)
    elif hasattr(values, "__array__"):  # pandas Series and other array-likes
        column = _from_numpy(name, np.asarray(values))
    else:
        raise InvalidInputError(
            f"column {name!r}: a column must be a list, NumPy array or pyarrow array, "
            f"not {type(values).__name__}"
        )
    size = len(column.data)
    if size != length:
        raise InvalidInputError(f"column {name!r} has {size} values for {length} entity keys")
    return column


def timestamps_us(name: str, values: object, length: int) -> Any:
    """Epoch microseconds (int64 array) of aware datetimes or of ints that already are µs."""
    column = to_column(name, values, length)
    if column.nulls is not None:
        raise InvalidInputError(f"{name} has null values; every row needs an {name}")
    if column.kind in ("t", "i", "n"):
        return np.asarray(column.data, dtype=np.int64)
    raise InvalidInputError(
        f"{name} must hold timezone-aware datetimes or epoch microseconds (int), "
        f"not {_KIND_NAMES[column.kind]} values"
    )


def to_us(value: datetime, name: str) -> int:
    """Epoch microseconds of an aware datetime (exact, no float rounding)."""
    if value.tzinfo is None:
        raise InvalidInputError(
            f"{name} has the naive datetime {value.isoformat()}; Keel needs timezone-aware "
            "timestamps, e.g. datetime(..., tzinfo=UTC)"
        )
    return (value - EPOCH) // _MICRO


def _from_numpy(name: str, values: Any) -> Column:
    nulls = None
    if isinstance(values, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(values)
        nulls = mask if mask.any() else None
        values = values.data
    kind = values.dtype.kind
    if kind == "O":
        column = _from_objects(name, values)
        return column if nulls is None else Column(column.kind, column.data, nulls)
    if kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        raise InvalidInputError(f"column {name!r} has unsigned values beyond the int64 range")
    if kind in "fiub":
        target = "i" if kind == "u" else kind
        return Column(target, values.astype(_NP_DTYPES[target], copy=False), nulls)
    if kind in "US":
        items = values.tolist()
        data = [item.encode() for item in items] if kind == "U" else items
        return Column("s" if kind == "U" else "y", data, nulls)
    if kind == "M":
        raise InvalidInputError(
            f"column {name!r} holds naive datetime64 values; pass timezone-aware datetimes "
            "or a pyarrow timestamp column with a time zone"
        )
    raise InvalidInputError(f"column {name!r} has the unsupported dtype {values.dtype}")


def _from_objects(name: str, values: Sequence[Any]) -> Column:
    types = set(map(type, values))
    null_types = {kind for kind in types if kind.__name__ in _NULL_TYPE_NAMES}
    kinds = {_kind_of(kind, name) for kind in types - null_types}
    if len(kinds) > 1:
        names = ", ".join(sorted(_KIND_NAMES[kind] for kind in kinds))
        raise InvalidInputError(
            f"column {name!r} mixes {names} values; cast the column to one type first"
        )
    kind = kinds.pop() if kinds else "n"
    if not null_types:
        return Column(kind, _convert(kind, values, name), None)
    nulls = np.fromiter((type(v) in null_types for v in values), np.bool_, len(values))
    filler = _FILLERS[kind]
    filled = [filler if type(v) in null_types else v for v in values]
    return Column(kind, _convert(kind, filled, name), nulls)


_FILLERS: dict[str, object] = {
    "f": 0.0,
    "i": 0,
    "b": False,
    "t": EPOCH,
    "s": "",
    "y": b"",
    "n": False,
}


def _kind_of(kind: type, name: str) -> str:
    found = _PY_KINDS.get(kind)
    if found is not None:
        return found
    for base, code in (
        (bool, "b"),
        (np.bool_, "b"),
        (int, "i"),
        (np.integer, "i"),
        (float, "f"),
        (np.floating, "f"),
        (str, "s"),
        (bytes, "y"),
        (datetime, "t"),
    ):
        if issubclass(kind, base):
            return code
    raise InvalidInputError(
        f"column {name!r} has a value of type {kind.__name__}; "
        "supported: int, float, bool, str, bytes, aware datetime and None"
    )


def _convert(kind: str, values: Sequence[Any], name: str) -> Any:
    if kind in _NP_DTYPES:
        try:
            return np.asarray(values, dtype=_NP_DTYPES[kind])
        except OverflowError:
            raise InvalidInputError(
                f"column {name!r} has an integer outside the int64 range; store it as str"
            ) from None
    if kind == "t":
        return np.fromiter((to_us(v, f"column {name!r}") for v in values), np.int64, len(values))
    if kind == "s":
        return [str(v).encode() for v in values]
    if kind == "y":
        return [bytes(v) for v in values]
    return np.zeros(len(values), dtype=np.bool_)  # kind n: placeholders, every value is null


def _from_arrow(name: str, values: Any) -> Column:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        raise InvalidInputError(f"column {name!r}: expected a pyarrow Array, got {type(values)}")
    kind_type = values.type
    nulls = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
    if pa.types.is_timestamp(kind_type):
        if kind_type.tz is None:
            raise InvalidInputError(
                f"column {name!r} holds naive timestamps; give the column a time zone"
            )
        micros = pc.cast(values, pa.timestamp("us", tz=kind_type.tz), safe=False)
        data = micros.cast(pa.int64()).fill_null(0).to_numpy()
        return Column("t", data, nulls)
    if pa.types.is_floating(kind_type) or pa.types.is_integer(kind_type):
        filled = values.fill_null(0) if nulls is not None else values
        column = _from_numpy(name, filled.to_numpy(zero_copy_only=False))
        return Column(column.kind, column.data, nulls)
    if pa.types.is_boolean(kind_type):
        return Column("b", values.fill_null(False).to_numpy(zero_copy_only=False), nulls)
    return _from_objects(name, values.to_pylist())
