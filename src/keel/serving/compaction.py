"""Compaction: sealed log segments become Parquet, partitioned by endpoint and date.

Crash safety comes from the order of steps and from names. Each Parquet file is named after the
segment it came from (``part-<segment>.parquet``), written under a temporary name, flushed to
disk and renamed into place; only when every partition of a segment is in place is the segment
deleted. A crash anywhere leaves the segment, and a rerun skips the files already present, so no
row is ever lost or stored twice. Live segments are never touched: a writer holds a lock on its
active segment (see keel.serving.segments) and compaction takes only segments it can lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from keel.errors import InvalidInputError, StoreError
from keel.serving import feedback, predlog
from keel.serving.segments import any_sealed, claim, fsync_dir, parse_lines, segment_files

log = logging.getLogger(__name__)

_DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_LEFTOVER_AGE_S = 3600.0


@dataclass(frozen=True)
class CompactionResult:
    """What one ``compact`` call did."""

    segments: int = 0  # prediction segments compacted and deleted
    rows: int = 0  # prediction rows they held
    files: tuple[Path, ...] = ()  # Parquet files written (prediction and feedback)
    live: int = 0  # segments skipped because a live writer holds them
    feedback_segments: int = 0  # feedback segments compacted and deleted


def _partition(record: dict[str, Any]) -> tuple[str, str]:
    endpoint = record.get("endpoint")
    time_us = record.get("time_us")
    name = _DEFAULT_PARTITION if endpoint is None else quote(str(endpoint), safe="")
    if isinstance(time_us, int) and not isinstance(time_us, bool):
        day = datetime.fromtimestamp(time_us / 1e6, tz=UTC).date().isoformat()
    else:
        day = _DEFAULT_PARTITION
    return name, day


def _write_once(table: pa.Table, target: Path) -> bool:
    """Write ``table`` to ``target`` atomically; False when a previous run already did."""
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as sink:
            pq.write_table(table, sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return True


def _too_new(path: Path, older_than_s: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < older_than_s
    except FileNotFoundError:
        return True  # compacted by someone else meanwhile


def _sweep(folder: Path, pattern: str) -> None:
    """Delete leftovers of crashed writers or compactions: ``pattern`` files idle for an hour."""
    if not folder.is_dir():
        return
    for path in folder.glob(pattern):
        # An hour is far longer than any writer or compactor needs between creating such a
        # file and renaming it, so a file this old has no owner left.
        if not _too_new(path, _LEFTOVER_AGE_S):
            with claim(path) as data:
                if data is not None:
                    path.unlink()


def _compact_predictions(folder: Path, older_than_s: float) -> tuple[int, int, list[Path], int]:
    segments = rows = live = 0
    written: list[Path] = []
    source = predlog.segments_folder(folder)
    for path in segment_files(source):
        if _too_new(path, older_than_s):
            continue
        with claim(path) as data:
            if data is None:
                live += path.exists()  # else another compactor took it meanwhile
                continue
            groups: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
            for offset, record in parse_lines(data):
                groups.setdefault(_partition(record), []).append((offset, record))
            for (endpoint, day), group in sorted(groups.items()):
                target = (
                    predlog.compacted_folder(folder)
                    / f"endpoint={endpoint}"
                    / f"date={day}"
                    / f"part-{path.stem}.parquet"
                )
                if _write_once(predlog.prediction_table(group, path.stem), target):
                    written.append(target)
                rows += len(group)
            path.unlink()
            segments += 1
    if segments:
        fsync_dir(source)
    return segments, rows, written, live


def _compact_feedback(folder: Path, older_than_s: float) -> tuple[int, list[Path]]:
    segments = 0
    written: list[Path] = []
    source = feedback.segments_folder(folder)
    for path in segment_files(source):
        if _too_new(path, older_than_s):
            continue
        with claim(path) as data:
            if data is None:
                continue
            target = feedback.compacted_folder(folder) / f"part-{path.stem}.parquet"
            table = feedback.feedback_table(parse_lines(data), path.stem)
            if _write_once(table, target):
                written.append(target)
            path.unlink()
            segments += 1
    if segments:
        fsync_dir(source)
    return segments, written


def compact(folder: str | Path, *, older_than_s: float = 0) -> CompactionResult:
    """Turn every sealed segment under ``folder`` into Parquet, then delete the segment.

    A segment is sealed when its writer rolled past it, closed it or died; segments whose last
    change is less than ``older_than_s`` seconds old are left for a later run. Safe to run from
    several processes at once and to rerun after a crash.

    Example:
        >>> import tempfile
        >>> compact(tempfile.mkdtemp()).segments
        0
    """
    if older_than_s < 0:
        raise InvalidInputError(f"older_than_s must be >= 0, got {older_than_s}")
    folder = Path(folder)
    segments, rows, written, live = _compact_predictions(folder, older_than_s)
    feedback_segments, feedback_written = _compact_feedback(folder, older_than_s)
    for directory in (predlog.segments_folder(folder), feedback.segments_folder(folder)):
        _sweep(directory, ".*.creating")
    for directory in (predlog.compacted_folder(folder), feedback.compacted_folder(folder)):
        _sweep(directory, "**/.*.tmp")
    return CompactionResult(
        segments=segments,
        rows=rows,
        files=tuple(written + feedback_written),
        live=live,
        feedback_segments=feedback_segments,
    )


@dataclass
class Compactor:
    """A background thread that runs ``compact(folder)`` every ``interval_s`` seconds.

    With ``separate_process`` each run that has sealed segments to take happens in a child
    process at the lowest CPU priority: compaction parses JSON lines in Python, and in a
    server's own process it would hold the interpreter lock the event loop needs (a
    compaction of a busy minute's log stalled responses for hundreds of milliseconds).

    Example:
        >>> import tempfile
        >>> compactor = Compactor(tempfile.mkdtemp(), interval_s=60)
        >>> compactor.start()
        >>> compactor.stop()
    """

    folder: str | Path
    interval_s: float = 60.0
    older_than_s: float = 0.0
    separate_process: bool = False
    runs: int = field(default=0, init=False)
    failures: int = field(default=0, init=False)
    last_result: CompactionResult | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise InvalidInputError(
                f"interval_s must be positive, got {self.interval_s}; e.g. interval_s=60"
            )

    def start(self) -> None:
        """Start the thread (once; a second call does nothing while it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="keel-compactor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop and wait for the current run to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.separate_process:
                    self.last_result = compact(self.folder, older_than_s=self.older_than_s)
                elif self._work_waiting():
                    self.last_result = compact_in_child(self.folder, self.older_than_s)
                self.runs += 1
            except Exception:
                # A full disk or a bad file must not kill the thread: the segments stay and
                # the next run tries again.
                self.failures += 1
                log.exception("compaction of %s failed; will retry", self.folder)

    def _work_waiting(self) -> bool:
        folder = Path(self.folder)
        return any_sealed(predlog.segments_folder(folder)) or any_sealed(
            feedback.segments_folder(folder)
        )


def compact_in_child(folder: str | Path, older_than_s: float = 0.0) -> CompactionResult:
    """``compact`` run by a child process at the lowest CPU priority; StoreError if it fails."""
    command = [sys.executable, "-m", "keel.serving.compaction", str(folder), str(older_than_s)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StoreError(
            f"compaction of {folder} failed in its process (exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}"
        )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return CompactionResult(
        segments=int(found["segments"]),
        rows=int(found["rows"]),
        files=tuple(Path(f) for f in found["files"]),
        live=int(found["live"]),
        feedback_segments=int(found["feedback_segments"]),
    )


def _main(argv: list[str]) -> None:
    """``python -m keel.serving.compaction FOLDER [OLDER_THAN_S]``: compact at the lowest CPU
    priority and print the result as one JSON line."""
    os.nice(19 - os.nice(0))
    if hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    result = compact(argv[0], older_than_s=float(argv[1]) if len(argv) > 1 else 0.0)
    print(json.dumps({**asdict(result), "files": [str(f) for f in result.files]}))


if __name__ == "__main__":
    _main(sys.argv[1:])
