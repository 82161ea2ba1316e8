"""Windowed aggregations at request time, folded from the online event log.

The offline semantics (``keel.features.offline.spec``), applied to the events a store returns
for request time ``T``: an event counts for an aggregation of window ``w`` when its event time
is in ``(T - w, T]``, its created time is at most ``T`` (a missing created time is the event
time) and its value is not NULL. Nothing left gives the aggregation's default (``count``: 0).

- ``count``: the values left (NaN is a value);
- ``sum``: an int of integers, else a float (exactly rounded; NaN, or +inf with -inf, gives
  NaN);
- ``mean``: a float; ``min``/``max``: of the values, NaN greater than every number (as DuckDB
  orders it); ``last``: the value of the greatest (event, created, sequence).

    events = store.read_events(view, keys, ["amount"], *window_bounds(aggs, now_us))
    aggregate_online(events, aggs, now_us)  # {"amount_sum_7d": [12.5, 0.0, ...]}
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from numbers import Integral
from typing import Any, Protocol

from keel.errors import InvalidInputError
from keel.features.online.base import EventRows

_MICRO = timedelta(microseconds=1)
_NUMBERS = (int, float)


class WindowedAggregation(Protocol):
    """What an aggregation needs to be computed online; `keel.features.Aggregation` and
    `keel.features.offline.AggregationInput` both qualify."""

    @property
    def name(self) -> str | None: ...

    @property
    def column(self) -> str: ...

    @property
    def function(self) -> str: ...

    @property
    def window(self) -> timedelta | str: ...

    @property
    def default(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Plan:
    name: str
    index: int  # of the column in EventRows.columns
    window_us: int
    fold: Callable[[list[Any]], Any]
    default: Any
    as_float: bool  # the declared dtype is a float: an int result becomes a float


def longest_window(aggregations: Sequence[WindowedAggregation]) -> timedelta:
    """The longest window of ``aggregations``: the ``retain`` to append their events with."""
    if not aggregations:
        raise InvalidInputError("no aggregations were given; pass at least one")
    return max(_window(agg) for agg in aggregations)


def window_bounds(aggregations: Sequence[WindowedAggregation], request_us: int) -> tuple[int, int]:
    """``(since_us, until_us)`` to pass to ``read_events`` for a request at ``request_us``."""
    request_us = _micros(request_us)
    return request_us - longest_window(aggregations) // _MICRO, request_us


def _micros(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InvalidInputError(f"request_us={value!r} must be an int (epoch µs, UTC)")
    return int(value)


def aggregate_online(
    events: EventRows,
    aggregations: Sequence[WindowedAggregation],
    request_us: int,
    *,
    as_known_at: bool = True,
) -> dict[str, list[Any]]:
    """Each aggregation for each key of ``events`` (same order) at request time ``request_us``
    (epoch µs, UTC), exactly as the offline engine computes it for an entity row at that time.

    ``events`` must cover ``(request_us - longest window, request_us]`` and hold the column of
    every aggregation. ``as_known_at=False`` also counts events created after ``request_us``.

        aggregate_online(events, [Aggregation("amount", "sum", "7d")], now_us)
        # {"amount_sum_7d": [12.5, None]}
    """
    request_us = _micros(request_us)
    plans = [_plan(agg, events.columns) for agg in aggregations]
    results: dict[str, list[Any]] = {plan.name: [] for plan in plans}
    for event_us, created_us, rows in zip(
        events.event_us, events.created_us, events.values, strict=True
    ):
        end = bisect_right(event_us, request_us)
        for plan in plans:
            start = bisect_right(event_us, request_us - plan.window_us, 0, end)
            index = plan.index
            values = [
                rows[j][index]
                for j in range(start, end)
                if rows[j][index] is not None and (not as_known_at or created_us[j] <= request_us)
            ]
            results[plan.name].append(_finish(plan, values))
    return results


def _finish(plan: _Plan, values: list[Any]) -> Any:
    if not values:
        return plan.default
    value = plan.fold(values)
    if plan.as_float and type(value) is int:
        return float(value)
    return value


def _window(agg: WindowedAggregation) -> timedelta:
    window = agg.window
    if not isinstance(window, timedelta) or window <= timedelta(0):
        raise InvalidInputError(
            f"aggregation {agg.name!r} has window {window!r}; pass a positive timedelta"
        )
    return window


def _plan(agg: WindowedAggregation, columns: tuple[str, ...]) -> _Plan:
    name = agg.name or f"{agg.column}_{agg.function}"
    fold = _FOLDS.get(agg.function)
    if fold is None:
        raise InvalidInputError(
            f"aggregation {name!r} uses function {agg.function!r}; use one of {sorted(_FOLDS)}"
        )
    if agg.column not in columns:
        raise InvalidInputError(
            f"aggregation {name!r} reads column {agg.column!r}, which the events were not read "
            f"with (they have {list(columns)}); pass it to read_events"
        )
    dtype = getattr(agg, "dtype", None)
    default = agg.default
    if agg.function == "count":
        default = 0  # a count is never missing: an empty window counts 0, as offline
    elif agg.function == "mean" and default is not None:
        default = float(default)
    as_float = agg.function == "mean" or (isinstance(dtype, str) and dtype.startswith("float"))
    if as_float and type(default) is int:
        default = float(default)
    return _Plan(
        name,
        columns.index(agg.column),
        _window(agg) // _MICRO,
        _fold(agg, name, fold),
        default,
        as_float,
    )


def _fold(
    agg: WindowedAggregation, name: str, fold: Callable[[list[Any]], Any]
) -> Callable[[list[Any]], Any]:
    if agg.function not in ("sum", "mean"):
        return fold

    def numeric(values: list[Any]) -> Any:
        for value in values:
            if type(value) not in _NUMBERS:
                raise InvalidInputError(
                    f"aggregation {name!r} takes the {agg.function} of column {agg.column!r}, "
                    f"which holds {type(value).__name__} values; use a numeric column, or "
                    "count/min/max/last"
                )
        return fold(values)

    return numeric


def _sum(values: list[Any]) -> Any:
    if all(type(value) is int for value in values):
        return sum(values)
    return _float_sum(values)


def _float_sum(values: list[Any]) -> float:
    positive = negative = False
    for value in values:
        if value != value:
            return math.nan
        if value == math.inf:
            positive = True
        elif value == -math.inf:
            negative = True
    if positive or negative:
        return math.nan if positive and negative else (math.inf if positive else -math.inf)
    try:
        return math.fsum(values)
    except OverflowError:  # the exact sum is beyond the float range: IEEE addition gives ±inf
        return float(sum(values))


def _mean(values: list[Any]) -> float:
    if all(type(value) is int for value in values):
        total: int = sum(values)
        return total / len(values)  # int / int is correctly rounded
    return _float_sum(values) / len(values)


def _max(values: list[Any]) -> Any:
    for value in values:
        if value != value:  # NaN sorts above every number
            return value
    return max(values)


def _min(values: list[Any]) -> Any:
    numbers = [value for value in values if value == value]
    return min(numbers) if numbers else values[0]


_FOLDS: dict[str, Callable[[list[Any]], Any]] = {
    "count": len,
    "sum": _sum,
    "mean": _mean,
    "min": _min,
    "max": _max,
    "last": lambda values: values[-1],
}
