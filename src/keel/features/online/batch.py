"""Validate a RowBatch and turn it into encoded keys and packed rows, before any store I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

from keel.errors import InvalidInputError
from keel.features.online.base import RowBatch, check_version, check_view_name
from keel.features.online.codec import Layout, Packed, layout_for, pack_rows
from keel.features.online.columns import Column, timestamps_us, to_column
from keel.features.online.keys import encode_keys

# created_ts when the source has none: older than any real ingestion time, so ties on
# event_ts fall back to "the later write wins".
NO_CREATED_US = -(1 << 63)
_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A checked batch: ``keys[i]`` gets row i, ordered by ``(event_us[i], created_us[i])``.

    Rows are packed on demand, so a backend can pack and send one block while the server
    stores the previous one.
    """

    layout: Layout
    keys: list[bytes]
    columns: list[Column]
    event_us: Any  # int64 arrays
    created_us: Any
    expires_us: Any  # int64 array, or None when no physical expiry was asked for

    def __len__(self) -> int:
        return len(self.keys)

    def pack(self, start: int = 0, end: int | None = None, *, order_prefix: bool = False) -> Packed:
        """Rows ``start:end`` packed (codec.py); with ``order_prefix`` each starts with the
        16-byte (event, created) prefix that sorts bytewise."""
        end = len(self) if end is None else min(end, len(self))
        part = slice(start, end)
        columns = [column[part] for column in self.columns]  # views, not copies, for arrays
        prefix = (self.event_us[part], self.created_us[part]) if order_prefix else None
        return pack_rows(self.layout, columns, end - start, prefix)


def prepare_batch(
    view: str,
    version: str,
    rows: RowBatch,
    *,
    expire_after: timedelta | None,
) -> PreparedBatch:
    """Check and encode ``rows``; raises InvalidInputError naming the bad column or value."""
    check_view_name(view)
    check_version(version)
    if not isinstance(rows, RowBatch):
        raise InvalidInputError(f"rows must be a RowBatch, not {type(rows).__name__}")
    length = len(rows.keys)
    for name in rows.features:
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"feature name {name!r} must be a non-empty string")
    columns = {name: to_column(name, values, length) for name, values in rows.features.items()}
    event = timestamps_us("event_ts", rows.event_ts, length)
    if rows.created_ts is None:
        created = np.full(length, NO_CREATED_US, dtype=np.int64)
    else:
        created = timestamps_us("created_ts", rows.created_ts, length)
    keys = encode_keys(rows.keys)
    layout = layout_for(view, version, columns)
    expires = _expiry(event, expire_after)
    return PreparedBatch(layout, keys, list(columns.values()), event, created, expires)


def _expiry(event: Any, expire_after: timedelta | None) -> Any:
    if expire_after is None:
        return None
    if not isinstance(expire_after, timedelta) or expire_after <= timedelta(0):
        raise InvalidInputError(
            f"expire_after={expire_after!r} must be a positive timedelta, e.g. timedelta(days=7)"
        )
    return event + expire_after // _MICRO
