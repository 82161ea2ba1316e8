"""What an offline engine is asked to compute, independent of the engine.

The feature store turns its definitions into these plain, frozen values; an engine (DuckDB,
later Spark) turns a `JoinRequest` into a training set with the semantics of ARCHITECTURE.md
("Point-in-time join", "Time"). For each entity row (keys, T) and each view:

- candidates have equal typed keys (a NULL key matches nothing), ``T - ttl <= event_ts <= T``
  and, when ``as_known_at`` and the view has a created timestamp, ``created_ts <= T``;
- the winner is the greatest ``(event_ts, created_ts, ingestion sequence)``; the sequence is
  the row order of an in-memory source, and for Parquet the file order (as DuckDB lists the
  glob: sorted within a folder, a folder's own files before its subfolders') then the row order
  within the file;
- no candidate gives the feature's default, else NULL; a candidate whose value is NULL gives
  NULL (a value, not an absence).

Rows with a NULL event timestamp are never candidates; a NULL created timestamp counts as the
event timestamp. Timestamps are compared at microsecond precision (finer digits are floored).
Aggregations cover the window ``(T - window, T]`` with the same key and created-timestamp rules,
ignore NULL values, and give the aggregation's default (count: 0) when nothing is left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    import os

    import pandas as pd
    import pyarrow as pa

    TableLike: TypeAlias = str | os.PathLike[str] | pa.Table | pd.DataFrame

DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float32",
        "float64",
        "string",
        "binary",
        "date",
        "timestamp",  # timezone-aware UTC, microseconds
    }
)
AGGREGATIONS = ("count", "last", "max", "mean", "min", "sum")


def _check_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{kind} name {name!r} is not a non-empty string; name it")


def _check_dtype(owner: str, dtype: object) -> None:
    if dtype not in DTYPES:
        raise InvalidInputError(f"{owner} has dtype {dtype!r}; use one of {sorted(DTYPES)}")


def _check_unique(owner: str, kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidInputError(f"{owner} declares {kind} {name!r} twice; rename one")
        seen.add(name)


@dataclass(frozen=True)
class FeatureInput:
    """One feature of a view: its output ``name``, declared ``dtype`` (one of `DTYPES`), the
    source ``column`` it reads (default: the same name) and the ``default`` used when an entity
    row has no candidate.

    >>> FeatureInput("spend_7d", "float64", default=0.0)
    FeatureInput(name='spend_7d', dtype='float64', column=None, default=0.0)
    """

    name: str
    dtype: str
    _: KW_ONLY
    column: str | None = None
    default: Any = None

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        _check_dtype(f"feature {self.name!r}", self.dtype)

    @property
    def source_column(self) -> str:
        return self.column or self.name


@dataclass(frozen=True)
class AggregationInput:
    """A windowed aggregation: ``function`` (one of `AGGREGATIONS`) of ``column`` over the
    source rows with ``T - window < event_ts <= T``. ``dtype`` defaults to int64 for count,
    float64 for mean, int64/float64 for sums of integers/floats and the column's type otherwise.

    >>> AggregationInput("spend_1d", "amount", "sum", timedelta(days=1))  # doctest: +ELLIPSIS
    AggregationInput(name='spend_1d', column='amount', function='sum', ...)
    """

    name: str
    column: str
    function: str
    window: timedelta
    _: KW_ONLY
    dtype: str | None = None
    default: Any = None

    def __post_init__(self) -> None:
        _check_name("aggregation", self.name)
        _check_name(f"column of aggregation {self.name!r}", self.column)
        if self.function not in AGGREGATIONS:
            raise InvalidInputError(
                f"aggregation {self.name!r} uses function {self.function!r}; "
                f"use one of {list(AGGREGATIONS)}"
            )
        if not isinstance(self.window, timedelta) or self.window <= timedelta(0):
            raise InvalidInputError(
                f"aggregation {self.name!r} has window {self.window!r}; "
                "pass a positive timedelta such as timedelta(days=7)"
            )
        if self.dtype is not None:
            _check_dtype(f"aggregation {self.name!r}", self.dtype)


@dataclass(frozen=True, eq=False)
class ViewInput:
    """One feature view as an engine sees it. ``source`` is a Parquet file, folder or glob
    (local path or fsspec URL) or an in-memory Arrow table / pandas DataFrame.
    ``source_time_zone`` declares the zone of naive timestamps in the source; without it naive
    timestamps are refused.

    >>> ViewInput("user_stats", ("user_id",), "data/users/*.parquet", "event_ts",
    ...           features=(FeatureInput("spend_7d", "float64"),), ttl=timedelta(days=2))
    ... # doctest: +SKIP
    """

    name: str
    join_keys: tuple[str, ...]
    source: TableLike
    event_timestamp: str
    _: KW_ONLY
    created_timestamp: str | None = None
    features: tuple[FeatureInput, ...] = ()
    aggregations: tuple[AggregationInput, ...] = ()
    ttl: timedelta | None = None
    source_time_zone: str | None = None

    def __post_init__(self) -> None:
        _check_name("view", self.name)
        owner = f"view {self.name!r}"
        object.__setattr__(self, "join_keys", tuple(self.join_keys))
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "aggregations", tuple(self.aggregations))
        if not self.join_keys:
            raise InvalidInputError(f"{owner} has no join keys; pass join_keys=('user_id',)")
        for key in self.join_keys:
            _check_name(f"join key of {owner}", key)
        _check_unique(owner, "join key", list(self.join_keys))
        if not self.features and not self.aggregations:
            raise InvalidInputError(f"{owner} has no features or aggregations; declare one")
        names = [f.name for f in self.features] + [a.name for a in self.aggregations]
        _check_unique(owner, "feature", names)
        if self.ttl is not None and (
            not isinstance(self.ttl, timedelta) or self.ttl <= timedelta(0)
        ):
            raise InvalidInputError(
                f"{owner} has ttl {self.ttl!r}; pass a positive timedelta, or None for no limit"
            )
        if self.source_time_zone is not None:
            _check_zone(owner, self.source_time_zone)


def _check_zone(owner: str, zone: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInputError(
            f"{owner} declares source_time_zone {zone!r}, which is not a known time zone; "
            "use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from exc


@dataclass(frozen=True, eq=False)
class JoinRequest:
    """A training-set request: ``entities`` (DataFrame, Arrow table or Parquet path) with the
    entity keys and the time column ``timestamp_column``, and the ``views`` to join.
    ``entity_keys`` maps a view join key to its entity column where the names differ.
    ``as_known_at=False`` drops the ``created_ts <= T`` rule (rule 3); ``full_feature_names``
    names outputs ``view__feature``.

    >>> JoinRequest(entity_df, (user_view,), timestamp_column="ts")  # doctest: +SKIP
    """

    entities: TableLike
    views: tuple[ViewInput, ...]
    _: KW_ONLY
    timestamp_column: str = "event_timestamp"
    entity_keys: Mapping[str, str] = field(default_factory=dict)
    as_known_at: bool = True
    full_feature_names: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "views", tuple(self.views))
        object.__setattr__(self, "entity_keys", dict(self.entity_keys))
        if not self.views:
            raise InvalidInputError("the join request has no views; pass at least one ViewInput")
        _check_unique("the join request", "view", [v.name for v in self.views])
        _check_name("timestamp column", self.timestamp_column)

    def entity_column(self, join_key: str) -> str:
        """The entity-frame column holding a view's join key."""
        return self.entity_keys.get(join_key, join_key)

    def output_name(self, view: ViewInput, feature: str) -> str:
        return f"{view.name}__{feature}" if self.full_feature_names else feature
