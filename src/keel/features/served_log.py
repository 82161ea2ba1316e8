"""The served-feature log: every online lookup's vectors, kept so `keel features skew-check`
can recompute them through the offline path and compare.

When logging is on (``FeatureStore(project, log_served=True)`` or ``features.log_served: true``
in keel.yaml), each `FeatureStore.get_online_features` call appends one JSON line per entity row
to a segment file ``<served_log>/YYYY-MM-DD/<pid>-<uuid>.jsonl`` (the day of the request time,
UTC). A line holds the request time (epoch µs), the entity row's fields, each feature's served
value, the view that gave it and the version of each view's stored row (null: the default was
served). A segment has one writer, which appends each call's lines with one ``write()`` on an
``O_APPEND`` descriptor, so a crash can cut only the last line of a segment; the reader skips
such a line. NaN and ±inf round-trip (JSON's ``NaN``/``Infinity`` extension); timestamps and
bytes are stored tagged (``{"$t": µs}``, ``{"$b": base64}``) so they read back typed.

    store = FeatureStore(project, log_served=True)
    store.get_online_features(["user_stats:spend"], [{"user_id": 7}])
    read_served(project).to_pylist()
    # [{'request_time': datetime(...), 'user_id': 7, 'spend': 12.5,
    #   'served': ['user_stats:spend'], 'versions': [('user_stats', '3f9c...')]}]
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError, StoreError

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.features.serving import OnlineResult
    from keel.project import Project

# Columns of `read_served` besides the entity fields and the features.
REQUEST_TIME = "request_time"
SERVED = "served"  # list<string>: the "view:feature" refs the row's call served
VERSIONS = "versions"  # map<view, version>: the version of each view's value (null: default)
RESERVED = (REQUEST_TIME, SERVED, VERSIONS)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
_MAX_OPEN = 4  # segment files a process keeps open (one per request day in use)


class ServedLog:
    """The append side of the log under ``folder``; safe to share between threads and
    fork-aware (a child process opens its own segments).

    >>> log = ServedLog(project.root / ".keel/served-features")  # doctest: +SKIP
    >>> result = store.get_online_features(["user_stats:spend"], [{"user_id": 7}])  # doctest: +SKIP
    >>> log.append(result)  # doctest: +SKIP
    1
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._files: dict[str, int] = {}  # request day -> descriptor of this process's segment

    def append(self, result: OnlineResult) -> int:
        """Append one record per entity row of ``result``; returns how many were written."""
        features = list(result.sources)
        sources = dict(result.sources)  # once per call, not per row
        entity = [name for name in result.columns if name not in result.sources]
        rows = len(result.columns[features[0]]) if features else 0
        if not rows:
            return 0
        lines = []
        for i in range(rows):
            record = {
                "t": result.request_us,
                "e": {name: result.columns[name][i] for name in entity},
                "f": {name: result.columns[name][i] for name in features},
                "s": sources,
                "v": {view: versions[i] for view, versions in result.versions.items()},
            }
            lines.append(json.dumps(record, allow_nan=True, default=_encode, separators=(",", ":")))
        data = ("\n".join(lines) + "\n").encode()
        day = (_EPOCH + timedelta(microseconds=result.request_us)).strftime("%Y-%m-%d")
        with self._lock:
            fd = self._segment(day)
            written = os.write(fd, data)
            while written < len(data):  # a regular file takes it whole; a full disk may not
                written += os.write(fd, data[written:])
        return rows

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                for fd in self._files.values():
                    os.close(fd)
            self._files.clear()

    def _segment(self, day: str) -> int:
        if self._pid != os.getpid():  # forked: the parent's segments are the parent's
            self._files.clear()
            self._pid = os.getpid()
        fd = self._files.get(day)
        if fd is None:
            if len(self._files) >= _MAX_OPEN:
                os.close(self._files.pop(next(iter(self._files))))
            folder = self.folder / day
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{self._pid}-{uuid.uuid4().hex}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._files[day] = fd
        return fd


def read_served(
    project: Project | None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    folder: str | Path | None = None,
) -> pa.Table:
    """The logged vectors with request times in ``[since, until)``, ordered by request time.

    Columns: ``request_time`` (timestamp[us, UTC]), the entity fields, the features (by served
    name; null where a row's call did not serve one), ``served`` (the ``"view:feature"`` refs
    each row's call served) and ``versions`` (view -> version of the served value, null when
    the default was served). ``folder`` overrides ``features.served_log`` (``project`` may then
    be None).

    >>> read_served(project, since=datetime(2026, 3, 1, tzinfo=UTC)).num_rows  # doctest: +SKIP
    1200
    """
    if folder is not None:
        root = Path(folder)
    elif project is not None:
        root = project.root / project.config.features.served_log
    else:
        raise InvalidInputError("read_served needs a project, or the log's folder as folder=")
    lo = None if since is None else epoch_us(since, "since")
    hi = None if until is None else epoch_us(until, "until")
    records = [
        r
        for path in _segments(root, lo, hi)
        for r in _records(path)
        if (lo is None or r["t"] >= lo) and (hi is None or r["t"] < hi)
    ]
    records.sort(key=lambda r: r["t"])  # stable: one segment's calls keep their order
    return _to_table(records)


def epoch_us(when: datetime, name: str) -> int:
    """Epoch microseconds of ``when``, an aware datetime (``name`` is for the error)."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise InvalidInputError(
            f"{name}={when!r} needs a timezone-aware datetime such as "
            "datetime(2026, 3, 1, tzinfo=UTC)"
        )
    return (when - _EPOCH) // _US


def _segments(root: Path, lo: int | None, hi: int | None) -> Iterator[Path]:
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        try:
            day = datetime.strptime(folder.name, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            continue  # not a day folder: nothing the log wrote
        start = (day - _EPOCH) // _US
        if (lo is not None and start + _DAY_US <= lo) or (hi is not None and start >= hi):
            continue
        yield from sorted(folder.glob("*.jsonl"))


def _records(path: Path) -> list[dict[str, Any]]:
    lines = path.read_bytes().split(b"\n")
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_hook=_decode)
            out.append({"t": int(record["t"]), **{k: record[k] for k in "efsv"}})
        except (ValueError, KeyError, TypeError):
            if number >= len(lines) - 1:  # the segment's last line: cut by a crash mid-write
                continue
            raise StoreError(
                f"served-feature log segment {path} has a malformed line {number}; the log "
                "is append-only, so the file was edited or damaged — move it away to read "
                "the rest"
            ) from None
    return out


def _to_table(records: list[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    entity = list(dict.fromkeys(name for r in records for name in r["e"]))
    features = list(dict.fromkeys(name for r in records for name in r["f"]))
    clash = set(RESERVED) & (set(entity) | set(features)) or set(entity) & set(features)
    if clash:
        raise InvalidInputError(
            f"the served-feature log has fields named {sorted(clash)}, which collide with "
            f"each other or with the log's own columns {list(RESERVED)}; rename them"
        )
    times = pa.array([r["t"] for r in records], pa.int64()).cast(pa.timestamp("us", "UTC"))
    columns: dict[str, pa.Array] = {REQUEST_TIME: times}
    for part, names in (("e", entity), ("f", features)):
        for name in names:
            columns[name] = _column(name, [r[part].get(name) for r in records])
    columns[SERVED] = pa.array(
        [[f"{r['s'][name]}:{name}" for name in r["f"]] for r in records], pa.list_(pa.string())
    )
    columns[VERSIONS] = pa.array(
        [list(r["v"].items()) for r in records], pa.map_(pa.string(), pa.string())
    )
    return pa.table(columns)


def _column(name: str, values: list[Any]) -> pa.Array:
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        kinds = sorted({type(v).__name__ for v in values if v is not None})
        raise InvalidInputError(
            f"the served-feature log has values of several types {kinds} for {name!r} (its "
            "definition changed between requests?); read a time range with one type, e.g. "
            "since= the change"
        ) from None


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return {"$n": value.isoformat()}
        return {"$t": (value - _EPOCH) // _US}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    item = getattr(value, "item", None)  # NumPy scalars in caller-built entity rows
    if callable(item):
        return item()
    return str(value)


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        (tag, value), *_ = obj.items()
        if tag == "$t":
            return _EPOCH + timedelta(microseconds=value)
        if tag == "$b":
            return base64.b64decode(value)
        if tag == "$n":
            return datetime.fromisoformat(value)
        if tag == "$d":
            return date.fromisoformat(value)
    return obj
