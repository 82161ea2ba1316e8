"""Arrow-side work shared by offline engines: reading the entity frame, checking its time
column, turning declared dtypes into Arrow types, and applying dtypes and defaults to results."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import InvalidInputError, StoreError

_ARROW_TYPES = {
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}


def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type of a declared dtype name (see `spec.DTYPES`)."""
    return _ARROW_TYPES[dtype]


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def as_table(value: Any, what: str) -> pa.Table:
    """An Arrow table from an Arrow table, a pandas DataFrame or a Parquet path/URL.

    >>> as_table(pandas.DataFrame({"user_id": [1]}), "the entity frame")  # doctest: +SKIP
    """
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, str | Path):
        return _read_parquet(str(value), what)
    if type(value).__name__ == "DataFrame" and hasattr(value, "to_records"):
        try:
            table = pa.Table.from_pandas(value, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInputError(
                f"{what} cannot be converted to Arrow ({exc}); give each column one type"
            ) from exc
        return table.replace_schema_metadata(None)
    raise InvalidInputError(
        f"{what} is a {type(value).__name__}; pass a pandas DataFrame, a pyarrow Table "
        "or a Parquet path"
    )


def _read_parquet(path: str, what: str) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        if is_url(path):
            import fsspec

            fs, fs_path = fsspec.core.url_to_fs(path)
            return pq.read_table(fs_path, filesystem=fs)
        local = path.removeprefix("file://")
        if not os.path.exists(local):
            raise InvalidInputError(f"{what} path {path!r} does not exist; check the path")
        return pq.read_table(local)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidInputError(f"{what} at {path!r} cannot be read as Parquet: {exc}") from exc


def require_column(table: pa.Table, column: str, what: str, role: str) -> pa.ChunkedArray:
    if column not in table.column_names:
        raise InvalidInputError(
            f"{what} has no column {column!r} ({role}); its columns are {table.column_names}"
        )
    return table.column(column)


def times_us(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """Epoch microseconds (floored) of an aware timestamp column; naive ones are refused."""
    kind = column.type
    if not pa.types.is_timestamp(kind):
        raise InvalidInputError(
            f"entity column {name!r} is {kind}, not a timestamp; convert it, e.g. "
            f"df[{name!r}] = pandas.to_datetime(df[{name!r}], utc=True)"
        )
    if kind.tz is None:
        raise InvalidInputError(
            f"entity column {name!r} holds naive timestamps (no time zone); Keel needs UTC. "
            f"Localize it, e.g. df[{name!r}] = df[{name!r}].dt.tz_localize('UTC')"
        )
    raw = pc.cast(column, pa.int64())
    if kind.unit == "ns":
        truncated = pc.divide(raw, 1000)  # integer division truncates toward zero
        below = pc.less(pc.subtract(raw, pc.multiply(truncated, 1000)), 0)
        return pc.if_else(below, pc.subtract(truncated, 1), truncated)
    return pc.multiply(raw, _US_PER_UNIT[kind.unit])


def plain_values(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary (categorical) columns decoded, so keys compare by value."""
    if pa.types.is_dictionary(column.type):
        return pc.cast(column, column.type.value_type)
    return column


def default_scalar(default: Any, kind: pa.DataType, owner: str) -> pa.Scalar | None:
    if default is None:
        return None
    try:
        return pa.scalar(default, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(
            f"{owner} has default {default!r}, which is not a {kind}; give a default of that "
            "type or change the dtype"
        ) from exc


def finish_column(
    values: pa.ChunkedArray,
    kind: pa.DataType | None,
    default: pa.Scalar | None,
    matched: pa.ChunkedArray | None,
    owner: str,
) -> pa.ChunkedArray:
    """Cast to the declared type (lossy casts refused) and fill rows without a candidate.

    ``matched`` marks rows that had a candidate; without it (aggregations) a NULL result
    means "nothing in the window" and takes the default."""
    if kind is not None and values.type != kind:
        try:
            values = pc.cast(values, kind, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInputError(
                f"{owner}: a source value does not fit the declared type {kind} ({exc}); "
                "declare a wider dtype or fix the data"
            ) from exc
    if default is None:
        return values
    if matched is None:
        return pc.fill_null(values, default)
    return pc.if_else(matched, values, default)


def spread_rows(found: pa.Table, rows: int, owner: str) -> pa.Table:
    """``found`` — ``__row`` then value columns, at most one row per entity row, in any order —
    as one row per entity row in row order: ``__row``, ``__matched``, then the value columns,
    null where the entity row found nothing."""
    at = found.column("__row").to_numpy()
    index = np.full(rows, -1, dtype=np.int64)
    index[at] = np.arange(len(at), dtype=np.int64)
    missing = index < 0
    if rows - int(np.count_nonzero(missing)) != len(at):  # the join's invariant: a Keel bug
        raise StoreError(f"{owner}: the join found several winners for one entity row")
    matched = pa.array(~missing)
    # A take by an index without nulls, then nulls where nothing matched, runs about four
    # times faster than one take by a nullable index; Arrow releases the GIL, so the columns
    # are spread two at a time.
    take = pa.array(np.where(missing, 0, index))

    def spread(values: pa.ChunkedArray) -> pa.Array:
        if len(values) == 0:
            return pa.nulls(rows, values.type)
        # DuckDB hands over many small chunks; a take across chunks is ten times slower
        picked = values.combine_chunks().take(take)
        return pc.if_else(matched, picked, pa.scalar(None, values.type))

    names = found.column_names[1:]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="keel-spread") as pool:
        spread_columns = list(pool.map(spread, (found.column(name) for name in names)))
    columns = {"__row": pa.array(np.arange(rows, dtype=np.int64)), "__matched": matched}
    return pa.table({**columns, **dict(zip(names, spread_columns, strict=True))})
