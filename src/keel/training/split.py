"""Time-based train/validation splits: the model is validated on a period after everything it
trained on, as it will be used — never on rows from its own training period.

    TimeSplit(valid_from="2026-03-02", valid_until="2026-03-30")  # fixed calendar bounds
    TimeSplit(valid_fraction=0.2)                                  # the last 20 % of the range

Rows with time < valid_from train; valid_from <= time < valid_until validate (valid_until None:
to the end); rows at or after valid_until are left out. A bound given without a time zone (a
date such as "2026-03-02") is read as UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ResolvedSplit:
    """The bounds a split resolved to on one frame, with the row counts of each part."""

    valid_from: pd.Timestamp
    valid_until: pd.Timestamp | None
    train_rows: int
    valid_rows: int
    dropped_rows: int

    def describe(self) -> dict[str, Any]:
        """JSON-ready bounds (ISO 8601, UTC) and counts, as recorded in keel/train.json."""
        return {
            "valid_from": self.valid_from.isoformat(),
            "valid_until": None if self.valid_until is None else self.valid_until.isoformat(),
            "train_rows": self.train_rows,
            "valid_rows": self.valid_rows,
            "dropped_rows": self.dropped_rows,
        }


@dataclass(frozen=True)
class TimeSplit:
    """Split rows by event time: ``valid_from`` (and optionally ``valid_until``) as dates or
    aware datetimes, or ``valid_fraction`` — the last fraction of the time range validates.

    >>> TimeSplit(valid_fraction=0.25).valid_fraction
    0.25
    """

    valid_from: str | datetime | None = None
    valid_until: str | datetime | None = None
    valid_fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.valid_from is None) == (self.valid_fraction is None):
            raise InvalidInputError(
                "TimeSplit needs exactly one of valid_from or valid_fraction; e.g. "
                "TimeSplit(valid_from='2026-03-02') or TimeSplit(valid_fraction=0.2)"
            )
        if self.valid_fraction is not None:
            fraction = self.valid_fraction
            if isinstance(fraction, bool) or not isinstance(fraction, int | float):
                raise InvalidInputError(f"TimeSplit valid_fraction {fraction!r} is not a number")
            if not 0 < fraction < 1:
                raise InvalidInputError(
                    f"TimeSplit valid_fraction {fraction!r} is outside (0, 1); e.g. 0.2"
                )
        start = _bound("valid_from", self.valid_from)
        end = _bound("valid_until", self.valid_until)
        if start is not None and end is not None and end <= start:
            raise InvalidInputError(
                f"TimeSplit valid_until {end.isoformat()} is not after valid_from "
                f"{start.isoformat()}; the validation period must not be empty"
            )

    def resolve(self, times: pd.Series) -> ResolvedSplit:
        """The bounds on ``times`` (an aware datetime column); raises when a part is empty.

        >>> TimeSplit(valid_from="2026-03-02").resolve(frame["event_timestamp"])  # doctest: +SKIP
        """
        times = _utc_times(times)
        start = _bound("valid_from", self.valid_from)
        end = _bound("valid_until", self.valid_until)
        if self.valid_fraction is not None:
            low, high = times.min(), times.max()
            start = low + (high - low) * (1 - self.valid_fraction)
        if start is None:  # __post_init__ requires valid_from or valid_fraction
            raise InvalidInputError("TimeSplit needs valid_from or valid_fraction")
        train = int((times < start).sum())
        dropped = 0 if end is None else int((times >= end).sum())
        valid = len(times) - train - dropped
        if train == 0 or valid == 0:
            part = "training" if train == 0 else "validation"
            raise InvalidInputError(
                f"the split {self.describe()} leaves no {part} rows (the data runs from "
                f"{times.min().isoformat()} to {times.max().isoformat()}); move the bounds "
                "inside that range"
            )
        return ResolvedSplit(start, end, train, valid, dropped)

    def apply(self, frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(train, valid)`` rows of ``frame`` by its time ``column``, in frame order."""
        if column not in frame.columns:
            raise InvalidInputError(
                f"the time column {column!r} is not in the data; its columns are "
                f"{list(frame.columns)}"
            )
        resolved = self.resolve(frame[column])
        return split_frame(frame, column, resolved)

    def describe(self) -> dict[str, Any]:
        """The split as declared (JSON-ready)."""
        return {
            "valid_from": _text(self.valid_from),
            "valid_until": _text(self.valid_until),
            "valid_fraction": self.valid_fraction,
        }


def split_frame(
    frame: pd.DataFrame, column: str, resolved: ResolvedSplit
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, valid)`` of ``frame`` at the resolved bounds, indexes reset."""
    times = _utc_times(frame[column])
    train_mask = times < resolved.valid_from
    valid_mask = ~train_mask
    if resolved.valid_until is not None:
        valid_mask &= times < resolved.valid_until
    train = frame[train_mask.to_numpy()].reset_index(drop=True)
    valid = frame[valid_mask.to_numpy()].reset_index(drop=True)
    return train, valid


def _utc_times(times: pd.Series) -> pd.Series:
    import pandas as pd

    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise InvalidInputError(
            f"the time column {times.name!r} has type {times.dtype}, not an aware datetime; "
            "store event times as timestamps with a time zone (UTC)"
        )
    missing = int(times.isna().sum())
    if missing:
        raise InvalidInputError(
            f"the time column {times.name!r} has {missing} missing values; every row needs "
            "an event time to be split"
        )
    converted: pd.Series = times.dt.tz_convert("UTC")
    return converted


def _bound(name: str, value: str | datetime | None) -> pd.Timestamp | None:
    if value is None:
        return None
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"TimeSplit {name} {value!r} is not a date or time; write e.g. '2026-03-02'"
        ) from exc
    if pd.isna(stamp):
        raise InvalidInputError(f"TimeSplit {name} {value!r} is not a date or time")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _text(value: str | datetime | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()
