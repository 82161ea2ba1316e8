"""In-memory batching of metric points, so a training loop pays microseconds per point.

Points are written when the buffer holds ``batch_size`` of them, when ``flush_seconds`` have
passed since the last write (checked on each call: no background thread), and on flush/end.

Values: any real number (int, float, NumPy scalar, a one-element tensor through ``.item()``).
``inf`` and ``-inf`` are stored as they are. NaN is refused with InvalidInputError: SQLite
stores NaN as NULL, which the NOT NULL ``value`` column rejects, and a NaN loss is better
caught at the line that logged it than found later as a hole in the series.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from keel.core.timeutil import now_ms, to_ms
from keel.errors import InvalidInputError
from keel.tracking.writes import Point, check_key

_MAX_STEP = 2**63 - 1  # BIGINT


class MetricBuffer:
    """Buffered points of one run; ``write`` stores a batch (in one transaction).

    >>> buffer = MetricBuffer(print, batch_size=2, flush_seconds=60)
    >>> buffer.add("loss", 0.5)
    >>> buffer.add("loss", 0.4)       # doctest: +ELLIPSIS
    [('loss', 0.5, 0, ...), ('loss', 0.4, 1, ...)]
    """

    def __init__(
        self,
        write: Callable[[list[Point]], None],
        *,
        batch_size: int,
        flush_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._points: list[Point] = []
        self._next_step: dict[str, int] = {}
        self._known_keys: set[str] = set()
        self._lock = threading.Lock()
        self._last_write = clock()

    def __len__(self) -> int:
        return len(self._points)

    def next_step(self, key: str) -> int:
        """The step a point of ``key`` logged without one gets: one past the greatest so far."""
        return self._next_step.get(key, 0)

    def add(
        self, key: str, value: object, step: int | None = None, timestamp: datetime | None = None
    ) -> None:
        """Buffer one point (validated now, so a bad point never reaches the database)."""
        if key not in self._known_keys:
            self._known_keys.add(check_key("metric", key))
        number = metric_value(key, value)
        checked_step = None if step is None else _check_step(key, step)
        ts = now_ms() if timestamp is None else _timestamp_ms(key, timestamp)
        with self._lock:
            self._append(key, number, checked_step, ts)
            self._flush_if_due()

    def add_many(self, values: Mapping[str, object], step: int | None = None) -> None:
        """Buffer one point per key at ``step``: all of them, or none if one is invalid."""
        checked = [
            (check_key("metric", key), metric_value(key, value)) for key, value in values.items()
        ]
        checked_step = None if step is None else _check_step(", ".join(values), step)
        ts = now_ms()
        with self._lock:
            for key, number in checked:
                self._append(key, number, checked_step, ts)
            self._flush_if_due()

    def _append(self, key: str, number: float, step: int | None, ts: int) -> None:
        following = self._next_step.get(key, 0)
        if step is None:
            step = following
        if step >= following:
            self._next_step[key] = step + 1
        self._points.append((key, number, step, ts))

    def _flush_if_due(self) -> None:
        due = len(self._points) >= self._batch_size
        if due or self._clock() - self._last_write >= self._flush_seconds:
            self._flush_locked()

    def flush(self) -> None:
        """Write every buffered point now."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._points:
            # Points leave the buffer only once written: a failed write loses nothing.
            self._write(self._points)
            self._points = []
        self._last_write = self._clock()


def metric_value(key: str, value: object) -> float:
    """``value`` as a float; bool, str, None, NaN and non-numbers raise InvalidInputError."""
    kind = type(value)
    if kind is not float and kind is not int:
        if hasattr(value, "item") and not isinstance(value, numbers.Number):
            value = value.item()  # a NumPy 0-d array or a one-element tensor
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidInputError(
                f"metric {key!r}: value {value!r} is a {type(value).__name__}, not a real "
                "number; log an int or a float"
            )
    try:
        number = float(value)  # type: ignore[arg-type]
    except (OverflowError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"metric {key!r}: value {value!r} is not a float: {exc}") from None
    if math.isnan(number):
        raise InvalidInputError(
            f"metric {key!r}: value is NaN, which Keel does not store; check for divergence "
            "(math.isnan) and log a finite value or skip the point"
        )
    return number


def _check_step(key: str, step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise InvalidInputError(f"metric {key!r}: step {step!r} is not an int; pass an int step")
    number = int(step)
    if not -_MAX_STEP <= number < _MAX_STEP:
        raise InvalidInputError(f"metric {key!r}: step {number} is out of the 64-bit range")
    return number


def _timestamp_ms(key: str, timestamp: object) -> int:
    if not isinstance(timestamp, datetime):
        raise InvalidInputError(
            f"metric {key!r}: timestamp {timestamp!r} is not a datetime; "
            "pass datetime.now(UTC) or leave it out"
        )
    try:
        return to_ms(timestamp)
    except ValueError as exc:
        raise InvalidInputError(f"metric {key!r}: {exc}") from None
