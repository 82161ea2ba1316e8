"""Validate a RowBatch for the event log and encode it, before any store I/O.

Unlike the newest-row path, an event batch mirrors an offline source: rows with a null event
time or a null key part can never fall in a window (the offline join drops them too), so they
are skipped rather than refused, and a null created time counts as the event time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from keel.errors import InvalidInputError
from keel.features.online.base import EventRows, RowBatch, check_version, check_view_name
from keel.features.online.catalog import Decoder
from keel.features.online.codec import Layout, Packed, layout_for, pack_rows
from keel.features.online.columns import Column, to_column
from keel.features.online.keys import KeyColumns, encode_keys

_MICRO = timedelta(microseconds=1)
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class PreparedEvents:
    """A checked event batch: row i is for ``keys[i]`` at ``event_us[i]``.

    ``cutoffs`` maps each key of the batch to the event time below which its stored events may
    be pruned: its newest event in the batch minus ``retain``.
    """

    layout: Layout
    keys: list[bytes]
    columns: list[Column]
    event_us: Any  # int64 array
    created_us: Any  # int64 array, the event time where the source had none
    cutoffs: dict[bytes, int]

    def __len__(self) -> int:
        return len(self.keys)

    def pack(self, seq: Any = None) -> Packed:
        """Every row packed (codec.py); with ``seq`` (an int64 array) each row starts with the
        24-byte (event, created, seq) prefix that sorts bytewise."""
        prefix = None if seq is None else (self.event_us, self.created_us, seq)
        return pack_rows(self.layout, self.columns, len(self), prefix)


def prepare_events(view: str, version: str, rows: RowBatch, *, retain: timedelta) -> PreparedEvents:
    """Check and encode ``rows``; raises InvalidInputError naming the bad column or value."""
    check_view_name(view)
    check_version(version)
    if not isinstance(rows, RowBatch):
        raise InvalidInputError(f"rows must be a RowBatch, not {type(rows).__name__}")
    if not isinstance(retain, timedelta) or retain <= timedelta(0):
        raise InvalidInputError(
            f"retain={retain!r} must be a positive timedelta: the view's longest window, "
            "e.g. timedelta(days=7)"
        )
    length = len(rows.keys)
    for name in rows.features:
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"feature name {name!r} must be a non-empty string")
    columns = {name: to_column(name, values, length) for name, values in rows.features.items()}
    event, event_nulls = _times("event_ts", rows.event_ts, length)
    if rows.created_ts is None:
        created = event.copy()
    else:
        created, created_nulls = _times("created_ts", rows.created_ts, length)
        if created_nulls is not None:
            created = np.where(created_nulls, event, created)
    keep = np.ones(length, dtype=np.bool_) if event_nulls is None else ~event_nulls
    if isinstance(rows.keys, KeyColumns):
        keep &= ~rows.keys.null_mask()
    else:
        for i, key in enumerate(rows.keys):
            if isinstance(key, tuple) and any(part is None for part in key):
                keep[i] = False
    kept_keys: Sequence[Any]
    if not keep.all():
        where = np.flatnonzero(keep)
        columns = {name: _take(column, where) for name, column in columns.items()}
        event, created = event[where], created[where]
        if isinstance(rows.keys, KeyColumns):
            kept_keys = rows.keys.take(where)
        else:
            kept_keys = [rows.keys[i] for i in where.tolist()]
    else:
        kept_keys = rows.keys if isinstance(rows.keys, KeyColumns) else list(rows.keys)
    keys = encode_keys(kept_keys)
    return PreparedEvents(
        layout_for(view, version, columns),
        keys,
        list(columns.values()),
        event,
        created,
        _cutoffs(keys, event, retain // _MICRO),
    )


def _times(name: str, values: object, length: int) -> tuple[Any, Any]:
    """Epoch µs (int64 array) of aware datetimes or int µs, and the null mask (or None)."""
    column = to_column(name, values, length)
    if column.kind not in ("t", "i", "n"):
        raise InvalidInputError(
            f"{name} must hold timezone-aware datetimes or epoch microseconds (int)"
        )
    return np.asarray(column.data, dtype=np.int64), column.nulls


def _take(column: Column, where: Any) -> Column:
    nulls = None if column.nulls is None else column.nulls[where]
    if isinstance(column.data, np.ndarray):
        return Column(column.kind, column.data[where], nulls)
    return Column(column.kind, [column.data[i] for i in where.tolist()], nulls)


def _cutoffs(keys: list[bytes], event: Any, retain_us: int) -> dict[bytes, int]:
    newest: dict[bytes, int] = {}
    for key, at in zip(keys, event.tolist(), strict=True):
        if key not in newest or at > newest[key]:
            newest[key] = at
    return {key: max(at - retain_us, INT64_MIN) for key, at in newest.items()}


def check_range(since_us: int, until_us: int) -> None:
    """Raise unless both bounds of a read are int epoch microseconds."""
    for name, value in (("since_us", since_us), ("until_us", until_us)):
        if type(value) is not int and not isinstance(value, np.integer):
            raise InvalidInputError(f"{name}={value!r} must be an int (epoch microseconds, UTC)")


def gather(
    columns: tuple[str, ...],
    keys: list[bytes],
    found: Mapping[bytes, Sequence[tuple[int, int, int, bytes]]],
    decode: Decoder,
    start: int,
) -> EventRows:
    """EventRows for ``keys`` (request order) from the stored events of each key, found as
    (event µs, created µs, seq, blob) with the packed values at ``blob[start:]``."""
    decoded: dict[bytes, tuple[list[int], list[int], list[int], list[tuple[Any, ...]]]] = {}
    for key, rows in found.items():
        events: list[int] = []
        created: list[int] = []
        seqs: list[int] = []
        values: list[tuple[Any, ...]] = []
        for event_us, created_us, seq, blob in rows:
            row = decode(blob, start)
            if row is None:  # its layout is gone: the view is being deleted
                continue
            events.append(event_us)
            created.append(created_us)
            seqs.append(seq)
            values.append(row[0])
        decoded[key] = (events, created, seqs, values)
    result = EventRows(columns, [], [], [], [])
    for key in keys:
        hit = decoded.get(key)
        events, created, seqs, values = ([], [], [], []) if hit is None else hit
        result.event_us.append(events)
        result.created_us.append(created)
        result.seq.append(seqs)
        result.values.append(values)
    return result
