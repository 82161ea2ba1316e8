"""Feedback: labels and outcomes attached to a prediction's request id, whenever they arrive.

Feedback is written with the same segment technique as the prediction log, under
``<folder>/feedback``; compaction turns sealed feedback segments into Parquet files under
``<folder>/feedback/compacted``. When a request gets feedback more than once, the latest label
and the latest outcome win (each on its own, so a label and an outcome may arrive separately).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from keel.errors import InvalidInputError
from keel.serving.segments import SegmentWriter, read_segment, segment_files

FEEDBACK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("label_json", pa.string()),
        ("outcome_json", pa.string()),
        ("log_segment", pa.string()),
        ("log_offset", pa.int64()),
    ]
)


def segments_folder(folder: Path) -> Path:
    return folder / "feedback" / "segments"


def compacted_folder(folder: Path) -> Path:
    return folder / "feedback" / "compacted"


class FeedbackLog:
    """Append-only log of labels and outcomes, joined to predictions by request id on read.

    Example:
        >>> import tempfile
        >>> feedback = FeedbackLog(tempfile.mkdtemp())
        >>> feedback.attach("req-1", label=1)
        >>> feedback.close()
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        segment_bytes: int = 16 << 20,
        max_segment_age_s: float = 3600.0,
    ) -> None:
        self.folder = Path(folder)
        self._writer = SegmentWriter(
            segments_folder(self.folder),
            prefix="feedback",
            segment_bytes=segment_bytes,
            max_age_s=max_segment_age_s,
        )

    def attach(
        self,
        request_id: str,
        *,
        label: Any = None,
        outcome: Any = None,
        time_us: int | None = None,
    ) -> None:
        """Record a label and/or an outcome for ``request_id``; durable once this returns."""
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInputError(
                f"feedback needs the request id of a prediction, got {request_id!r}; "
                "pass the request_id returned with the prediction"
            )
        if label is None and outcome is None:
            raise InvalidInputError(
                f"feedback for request {request_id!r} has neither label nor outcome; "
                "pass label=... and/or outcome=..."
            )
        if time_us is None:
            time_us = time.time_ns() // 1000
        elif isinstance(time_us, bool) or not isinstance(time_us, int):
            raise InvalidInputError(
                f"time_us must be integer microseconds since the epoch, got {time_us!r}"
            )
        record = {"request_id": request_id, "time_us": time_us, "label": label, "outcome": outcome}
        self._writer.write(record)

    def close(self) -> None:
        """Seal the active feedback segment."""
        self._writer.close()


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def feedback_table(rows: Iterable[tuple[int, dict[str, Any]]], segment: str) -> pa.Table:
    """The Parquet form of one feedback segment's records."""
    columns: dict[str, list[Any]] = {name: [] for name in FEEDBACK_SCHEMA.names}
    for offset, record in rows:
        time_us = record.get("time_us")
        columns["request_id"].append(str(record.get("request_id")))
        columns["time"].append(time_us if isinstance(time_us, int) else None)
        columns["label_json"].append(_json_or_none(record.get("label")))
        columns["outcome_json"].append(_json_or_none(record.get("outcome")))
        columns["log_segment"].append(segment)
        columns["log_offset"].append(offset)
    return pa.table(columns, schema=FEEDBACK_SCHEMA)


@dataclass
class Feedback:
    """The latest label and outcome of one request."""

    label: Any = None
    outcome: Any = None
    time_us: int | None = None
    _label_key: tuple[int, str, int] = (-1, "", -1)
    _outcome_key: tuple[int, str, int] = (-1, "", -1)


def read_feedback(folder: str | Path) -> dict[str, Feedback]:
    """The latest feedback per request id, from segments and compacted files alike."""
    folder = Path(folder)
    latest: dict[str, Feedback] = {}
    seen: set[tuple[str, int]] = set()

    def take(
        request_id: str, time_us: int, where: tuple[str, int], label: Any, outcome: Any
    ) -> None:
        if where in seen:
            return
        seen.add(where)
        entry = latest.setdefault(request_id, Feedback())
        key = (time_us, *where)
        if label is not None and key > entry._label_key:
            entry.label, entry._label_key = label, key
        if outcome is not None and key > entry._outcome_key:
            entry.outcome, entry._outcome_key = outcome, key
        if entry.time_us is None or time_us > entry.time_us:
            entry.time_us = time_us

    # Segments first, compacted files second: a segment compacted in between is then found
    # in its Parquet form, and the (segment, offset) key drops the rows seen twice.
    for path in segment_files(segments_folder(folder)):
        for offset, record in read_segment(path):
            time_us = record.get("time_us")
            take(
                str(record.get("request_id")),
                time_us if isinstance(time_us, int) else 0,
                (path.stem, offset),
                record.get("label"),
                record.get("outcome"),
            )
    compacted = compacted_folder(folder)
    files = sorted(compacted.glob("*.parquet")) if compacted.is_dir() else []
    for file in files:
        table = pq.read_table(file, schema=FEEDBACK_SCHEMA)
        times = table.column("time").cast(pa.int64()).to_pylist()
        for rid, time_us, label, outcome, segment, offset in zip(
            table.column("request_id").to_pylist(),
            times,
            table.column("label_json").to_pylist(),
            table.column("outcome_json").to_pylist(),
            table.column("log_segment").to_pylist(),
            table.column("log_offset").to_pylist(),
            strict=True,
        ):
            take(
                rid,
                time_us or 0,
                (segment, offset),
                None if label is None else json.loads(label),
                None if outcome is None else json.loads(outcome),
            )
    return latest


def _typed(values: list[Any]) -> pa.Array:
    # Numbers (and booleans) become float64, the form metrics need; anything else stays
    # readable as text: strings as they are, lists and objects as JSON.
    present = [v for v in values if v is not None]
    if all(isinstance(v, int | float) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array(
        [v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string()
    )


def join_feedback(table: pa.Table, latest: dict[str, Feedback]) -> pa.Table:
    """``table`` with columns ``label``, ``outcome`` and ``feedback_time`` by request id."""
    found = [latest.get(rid) for rid in table.column("request_id").to_pylist()]
    labels = [f.label if f else None for f in found]
    outcomes = [f.outcome if f else None for f in found]
    times = pa.array([f.time_us if f else None for f in found], pa.int64())
    return (
        table.append_column("label", _typed(labels))
        .append_column("outcome", _typed(outcomes))
        .append_column("feedback_time", times.cast(pa.timestamp("us", tz="UTC")))
    )
