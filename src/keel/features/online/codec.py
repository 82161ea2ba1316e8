"""The packed row format shared by every online store.

A stored row is one compact byte string, written for a fast read: one ``struct`` call decodes
all fixed-width features, so a lookup allocates little more than the values it returns.

    [layout id: int64 LE] [fixed slots, one per feature] [null bitmap] [str/bytes payloads]

A :class:`Layout` — the view, its version and the (name, kind) of each feature — is stored once
per store under its id (a hash of its content), never per row. Fixed slots: float64 ``d``,
int64 ``q``, bool ``?``, timestamp ``q`` (epoch µs), str/bytes ``I`` (payload length); bit i of
the little-endian null bitmap marks feature i as null. Backends may put their own header (Redis:
the ordering timestamps) in front; ``decode`` takes the offset of the layout id.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from datetime import timedelta
from operator import itemgetter
from typing import Any

import numpy as np

from keel.features.online.base import EPOCH
from keel.features.online.columns import Column

_LAYOUT_ID = struct.Struct("<q")
_SLOTS = {"f": "d", "i": "q", "b": "?", "t": "q", "s": "I", "y": "I", "n": "?"}
_DTYPES = {"f": "<f8", "i": "<i8", "b": "?", "t": "<i8", "s": "<u4", "y": "<u4", "n": "?"}
_SIGN = np.uint64(1 << 63)
_MAX_PROJECTIONS = 256

Values = tuple[Any, ...]
Projector = Callable[[Values], Values]


class Layout:
    """How the features of one view version are packed; decodes rows written with it."""

    __slots__ = (
        "_null_end",
        "_nulls_at",
        "_plain",
        "_projections",
        "_struct",
        "_ts",
        "_var",
        "_zero",
        "id",
        "kinds",
        "names",
        "version",
        "view",
    )

    def __init__(self, view: str, version: str, names: Sequence[str], kinds: str) -> None:
        self.view = view
        self.version = version
        self.names = tuple(names)
        self.kinds = kinds
        self.id = _LAYOUT_ID.unpack(hashlib.sha256(self.spec().encode()).digest()[:8])[0]
        self._struct = struct.Struct("<" + "".join(_SLOTS[k] for k in kinds))
        null_bytes = (len(kinds) + 7) // 8
        self._nulls_at = 8 + self._struct.size
        self._null_end = self._nulls_at + null_bytes
        self._zero = bytes(null_bytes)
        self._var = tuple((i, k == "s") for i, k in enumerate(kinds) if k in "sy")
        self._ts = tuple(i for i, k in enumerate(kinds) if k == "t")
        self._plain = not self._var and not self._ts
        self._projections: dict[tuple[str, ...], Projector | None] = {}

    def spec(self) -> str:
        """The JSON text stored once per layout; :meth:`from_spec` rebuilds the layout."""
        features = [[name, kind] for name, kind in zip(self.names, self.kinds, strict=True)]
        body = {"view": self.view, "version": self.version, "features": features}
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_spec(cls, spec: str | bytes) -> Layout:
        body = json.loads(spec)
        names = [name for name, _ in body["features"]]
        kinds = "".join(kind for _, kind in body["features"])
        return cls(body["view"], body["version"], names, kinds)

    def decode(self, blob: bytes, start: int) -> Values:
        """All feature values of the row whose layout id is at ``blob[start:]``, in layout order."""
        values = self._struct.unpack_from(blob, start + 8)
        nulls = blob[start + self._nulls_at : start + self._null_end]
        if self._plain and nulls == self._zero:
            return values
        return self._decode_rest(list(values), blob, start, nulls)

    def _decode_rest(self, values: list[Any], blob: bytes, start: int, nulls: bytes) -> Values:
        at = start + self._null_end
        for index, is_str in self._var:
            end = at + values[index]
            values[index] = blob[at:end].decode() if is_str else blob[at:end]
            at = end
        for index in self._ts:
            values[index] = EPOCH + timedelta(microseconds=values[index])
        bits = int.from_bytes(nulls, "little")
        while bits:
            lowest = bits & -bits
            values[lowest.bit_length() - 1] = None
            bits ^= lowest
        return tuple(values)

    def projector(self, features: tuple[str, ...]) -> Projector | None:
        """A function picking ``features`` (None where absent) from decoded values; None = all."""
        try:
            return self._projections[features]
        except KeyError:
            pass
        if len(self._projections) >= _MAX_PROJECTIONS:
            self._projections.clear()
        found = self._projections[features] = _make_projector(self.names, features)
        return found


def _make_projector(names: tuple[str, ...], features: tuple[str, ...]) -> Projector | None:
    if features == names:
        return None
    where = {name: i for i, name in enumerate(names)}
    picks = [where.get(feature, -1) for feature in features]
    if -1 not in picks and len(picks) > 1:
        return itemgetter(*picks)  # a tuple for 2+ indices

    def pick(values: Values) -> Values:
        return tuple(values[i] if i >= 0 else None for i in picks)

    return pick


def layout_for(view: str, version: str, columns: dict[str, Column]) -> Layout:
    """The layout of a batch: its features in the caller's order, each with its column kind."""
    return Layout(view, version, list(columns), "".join(c.kind for c in columns.values()))


class Packed:
    """Packed rows of a batch: the fixed part of every row in one NumPy table (a row per
    entity) plus the str/bytes payloads, so a backend can frame rows without per-row objects."""

    __slots__ = ("table", "var_columns")

    def __init__(self, table: Any, var_columns: list[list[bytes]]) -> None:
        self.table = table
        self.var_columns = var_columns

    def __len__(self) -> int:
        return len(self.table)

    def rows(self) -> list[bytes]:
        """Each row as one byte string."""
        buffer = self.table.tobytes()
        width = self.table.dtype.itemsize
        rows = [buffer[at : at + width] for at in range(0, len(buffer), width)]
        if self.var_columns:
            parts = zip(*self.var_columns, strict=True)
            rows = [row + b"".join(more) for row, more in zip(rows, parts, strict=True)]
        return rows


class Scratch:
    """Arrays reused by the successive blocks of one write. Fresh memory costs a page fault
    per 4 KiB on first touch, which adds up to a tenth of a 100k-row write."""

    def __init__(self) -> None:
        self._arrays: dict[str, Any] = {}

    def array(self, name: str, length: int, dtype: Any) -> Any:
        """An uninitialised array of ``length`` items; the same memory as the last call with
        this ``name`` when it is large enough (its previous contents are then overwritten)."""
        found = self._arrays.get(name)
        if found is None or found.dtype != dtype or len(found) < length:
            found = self._arrays[name] = np.empty(length, dtype)
        return found[:length]


def pack_rows(
    layout: Layout,
    columns: Sequence[Column],
    length: int,
    order_prefix: tuple[Any, ...] | None = None,
    scratch: Scratch | None = None,
) -> Packed:
    """Pack ``length`` rows; with ``order_prefix`` (int64 arrays such as event µs, created µs
    and a sequence) each row starts with 8 bytes per array that sort bytewise like the tuple
    of their values: offset-binary big-endian. With ``scratch`` the rows are packed into its
    memory, valid until the next pack with the same scratch."""
    prefix = () if order_prefix is None else order_prefix
    fields: list[tuple[Any, ...]] = [(f"p{i}", ">u8") for i in range(len(prefix))]
    fields.append(("layout", "<i8"))
    fields += [(f"c{i}", _DTYPES[c.kind]) for i, c in enumerate(columns)]
    null_bytes = (len(columns) + 7) // 8
    if null_bytes:
        fields.append(("nulls", "u1", (null_bytes,)))
    dtype = np.dtype(fields)
    table = np.zeros(length, dtype) if scratch is None else scratch.array("rows", length, dtype)
    for i, values in enumerate(prefix):
        table[f"p{i}"] = np.asarray(values, dtype=np.int64).view(np.uint64) ^ _SIGN
    table["layout"] = layout.id
    var_columns = []
    for i, column in enumerate(columns):
        if column.kind in "sy":
            table[f"c{i}"] = np.fromiter(map(len, column.data), np.uint32, length)
            var_columns.append(column.data)
        else:
            table[f"c{i}"] = column.data
    if any(c.nulls is not None for c in columns):
        table["nulls"] = _null_bitmap(columns, length)
    elif null_bytes and scratch is not None:
        table["nulls"] = 0  # every other field was written above
    return Packed(table, var_columns)


def _null_bitmap(columns: Sequence[Column], length: int) -> Any:
    matrix = np.zeros((length, len(columns)), dtype=np.bool_)
    for i, column in enumerate(columns):
        if column.nulls is not None:
            matrix[:, i] = column.nulls
    return np.packbits(matrix, axis=1, bitorder="little")


def order_value(prefix: bytes, index: int = 0) -> int:
    """Value ``index`` of a row's order prefix (0: the event µs, the first 8 bytes)."""
    return int.from_bytes(prefix[8 * index : 8 * index + 8], "big") - (1 << 63)


def order_bytes(value: int) -> bytes:
    """The 8 order-prefix bytes of an int64 ``value`` (they sort bytewise like the ints)."""
    return (value + (1 << 63)).to_bytes(8, "big")
