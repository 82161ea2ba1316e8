"""Declarative feature definitions: entities, fields, windowed aggregations and feature views.

A project declares them at module level in a Python file (``features.py`` by default) and
`keel features apply` registers each view with a version (see `keel.features.versioning`).

    from datetime import timedelta
    from keel.features import Aggregation, Entity, FeatureView, Field, ParquetSource

    user = Entity("user", join_keys={"user_id": "int64"})
    user_stats = FeatureView(
        "user_stats", entity=user,
        source=ParquetSource("data/tx/*.parquet", event_timestamp="event_ts"),
        features=[Field("amount", "float64", default=0.0)],
        aggregations=[Aggregation("amount", "sum", "7d")],
        ttl=timedelta(days=30), owner="risk-team")

Construction checks only the shape of a definition; checks against the data (columns, dtypes,
time zones) and the required owner run at apply time, so an error names the view and its fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError
from keel.features.offline.spec import AGGREGATIONS, DTYPES

if TYPE_CHECKING:
    from keel.features.sources import Source

_WINDOW = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{kind} name {name!r} is not a non-empty string; name it")
    return name


def _check_dtype(owner: str, dtype: object) -> str:
    if dtype not in DTYPES:
        raise InvalidInputError(f"{owner} has dtype {dtype!r}; use one of {sorted(DTYPES)}")
    return str(dtype)


def parse_window(value: timedelta | str, owner: str = "window") -> timedelta:
    """A window or ttl as a positive timedelta; strings such as ``"1h"``, ``"7d"``, ``"2w"``.

    >>> parse_window("7d")
    datetime.timedelta(days=7)
    """
    if isinstance(value, str):
        match = _WINDOW.match(value.strip())
        if match:
            value = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidInputError(
            f"{owner} is {value!r}; pass a positive timedelta or a string such as '1h', '7d'"
        )
    return value


@dataclass(frozen=True)
class Entity:
    """What features describe, identified by typed join keys (name -> dtype, in key order).

    >>> Entity("user", join_keys={"user_id": "int64"}).key_names
    ('user_id',)
    """

    name: str
    join_keys: Mapping[str, str]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("entity", self.name)
        keys = dict(self.join_keys)
        if not keys:
            raise InvalidInputError(
                f"entity {self.name!r} has no join keys; pass join_keys={{'user_id': 'int64'}}"
            )
        for key, dtype in keys.items():
            _check_name(f"join key of entity {self.name!r}", key)
            _check_dtype(f"join key {key!r} of entity {self.name!r}", dtype)
        object.__setattr__(self, "join_keys", keys)

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(self.join_keys)


@dataclass(frozen=True)
class Field:
    """One feature column of a view: ``name`` (the source column), ``dtype`` (one of
    `keel.features.offline.DTYPES`), the ``default`` given when an entity has no value.

    >>> Field("amount", "float64", default=0.0).dtype
    'float64'
    """

    name: str
    dtype: str
    default: Any = None
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("field", self.name)
        _check_dtype(f"field {self.name!r}", self.dtype)


@dataclass(frozen=True)
class Aggregation:
    """``function`` (sum, count, mean, min, max, last) of ``column`` over ``window`` before the
    request time; named ``{column}_{function}_{window}`` unless ``name`` is given.

    >>> Aggregation("amount", "sum", "7d").output_name
    'amount_sum_7d'
    """

    column: str
    function: str
    window: timedelta | str
    name: str | None = None
    default: Any = None

    def __post_init__(self) -> None:
        _check_name("aggregation column", self.column)
        if self.function not in AGGREGATIONS:
            raise InvalidInputError(
                f"aggregation of {self.column!r} uses function {self.function!r}; "
                f"use one of {list(AGGREGATIONS)}"
            )
        label = self.window if isinstance(self.window, str) else None
        window = parse_window(self.window, f"window of aggregation {self.column!r}")
        object.__setattr__(self, "window", window)
        if self.name is None:
            object.__setattr__(
                self, "name", f"{self.column}_{self.function}_{label or _label(window)}"
            )
        _check_name("aggregation", self.name)

    @property
    def output_name(self) -> str:
        return str(self.name)

    @property
    def window_delta(self) -> timedelta:
        return self.window if isinstance(self.window, timedelta) else parse_window(self.window)


def _label(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, eq=False)
class FeatureView:
    """Features of one entity read from one source, with an optional ``ttl`` (how old a value
    may be at request time) and windowed ``aggregations``. ``owner`` is required at apply.

    >>> FeatureView("user_stats", entity=user, source=tx, features=[Field("amount", "float64")],
    ...             owner="risk-team")  # doctest: +SKIP
    """

    name: str
    entity: Entity
    source: Source
    features: Iterable[Field] = ()
    ttl: timedelta | str | None = None
    owner: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    aggregations: Iterable[Aggregation] = ()

    def __post_init__(self) -> None:
        _check_name("feature view", self.name)
        owner = f"feature view {self.name!r}"
        if not isinstance(self.entity, Entity):
            raise InvalidInputError(f"{owner} has entity {self.entity!r}; pass an Entity")
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "aggregations", tuple(self.aggregations))
        object.__setattr__(self, "tags", dict(self.tags))
        if self.ttl is not None:
            object.__setattr__(self, "ttl", parse_window(self.ttl, f"ttl of {owner}"))
        if not self.features and not self.aggregations:
            raise InvalidInputError(f"{owner} has no features or aggregations; declare one")
        names = [f.name for f in self.fields] + [a.output_name for a in self.aggregation_list]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidInputError(f"{owner} declares feature {dupes[0]!r} twice; rename one")

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(self.features)

    @property
    def aggregation_list(self) -> tuple[Aggregation, ...]:
        return tuple(self.aggregations)

    @property
    def ttl_delta(self) -> timedelta | None:
        return None if self.ttl is None else parse_window(self.ttl)
