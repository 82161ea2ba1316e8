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
from collections.abc import Sequence

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
    """Encode many entity key tuples (see :func:`encode_key`)."""
    return [encode_key(key) for key in keys]


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
