"""The prediction log: every prediction, durable before its response is sent.

Layout under the log folder (``serving.prediction_log`` in keel.yaml)::

    segments/pred-<time_us>-<pid>-<rand>.jsonl          one JSON line per prediction
    compacted/endpoint=<name>/date=YYYY-MM-DD/part-<segment>.parquet
    feedback/segments/…, feedback/compacted/…           labels and outcomes (keel.serving.feedback)

Each process appends to its own segment, so several server workers never interleave; background
compaction (keel.serving.compaction) turns sealed segments into Parquet. ``read_predictions``
reads both forms, so a prediction is visible from the moment ``append`` returns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keel.errors import InvalidInputError
from keel.serving.feedback import join_feedback, read_feedback
from keel.serving.segments import SegmentWriter, dumps_line, read_segment, segment_files

TIME = pa.timestamp("us", tz="UTC")
BASE_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("time", TIME),
        ("endpoint", pa.string()),
        ("variant", pa.string()),
        ("model", pa.string()),
        ("model_version", pa.int64()),
        ("latency_us", pa.int64()),
        ("status", pa.int32()),
        ("features_json", pa.string()),
        ("prediction_json", pa.string()),
        ("prediction", pa.float64()),
        ("extra_json", pa.string()),
        ("log_segment", pa.string()),
        ("log_offset", pa.int64()),
    ]
)
# The extra field naming a row's unit (the entity traffic is split by) under a canary or an
# A/B test; kept in extra_json, read by `keel deploy report`.
UNIT = "unit"
_KNOWN = {"request_id", "time_us", "endpoint", "variant", "model", "model_version"}
_KNOWN |= {"features", "prediction", "latency_us", "status"}


def segments_folder(folder: Path) -> Path:
    return folder / "segments"


def compacted_folder(folder: Path) -> Path:
    return folder / "compacted"


class PredictionLog:
    """Append-only segment files of predictions under ``folder``, one JSON line each.

    Segments roll by size (``segment_bytes``) and age (``max_segment_age_s``). Thread-safe;
    each process writes its own segment (its pid is in the name, and a forked child opens a
    new one), so several server workers never interleave.

    Example:
        >>> import tempfile
        >>> log = PredictionLog(tempfile.mkdtemp())
        >>> log.append({"request_id": "r1", "time_us": 1_700_000_000_000_000,
        ...             "endpoint": "churn", "variant": "primary", "model": "churn",
        ...             "model_version": 3, "features": {"age": 41}, "prediction": 0.2,
        ...             "latency_us": 850, "status": 200})
        >>> log.close()
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        segment_bytes: int = 64 << 20,
        max_segment_age_s: float = 3600.0,
    ) -> None:
        self.folder = Path(folder)
        self._writer = SegmentWriter(
            segments_folder(self.folder),
            prefix="pred",
            segment_bytes=segment_bytes,
            max_age_s=max_segment_age_s,
        )

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one prediction; once this returns, even SIGKILL cannot lose it.

        ``record`` has ``request_id`` (str) and ``time_us`` (int, epoch microseconds) and
        usually ``endpoint``, ``variant``, ``model``, ``model_version``, ``features`` (name to
        scalar), ``prediction`` (any JSON value, NaN allowed), ``latency_us`` and ``status``;
        other keys are kept too.
        """
        _check(record)
        self._writer.write(record)

    def append_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write several predictions (e.g. one batch request) with a single system call."""
        lines = []
        for record in records:
            _check(record)
            lines.append(dumps_line(record))
        if lines:
            self._writer.write_lines(b"".join(lines))

    @property
    def active_segment(self) -> Path | None:
        """The segment this process appends to now, if any."""
        return self._writer.path

    def close(self) -> None:
        """Seal the active segment for compaction; appending again opens a new one."""
        self._writer.close()


def _check(record: Mapping[str, Any]) -> None:
    request_id = record.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidInputError(
            f"a logged prediction needs a non-empty string request_id, got {request_id!r}"
        )
    time_us = record.get("time_us")
    if isinstance(time_us, bool) or not isinstance(time_us, int):
        raise InvalidInputError(
            f"prediction {request_id!r} has time_us={time_us!r}; "
            "pass integer microseconds since the epoch (time.time_ns() // 1000)"
        )


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _feature_column(values: list[Any]) -> pa.Array | None:
    """A typed column when every present value has one scalar type; else None (JSON only)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    kinds = {type(v) for v in present}
    try:
        if kinds == {bool}:
            return pa.array(values, pa.bool_())
        if kinds == {int}:
            return pa.array(values, pa.int64())
        if kinds <= {int, float}:
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
        if kinds == {str}:
            return pa.array(values, pa.string())
    except (OverflowError, pa.ArrowException):
        return None  # e.g. integers beyond int64: the JSON column still has them
    return None


def prediction_table(rows: Iterable[tuple[int, dict[str, Any]]], segment: str) -> pa.Table:
    """The Parquet form of logged records: fixed columns, then ``f_<name>`` feature columns."""
    columns: dict[str, list[Any]] = {name: [] for name in BASE_SCHEMA.names}
    features: list[dict[str, Any]] = []
    for offset, record in rows:
        feats = record.get("features")
        feats = feats if isinstance(feats, dict) else {}
        features.append(feats)
        prediction = record.get("prediction")
        extra = {k: v for k, v in record.items() if k not in _KNOWN}
        columns["request_id"].append(_str(record.get("request_id")))
        columns["time"].append(_int(record.get("time_us")))
        columns["endpoint"].append(_str(record.get("endpoint")))
        columns["variant"].append(_str(record.get("variant")))
        columns["model"].append(_str(record.get("model")))
        columns["model_version"].append(_int(record.get("model_version")))
        columns["latency_us"].append(_int(record.get("latency_us")))
        columns["status"].append(_int(record.get("status")))
        columns["features_json"].append(json.dumps(feats))
        columns["prediction_json"].append(json.dumps(prediction))
        numeric = None
        if isinstance(prediction, int | float) and not isinstance(prediction, bool):
            numeric = float(prediction)
        columns["prediction"].append(numeric)
        columns["extra_json"].append(json.dumps(extra) if extra else None)
        columns["log_segment"].append(segment)
        columns["log_offset"].append(offset)
    table = pa.table(columns, schema=BASE_SCHEMA)
    for name in sorted({name for feats in features for name in feats}):
        array = _feature_column([feats.get(name) for feats in features])
        if array is not None:
            table = table.append_column(f"f_{name}", array)
    return table


def unify(tables: list[pa.Table]) -> pa.Table:
    """Concatenate prediction tables whose ``f_`` columns may differ in presence or type."""
    if not tables:
        return BASE_SCHEMA.empty_table()
    types: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            if field.name.startswith("f_"):
                types.setdefault(field.name, set()).add(field.type)
    fields = list(BASE_SCHEMA)
    for name, kinds in types.items():
        if len(kinds) == 1:
            fields.append(pa.field(name, next(iter(kinds))))
        elif kinds <= {pa.int64(), pa.float64()}:
            fields.append(pa.field(name, pa.float64()))
        # other mixtures keep only features_json: best effort, never a wrong type
    schema = pa.schema(fields)
    aligned = []
    for table in tables:
        arrays = [
            table.column(f.name).cast(f.type)
            if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type)
            for f in schema
        ]
        aligned.append(pa.table(arrays, schema=schema))
    return pa.concat_tables(aligned)


def _check_time(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise InvalidInputError(
            f"{name}={value.isoformat()} is a naive datetime; pass an aware one such as "
            "datetime(..., tzinfo=UTC)"
        )


def _partition_dirs(folder: Path, endpoint: str | None) -> list[Path]:
    root = compacted_folder(folder)
    if not root.is_dir():
        return []
    if endpoint is not None:
        return [root / f"endpoint={quote(endpoint, safe='')}"]
    return sorted(root.glob("endpoint=*"))


def _date_in_range(directory: Path, since: datetime | None, until: datetime | None) -> bool:
    day = directory.name.removeprefix("date=")
    if since is not None and day < since.astimezone(UTC).date().isoformat():
        return False
    return not (until is not None and day > until.astimezone(UTC).date().isoformat())


def read_predictions(
    folder: str | Path,
    *,
    endpoint: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pa.Table:
    """All logged predictions — compacted and not yet compacted — with feedback joined.

    ``since`` is inclusive and ``until`` exclusive (aware datetimes). Rows come ordered by
    time, then by write order. Columns: those of the Parquet schema, ``f_<name>`` feature
    columns where a feature has one type, and ``label``, ``outcome`` and ``feedback_time``
    (null where no feedback arrived).

    Example:
        >>> import tempfile
        >>> read_predictions(tempfile.mkdtemp()).num_rows
        0
    """
    _check_time("since", since)
    _check_time("until", until)
    folder = Path(folder)
    tables: list[pa.Table] = []
    # Segments before compacted files, so a segment compacted in between is still found (in
    # its Parquet form). A segment read here holds every row compaction may have taken from it
    # (even after a crash that left it half compacted), so its Parquet rows are dropped.
    read: list[str] = []
    for path in segment_files(segments_folder(folder)):
        rows = read_segment(path)
        if rows:
            tables.append(prediction_table(rows, path.stem))
            read.append(path.stem)
    seen = pa.array(read, pa.string())
    for directory in _partition_dirs(folder, endpoint):
        for day in sorted(directory.glob("date=*")):
            if not _date_in_range(day, since, until):
                continue
            for file in sorted(day.glob("*.parquet")):
                part = pq.read_table(file)
                tables.append(part.filter(pc.invert(pc.is_in(part["log_segment"], seen))))
    table = unify(tables)
    condition = pc.scalar(True)
    if endpoint is not None:
        condition = condition & (pc.field("endpoint") == endpoint)
    if since is not None:
        condition = condition & (pc.field("time") >= pa.scalar(since, TIME))
    if until is not None:
        condition = condition & (pc.field("time") < pa.scalar(until, TIME))
    table = table.filter(condition)
    table = table.sort_by(
        [("time", "ascending"), ("log_segment", "ascending"), ("log_offset", "ascending")]
    )
    return join_feedback(table, read_feedback(folder))
