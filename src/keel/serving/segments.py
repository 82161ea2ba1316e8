"""Append-only JSON-line segment files, the durable core of the prediction and feedback logs.

A writer owns one *active* segment at a time and holds an exclusive ``flock`` on it for as long
as it writes there. Every record is one ``os.write`` of a whole line to an ``O_APPEND`` file
descriptor, so once the call returns the kernel has the line: killing the process (even with
SIGKILL) cannot lose it. A segment is *sealed* when its lock is gone — the writer rolled to a new
segment, closed, or died (the kernel drops the locks of a dead process). Compaction claims only
sealed segments by taking the lock itself, so a live writer's segment is never touched, and the
lock follows the process rather than its pid, which the system may reuse.

Segment names sort by creation time: ``<prefix>-<time_us>-<pid>-<random>.jsonl``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keel.errors import InvalidInputError, StoreError

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


def _jsonable(value: Any) -> Any:
    # NumPy scalars and arrays arrive straight from model outputs; they know how to become
    # plain Python values.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise InvalidInputError(
        f"cannot log a value of type {type(value).__name__} ({value!r:.80}); "
        "log numbers, strings, booleans, None, lists or dicts of them"
    )


def dumps_line(record: Mapping[str, Any]) -> bytes:
    """One JSON line (NaN and infinities allowed); escapes keep it free of raw newlines."""
    return (json.dumps(record, separators=(",", ":"), default=_jsonable) + "\n").encode()


def parse_lines(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    """The records of a segment's bytes with their byte offsets.

    Only newline-terminated lines count: a cut last line (a write in progress, or a disk that
    filled up) is skipped, as is a line that is not a JSON object.
    """
    records: list[tuple[int, dict[str, Any]]] = []
    offset = 0
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines(keepends=True):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            records.append((offset, value))
        else:
            log.warning("skipping an unreadable log line at byte %d", offset)
        offset += len(line)
    return records


def segment_files(folder: Path) -> list[Path]:
    """The segment files in ``folder``, oldest first (live and sealed alike)."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"*{SUFFIX}"))


def read_segment(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The complete records of one segment; an empty list when it was compacted meanwhile."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return parse_lines(data)


class SegmentWriter:
    """Thread-safe appender of JSON lines to segment files in ``folder``.

    A new segment starts when the next line would take the active one past ``segment_bytes``,
    or when the active one is older than ``max_age_s`` (so a quiet endpoint's predictions
    still reach compaction).

    Example:
        >>> import tempfile
        >>> writer = SegmentWriter(Path(tempfile.mkdtemp()), prefix="seg", segment_bytes=1 << 20)
        >>> writer.write({"request_id": "r1"})
        >>> writer.close()
    """

    def __init__(
        self, folder: Path, *, prefix: str, segment_bytes: int, max_age_s: float = 3600.0
    ) -> None:
        if segment_bytes <= 0:
            raise InvalidInputError(
                f"segment_bytes must be positive, got {segment_bytes}; use e.g. 64 << 20"
            )
        if max_age_s <= 0:
            raise InvalidInputError(
                f"max_age_s must be positive, got {max_age_s}; use e.g. 3600 (one hour)"
            )
        self.max_age_s = max_age_s
        self._opened = 0.0
        self.folder = folder
        self.prefix = prefix
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._size = 0
        self.path: Path | None = None

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line; when this returns, the kernel holds the line."""
        self.write_lines(dumps_line(record))

    def write_lines(self, lines: bytes) -> None:
        """Append complete lines (each ending in a newline) with one system call."""
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                self._open()
            elif self._size and (
                self._size + len(lines) > self.segment_bytes
                or time.monotonic() - self._opened > self.max_age_s
            ):
                self._seal()
                self._open()
            fd = self._fd
            if fd is None:  # pragma: no cover - _open either sets it or raises
                raise StoreError("segment writer has no open segment")
            try:
                written = os.write(fd, lines)
                # A regular file takes the whole buffer unless the disk is full; finish the
                # line so a reader never sees half of it followed by the next record.
                while written < len(lines):
                    written += os.write(fd, lines[written:])
            except OSError as exc:
                # A cut line may now end this segment. Sealing it keeps the cut line last
                # (where readers skip it) instead of glued to the next, acknowledged record.
                self._seal()
                raise StoreError(
                    f"cannot append to log segment in {self.folder}: {exc}; "
                    "free disk space or fix the folder's permissions"
                ) from exc
            self._size += len(lines)

    def close(self) -> None:
        """Seal the active segment; a later ``write`` starts a new one."""
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                self._seal()
            self._fd = None

    def __del__(self) -> None:
        # A writer dropped without close() must not keep its descriptor (and the lock that
        # keeps compaction away) for the rest of the process's life.
        fd = getattr(self, "_fd", None)
        if fd is not None and getattr(self, "_pid", None) == os.getpid():
            os.close(fd)

    def _open(self) -> None:
        if self._fd is not None:
            # Inherited across fork: closing our copy leaves the parent's lock in place, and
            # this process gets a segment of its own so the two never interleave.
            os.close(self._fd)
            self._fd = None
        self.folder.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        name = f"{self.prefix}-{time.time_ns() // 1000:016d}-{pid}-{uuid.uuid4().hex[:8]}"
        # Locked under a hidden name first, then renamed: compaction only looks at *.jsonl, so
        # it can never claim (and delete) a segment in the instant before the writer locks it.
        creating = self.folder / f".{name}.creating"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(creating, flags, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot create a log segment in {self.folder}: {exc}; "
                "check that the folder is writable"
            ) from exc
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = self.folder / f"{name}{SUFFIX}"
        os.rename(creating, path)
        self._fd, self._pid, self._size, self.path = fd, pid, 0, path
        self._opened = time.monotonic()

    def _seal(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd = None
        self.path = None


@contextmanager
def claim(path: Path) -> Iterator[bytes | None]:
    """Lock a sealed segment for compaction and yield its bytes; ``None`` when it is live.

    The caller deletes the segment (``path.unlink()``) inside the block once its rows are
    safely stored elsewhere; the lock keeps a second compactor out meanwhile.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None  # a live writer holds it
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            yield None  # another compactor finished it while we waited
            return
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        yield b"".join(chunks)
    finally:
        os.close(fd)


def any_sealed(folder: Path) -> bool:
    """Whether ``folder`` holds a segment no live writer holds (one compaction would take)."""
    for path in segment_files(folder):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # live
        else:
            return True
        finally:
            os.close(fd)  # closing drops the lock taken, if any
    return False


def fsync_dir(folder: Path) -> None:
    """Make renames and deletions in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
