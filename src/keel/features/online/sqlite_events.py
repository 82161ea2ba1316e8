"""The event log of the SQLite online store: one table, clustered by (view, key, event order).

A ``WITHOUT ROWID`` table whose primary key is ``(view_id, key, event_us, created_us, seq)``
keeps the events of a key together in the order aggregations need, so a window read is one
range scan of the primary key with no sort. Sequences come from a counter row per view,
advanced once per append inside the append's transaction, so they increase in commit order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from itertools import repeat

import numpy as np

from keel.features.online.base import chunks
from keel.features.online.events import INT64_MAX, INT64_MIN, PreparedEvents

SCHEMA = """
CREATE TABLE IF NOT EXISTS online_events (
    view_id INTEGER NOT NULL, key BLOB NOT NULL,
    event_us INTEGER NOT NULL, created_us INTEGER NOT NULL, seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (view_id, key, event_us, created_us, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS online_event_seq (
    view_id INTEGER PRIMARY KEY, last INTEGER NOT NULL);
"""
_NEXT_SEQ = """
INSERT INTO online_event_seq (view_id, last) VALUES (?, ?)
ON CONFLICT (view_id) DO UPDATE SET last = last + excluded.last
RETURNING last
"""
_INSERT = """
INSERT INTO online_events (view_id, key, event_us, created_us, seq, data)
VALUES (?, ?, ?, ?, ?, ?)
"""
_PRUNE = "DELETE FROM online_events WHERE view_id = ? AND key = ? AND event_us < ?"
_COLUMNS = "event_us, created_us, seq, data"
_ORDER = "ORDER BY event_us, created_us, seq"
_SELECT_ONE = (
    f"SELECT {_COLUMNS} FROM online_events "
    f"WHERE view_id = ? AND key = ? AND event_us >= ? AND event_us <= ? {_ORDER}"
)
_MAX_IN = 256  # keys per SELECT; below SQLite's variable limit
_IN_SIZES = (2, 4, 8, 16, 32, 64, 128, _MAX_IN)

Event = tuple[int, int, int, bytes]  # event_us, created_us, seq, packed values


def append(conn: sqlite3.Connection, vid: int, events: PreparedEvents) -> int:
    """Insert ``events`` (inside the caller's transaction), then prune; returns the count."""
    count = len(events)
    last = conn.execute(_NEXT_SEQ, (vid, count)).fetchone()[0]
    seq = np.arange(last - count + 1, last + 1, dtype=np.int64)
    conn.executemany(
        _INSERT,
        zip(
            repeat(vid),
            events.keys,
            events.event_us.tolist(),
            events.created_us.tolist(),
            seq.tolist(),
            events.pack().rows(),
            strict=False,
        ),
    )
    conn.executemany(_PRUNE, ((vid, key, cutoff) for key, cutoff in events.cutoffs.items()))
    return count


def delete(conn: sqlite3.Connection, vid: int) -> None:
    conn.execute("DELETE FROM online_events WHERE view_id = ?", (vid,))
    conn.execute("DELETE FROM online_event_seq WHERE view_id = ?", (vid,))


def select(
    conn: sqlite3.Connection, vid: int, keys: list[bytes], since_us: int, until_us: int
) -> dict[bytes, list[Event]]:
    """The events of ``keys`` in ``(since_us, until_us]``, per key in event order."""
    # SQLite integers are int64: clamp, with the open lower bound made a closed one.
    low, high = max(since_us + 1, INT64_MIN), min(until_us, INT64_MAX)
    if high < low:
        return {}
    if len(keys) == 1:
        rows = conn.execute(_SELECT_ONE, (vid, keys[0], low, high)).fetchall()
        return {keys[0]: rows} if rows else {}
    found: dict[bytes, list[Event]] = {}
    for part in chunks(list(dict.fromkeys(keys)), _MAX_IN):
        size = next(size for size in _IN_SIZES if size >= len(part))
        # Pad with a repeated key so a handful of statement shapes stay prepared.
        params = [vid, *part, *repeat(part[-1], size - len(part)), low, high]
        _group(conn.execute(_select_in(size), params), found)
    return found


def _group(
    rows: Iterable[tuple[bytes, int, int, int, bytes]],
    found: dict[bytes, list[Event]],
) -> None:
    for key, event_us, created_us, seq, data in rows:
        bucket = found.get(key)
        if bucket is None:
            bucket = found[key] = []
        bucket.append((event_us, created_us, seq, data))


def _select_in(size: int) -> str:
    marks = ",".join("?" * size)
    return (
        f"SELECT key, {_COLUMNS} FROM online_events WHERE view_id = ? AND key IN ({marks}) "
        f"AND event_us >= ? AND event_us <= ? ORDER BY key, event_us, created_us, seq"
    )
