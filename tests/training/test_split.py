"""Time splits: never a training row at or after the validation start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError
from keel.training.split import TimeSplit

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def frame_of(offsets: list[int]) -> pd.DataFrame:
    """Rows at BASE + offset minutes, with a row id to follow them through the split."""
    times = pd.to_datetime([BASE + timedelta(minutes=m) for m in offsets], utc=True)
    return pd.DataFrame({"row": range(len(offsets)), "event_timestamp": times})


offsets = st.lists(st.integers(0, 10_000), min_size=2, max_size=200)


@settings(max_examples=150, deadline=None)
@given(offsets, st.integers(0, 10_000), st.one_of(st.none(), st.integers(1, 5_000)))
def test_fixed_bounds_partition_the_rows(rows: list[int], start: int, length: int | None) -> None:
    frame = frame_of(rows)
    valid_from = BASE + timedelta(minutes=start)
    valid_until = None if length is None else valid_from + timedelta(minutes=length)
    split = TimeSplit(valid_from=valid_from, valid_until=valid_until)
    times = frame["event_timestamp"]
    n_train = int((times < valid_from).sum())
    n_dropped = 0 if valid_until is None else int((times >= valid_until).sum())
    if n_train == 0 or n_train + n_dropped == len(frame):
        with pytest.raises(InvalidInputError, match="leaves no"):
            split.apply(frame, "event_timestamp")
        return
    train, valid = split.apply(frame, "event_timestamp")
    # No training row at or after the validation start.
    assert (train["event_timestamp"] < valid_from).all()
    assert (valid["event_timestamp"] >= valid_from).all()
    if valid_until is not None:
        assert (valid["event_timestamp"] < valid_until).all()
    # Every row in exactly one part, or dropped because it is at or after valid_until.
    seen = list(train["row"]) + list(valid["row"])
    assert len(seen) == len(set(seen))
    dropped = set(frame["row"]) - set(seen)
    assert all(frame.loc[r, "event_timestamp"] >= valid_until for r in dropped)
    assert len(dropped) == n_dropped


@settings(max_examples=150, deadline=None)
@given(offsets, st.floats(0.01, 0.99))
def test_fraction_validates_the_last_part_of_the_range(rows: list[int], fraction: float) -> None:
    frame = frame_of(rows)
    split = TimeSplit(valid_fraction=fraction)
    times = frame["event_timestamp"]
    low, high = times.min(), times.max()
    bound = low + (high - low) * (1 - fraction)
    if (times < bound).sum() == 0 or (times >= bound).sum() == 0:
        with pytest.raises(InvalidInputError, match="leaves no"):
            split.apply(frame, "event_timestamp")
        return
    train, valid = split.apply(frame, "event_timestamp")
    assert train["event_timestamp"].max() < valid["event_timestamp"].min()
    assert len(train) + len(valid) == len(frame)
    assert split.resolve(times).valid_from == bound


def test_dates_without_zone_are_utc_and_describe_is_iso() -> None:
    frame = frame_of([0, 60 * 24, 60 * 48, 60 * 72])
    resolved = TimeSplit(valid_from="2026-01-02", valid_until="2026-01-04").resolve(
        frame["event_timestamp"]
    )
    assert resolved.describe() == {
        "valid_from": "2026-01-02T00:00:00+00:00",
        "valid_until": "2026-01-04T00:00:00+00:00",
        "train_rows": 1,
        "valid_rows": 2,
        "dropped_rows": 1,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of valid_from or valid_fraction"),
        ({"valid_from": "2026-01-02", "valid_fraction": 0.2}, "exactly one"),
        ({"valid_fraction": 1.5}, "outside \\(0, 1\\)"),
        ({"valid_fraction": "0.2"}, "is not a number"),
        ({"valid_from": "yesterday-ish"}, "is not a date or time"),
        ({"valid_from": "2026-01-05", "valid_until": "2026-01-02"}, "is not after valid_from"),
    ],
)
def test_bad_splits_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        TimeSplit(**kwargs)  # type: ignore[arg-type]


def test_naive_or_missing_times_are_refused() -> None:
    naive = pd.DataFrame({"event_timestamp": pd.to_datetime(["2026-01-01", "2026-01-03"])})
    with pytest.raises(InvalidInputError, match="not an aware datetime"):
        TimeSplit(valid_from="2026-01-02").apply(naive, "event_timestamp")
    missing = frame_of([0, 3000])
    missing.loc[0, "event_timestamp"] = pd.NaT
    with pytest.raises(InvalidInputError, match="1 missing values"):
        TimeSplit(valid_from="2026-01-02").apply(missing, "event_timestamp")
    with pytest.raises(InvalidInputError, match="time column 'ts' is not in the data"):
        TimeSplit(valid_from="2026-01-02").apply(missing, "ts")
