"""Validate a RowBatch and turn it into encoded keys and packed rows, before any store I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any

import numpy as np

from keel.errors import InvalidInputError
from keel.features.online.base import RowBatch, check_version, check_view_name
from keel.features.online.codec import Layout, Packed, Scratch, layout_for, pack_rows
from keel.features.online.columns import Column, timestamps_us, to_column
from keel.features.online.keys import encode_keys, encode_table

# created_ts when the source has none: older than any real ingestion time, so ties on
# event_ts fall back to "the later write wins".
NO_CREATED_US = -(1 << 63)
_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True)
class PreparedBatch:
    """A checked batch: ``keys[i]`` gets row i, ordered by ``(event_us[i], created_us[i])``.

    Rows are packed on demand, so a backend can pack and send one block while the server
    stores the previous one. Keys of integer columns are encoded as one table
    (``key_table``); ``keys`` cuts it into bytes objects only when a backend asks.
    """

    layout: Layout
    columns: list[Column]
    event_us: Any  # int64 arrays
    created_us: Any
    expires_us: Any  # int64 array, or None when no physical expiry was asked for
    key_table: Any  # uint8 table, row i the encoded key of row i; None: see key_list
    key_list: list[bytes] | None  # the encoded keys, when they have no table

    def __len__(self) -> int:
        return len(self.event_us)

    @cached_property
    def keys(self) -> list[bytes]:
        """The encoded entity key of each row."""
        if self.key_list is not None:
            return self.key_list
        raw = self.key_table.tobytes()
        width = self.key_table.shape[1]
        return [raw[at : at + width] for at in range(0, len(raw), width)]

    def pack(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        order_prefix: bool = False,
        scratch: Scratch | None = None,
    ) -> Packed:
        """Rows ``start:end`` packed (codec.py); with ``order_prefix`` each starts with the
        16-byte (event, created) prefix that sorts bytewise. With ``scratch``, packed into its
        memory (valid until its next use)."""
        end = len(self) if end is None else min(end, len(self))
        part = slice(start, end)
        columns = [column[part] for column in self.columns]  # views, not copies, for arrays
        prefix = (self.event_us[part], self.created_us[part]) if order_prefix else None
        return pack_rows(self.layout, columns, end - start, prefix, scratch)


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
    table = encode_table(rows.keys)
    keys = encode_keys(rows.keys) if table is None else None
    layout = layout_for(view, version, columns)
    expires = _expiry(event, expire_after)
    return PreparedBatch(layout, list(columns.values()), event, created, expires, table, keys)


def _expiry(event: Any, expire_after: timedelta | None) -> Any:
    if expire_after is None:
        return None
    if not isinstance(expire_after, timedelta) or expire_after <= timedelta(0):
        raise InvalidInputError(
            f"expire_after={expire_after!r} must be a positive timedelta, e.g. timedelta(days=7)"
        )
    return event + expire_after // _MICRO
