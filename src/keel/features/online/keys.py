"""Typed, unambiguous encoding of entity keys.

Each part of a key tuple is written as a one-byte type tag followed by a fixed-width or
length-prefixed payload, so the code is prefix-free: distinct tuples always give distinct bytes.
``(1, 23)`` and ``(12, 3)`` can never collide, and neither can ``("1",)`` and ``(1,)`` or
``(True,)`` and ``(1,)`` — unlike keys joined into strings with a separator.

    int   b"i" + 8 bytes, big-endian two's complement (the int64 range)
    str   b"s" + 4-byte big-endian length + UTF-8 bytes
    bytes b"y" + 4-byte big-endian length + the bytes
    bool  b"b" + one byte (0 or 1)

NumPy integers, booleans and strings encode exactly like their Python counterparts.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any, overload

from keel.errors import InvalidInputError

KeyPart = int | str | bytes | bool
EntityKey = tuple[KeyPart, ...]

_INT = struct.Struct(">q")
_LEN = struct.Struct(">I")
_TRUE = b"b\x01"
_FALSE = b"b\x00"


def encode_key(key: Sequence[object]) -> bytes:
    """Encode one entity key tuple to bytes.

    >>> encode_key((1, "a")) != encode_key((1, "a", ""))
    True
    """
    if type(key) is not tuple:
        raise InvalidInputError(
            f"entity key {key!r} is not a tuple; pass each key as a tuple such as (1,) or (1, 'x')"
        )
    if len(key) == 1:
        return _part(key[0], key)
    if not key:
        raise InvalidInputError("entity key () is empty; a key needs at least one part")
    return b"".join([_part(part, key) for part in key])


def encode_keys(keys: Sequence[Sequence[object]]) -> list[bytes]:
    """Encode many entity key tuples (see :func:`encode_key`); `KeyColumns` are encoded
    column by column."""
    if isinstance(keys, KeyColumns):
        return keys.encode()
    return [encode_key(key) for key in keys]


class KeyColumns(Sequence[tuple[Any, ...]]):
    """Entity keys given column by column (pyarrow arrays), as a scan produces them: encoded
    without a Python tuple per row — integer columns in one NumPy pass — to the same bytes
    `encode_key` gives the tuples.

    >>> KeyColumns([pa.array([1, 2])]).encode() == encode_keys([(1,), (2,)])  # doctest: +SKIP
    True
    """

    def __init__(self, columns: Sequence[Any]) -> None:
        import pyarrow as pa

        arrays = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns]
        if not arrays or len({len(a) for a in arrays}) != 1:
            raise InvalidInputError("key columns must be one or more arrays of equal length")
        self.columns = arrays
        self._length = len(arrays[0])

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> tuple[Any, ...]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[Any, ...]]: ...

    def __getitem__(self, index: int | slice) -> tuple[Any, ...] | list[tuple[Any, ...]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        return tuple(column[index].as_py() for column in self.columns)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        rows = zip(*(column.to_pylist() for column in self.columns), strict=True)
        return iter(rows)

    def null_mask(self) -> Any:
        """A NumPy bool array: rows with a NULL key part."""
        import numpy as np

        mask = np.zeros(self._length, dtype=np.bool_)
        for column in self.columns:
            if column.null_count:
                mask |= column.is_null().to_numpy(zero_copy_only=False)
        return mask

    def take(self, rows: Any) -> KeyColumns:
        return KeyColumns([column.take(rows) for column in self.columns])

    def encode(self) -> list[bytes]:
        parts = [_encode_column(column) for column in self.columns]
        if len(parts) == 1:
            return parts[0]
        return [b"".join(row) for row in zip(*parts, strict=True)]


def encode_table(keys: Sequence[Sequence[object]]) -> Any | None:
    """The encoded keys as one uint8 table, row i the bytes of ``encode_key(keys[i])``, when
    ``keys`` are `KeyColumns` of integers only (a fixed width: 9 bytes a part); else None.
    Raises as :func:`encode_keys` does, without a bytes object per key."""
    import numpy as np
    import pyarrow as pa

    if not isinstance(keys, KeyColumns):
        return None
    if not all(pa.types.is_integer(column.type) for column in keys.columns):
        return None
    tables = [_int_table(column) for column in keys.columns]
    return tables[0] if len(tables) == 1 else np.hstack(tables)


def _encode_column(column: Any) -> list[bytes]:
    import pyarrow as pa

    if pa.types.is_integer(column.type):
        raw = _int_table(column).tobytes()
        return [raw[at : at + 9] for at in range(0, len(raw), 9)]
    _check_no_nulls(column)
    return [_part(value, (value,)) for value in column.to_pylist()]


def _int_table(column: Any) -> Any:
    """An integer key column encoded as a (rows, 9) uint8 table: b"i" + 8 bytes big-endian."""
    import numpy as np

    _check_no_nulls(column)
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype == np.uint64 and len(values) and values.max() > _INT64_MAX:
        raise InvalidInputError(
            f"an entity key has the integer {int(values.max())}, outside the int64 range; "
            "use a str key for larger numbers"
        )
    # Records of a tag and a big-endian int: two strided copies rather than a loop per row.
    packed = np.empty(len(values), dtype=[("tag", "u1"), ("value", ">i8")])
    packed["tag"] = ord("i")
    packed["value"] = values
    return packed.view(np.uint8).reshape(len(values), 9)


def _check_no_nulls(column: Any) -> None:
    if column.null_count:
        bad = column.is_null().to_numpy(zero_copy_only=False).argmax()
        raise InvalidInputError(
            f"entity key part {column[int(bad)]!r} at row {int(bad)} is null; rows with null "
            "keys cannot be stored online"
        )


_INT64_MAX = (1 << 63) - 1


def _part(part: object, key: Sequence[object]) -> bytes:
    # Exact type checks first: this runs once per key part on the write and read hot paths.
    if type(part) is int:
        return _int(part, key)
    if type(part) is str:
        raw = part.encode()
        return b"s" + _LEN.pack(len(raw)) + raw
    if type(part) is bool:
        return _TRUE if part else _FALSE
    if type(part) is bytes:
        return b"y" + _LEN.pack(len(part)) + part
    return _part_slow(part, key)


def _part_slow(part: object, key: Sequence[object]) -> bytes:
    # Subclasses and NumPy scalars are rarer: normalise them to the Python type first.
    if isinstance(part, bool):
        return _TRUE if part else _FALSE
    if isinstance(part, int):
        return _int(int(part), key)
    if isinstance(part, str):
        return _part(str(part), key)
    if isinstance(part, bytes):
        return _part(bytes(part), key)
    dtype = getattr(part, "dtype", None)
    if dtype is not None and dtype.kind in "biuU":
        return _part(part.item(), key)  # type: ignore[attr-defined]
    if part is None:
        raise InvalidInputError(
            f"entity key {key!r} has a null part; rows with null keys cannot be stored online"
        )
    raise InvalidInputError(
        f"entity key {key!r} has a part of type {type(part).__name__}; "
        "key parts must be int, str, bytes or bool"
    )


def _int(value: int, key: Sequence[object]) -> bytes:
    try:
        return b"i" + _INT.pack(value)
    except struct.error:
        raise InvalidInputError(
            f"entity key {key!r} has the integer {value}, outside the int64 range; "
            "use a str key for larger numbers"
        ) from None
