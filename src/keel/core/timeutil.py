"""All timestamps inside Keel are timezone-aware UTC; the database stores epoch milliseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def utcnow() -> datetime:
    return datetime.now(UTC)


def at_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else at_ms(ms)


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime; naive datetimes are refused."""
    if value.tzinfo is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} has no time zone; "
            "pass an aware datetime such as datetime(..., tzinfo=UTC)"
        )
    return int(value.timestamp() * 1000)


def iso(ms: int | None) -> str:
    moment = from_ms(ms)
    return moment.isoformat(timespec="seconds") if moment else ""
