"""A plain, obviously correct point-in-time join to test engines against.

Row by row, view by view, it follows ARCHITECTURE.md ("Point-in-time join") and the notes of
`keel.features.offline.spec` literally: filter the candidates, take the max by
``(event_ts, created_ts, sequence)``, fall back to the default. No cleverness, no speed.
"""

from __future__ import annotations

import glob
import os
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq

from keel.features.offline.frames import as_table
from keel.features.offline.spec import AggregationInput, JoinRequest, ViewInput

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
_PER_US = {"s": 1_000_000, "ms": 1_000, "us": 1}


def micros(column: pa.ChunkedArray, zone: str | None) -> list[int | None]:
    """Epoch microseconds (floored), reading naive values as wall time in ``zone`` (fold=0)."""
    unit = column.type.unit
    raw = column.cast(pa.int64()).to_pylist()
    out = [None if v is None else (v // 1000 if unit == "ns" else v * _PER_US[unit]) for v in raw]
    if column.type.tz is not None:
        return out
    assert zone is not None, "naive timestamps need a zone"
    return [None if v is None else _local(v, zone) for v in out]


def _local(wall_us: int, zone: str) -> int:
    wall = (EPOCH + wall_us * US).replace(tzinfo=None)
    return (wall.replace(tzinfo=ZoneInfo(zone)) - EPOCH) // US


def _folder_files(folder: str) -> list[str]:
    """The ingestion order of a folder: its own Parquet files sorted, then each subfolder's."""
    names = sorted(os.listdir(folder))
    own = [os.path.join(folder, n) for n in names if n.endswith(".parquet")]
    subfolders = [os.path.join(folder, n) for n in names if os.path.isdir(os.path.join(folder, n))]
    return own + [f for sub in subfolders for f in _folder_files(sub)]


def source_rows(view: ViewInput) -> list[dict[str, Any]]:
    """The source as dicts with ``__ev``, ``__cr`` and ``__seq`` (ingestion order) added."""
    if isinstance(view.source, str):
        path = view.source
        files = _folder_files(path) if os.path.isdir(path) else sorted(glob.glob(path))
        table = pa.concat_tables([pq.read_table(f) for f in files])
    else:
        table = as_table(view.source, view.name)
    rows = table.to_pylist()
    zone = view.source_time_zone
    events = micros(table.column(view.event_timestamp), zone)
    created = (
        micros(table.column(view.created_timestamp), zone)
        if view.created_timestamp
        else [None] * len(rows)
    )
    for seq, (row, ev, cr) in enumerate(zip(rows, events, created, strict=True)):
        row.update(__ev=ev, __cr=ev if cr is None else cr, __seq=seq)
    return rows


def _candidates(
    rows: list[dict[str, Any]], view: ViewInput, keys: tuple[Any, ...], t: int, known_at: bool
) -> list[dict[str, Any]]:
    if t is None or any(k is None for k in keys):
        return []
    found = []
    for row in rows:
        if row["__ev"] is None or tuple(row[k] for k in view.join_keys) != keys:
            continue
        if row["__ev"] > t:
            continue
        if known_at and view.created_timestamp and row["__cr"] > t:
            continue
        found.append(row)
    return found


def _order(row: dict[str, Any]) -> tuple[int, int, int]:
    return (row["__ev"], row["__cr"], row["__seq"])


def _aggregate(agg: AggregationInput, rows: list[dict[str, Any]], t: int) -> Any:
    window = agg.window // US
    inside = [r for r in rows if r["__ev"] > t - window and r[agg.column] is not None]
    values = [r[agg.column] for r in inside]
    if agg.function == "count":
        return len(values)
    if not values:
        return agg.default
    if agg.function == "last":
        return max(inside, key=_order)[agg.column]
    if agg.function == "mean":
        return sum(values) / len(values)
    return {"sum": sum, "min": min, "max": max}[agg.function](values)


def reference_training_set(request: JoinRequest) -> dict[str, list[Any]]:
    """Output feature columns (name -> Python values) for every entity row, in order."""
    entities = as_table(request.entities, "entities")
    times = micros(entities.column(request.timestamp_column), None)
    out: dict[str, list[Any]] = {}
    for view in request.views:
        rows = source_rows(view)
        names = [request.output_name(view, f.name) for f in view.features]
        agg_names = [request.output_name(view, a.name) for a in view.aggregations]
        for name in names + agg_names:
            out[name] = []
        key_columns = [
            entities.column(request.entity_column(k)).to_pylist() for k in view.join_keys
        ]
        for i, t in enumerate(times):
            keys = tuple(column[i] for column in key_columns)
            found = _candidates(rows, view, keys, t, request.as_known_at)
            alive = [r for r in found if view.ttl is None or r["__ev"] >= t - view.ttl // US]
            winner = max(alive, key=_order) if alive else None
            for name, feature in zip(names, view.features, strict=True):
                value = winner[feature.source_column] if winner else feature.default
                out[name].append(value)
            for name, agg in zip(agg_names, view.aggregations, strict=True):
                out[name].append(_aggregate(agg, found, t) if found else _aggregate(agg, [], 0))
    return out
