"""Online feature lookups with the offline path's rules: ttl, defaults and NULLs.

For a request at time T (default: now) and each entity row, a view's stored row counts when its
event time is in ``[T - ttl, T]``; otherwise the feature's default (else None) is served, as the
point-in-time join would give. A stored NULL is served as None (a value, not an absence). Each
value comes with the version of the view it was written under and its event time, so its age is
known; for views filled by batch materialization the result also carries the as-of time (the
event-time end of the last materialization).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    import pandas as pd

    from keel.features.definitions import Aggregation, FeatureView
    from keel.features.online.base import OnlineStore


@dataclass
class OnlineResult:
    """Features for each entity row, column by column, with where each value came from.

    ``columns`` holds the entity-row fields first, then the features in request order.
    ``versions[view][i]`` / ``event_us[view][i]`` describe row i's stored value of ``view``
    (None: no live value, the default was served).

    >>> result = store.get_online_features(["user_stats:spend"], [{"user_id": 1}])  # doctest: +SKIP
    >>> result.to_dict()["spend"], result.age("spend")                              # doctest: +SKIP
    ([12.5], datetime.timedelta(seconds=40))
    """

    columns: dict[str, list[Any]]
    sources: Mapping[str, str]  # feature column -> the view (or on-demand view) that gave it
    versions: dict[str, list[str | None]]
    event_us: dict[str, list[int | None]]
    request_us: int
    as_of: dict[str, datetime | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, list[Any]]:
        """``{column: values}``; the lists are the result's own (copy one before changing it)."""
        return dict(self.columns)

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.columns)

    def rows(self) -> list[dict[str, Any]]:
        names = list(self.columns)
        return [
            dict(zip(names, values, strict=True))
            for values in zip(*self.columns.values(), strict=True)
        ]

    def version(self, feature: str, row: int = 0) -> str | None:
        """The view version row ``row``'s value of ``feature`` was written under."""
        view = self._view_of(feature)
        return self.versions[view][row] if view in self.versions else None

    def age(self, feature: str, row: int = 0) -> timedelta | None:
        """How old row ``row``'s value of ``feature`` is at request time (None: default)."""
        view = self._view_of(feature)
        event = self.event_us.get(view, [None] * (row + 1))[row]
        return None if event is None else timedelta(microseconds=self.request_us - event)

    def _view_of(self, feature: str) -> str:
        if feature not in self.sources:
            raise InvalidInputError(
                f"{feature!r} is not a feature of this result; it has {sorted(self.sources)}"
            )
        return self.sources[feature]


@dataclass(frozen=True)
class ViewLookup:
    """How to serve one batch view's selected features: its point features (the stored newest
    row) and its windowed aggregations (folded from the event log at request time). Compiled
    once per feature list."""

    view: FeatureView
    features: tuple[str, ...]
    defaults: tuple[Any, ...]
    ttl_us: int | None
    aggregations: tuple[Aggregation, ...] = ()

    @classmethod
    def build(cls, view: FeatureView, names: Sequence[str]) -> ViewLookup:
        fields = {f.name: f for f in view.fields}
        point = [n for n in names if n in fields]
        wanted = set(names)
        aggregations = tuple(a for a in view.aggregation_list if a.output_name in wanted)
        defaults = tuple(
            _typed_default(view.name, fields[n].dtype, fields[n].default) for n in point
        )
        ttl = view.ttl_delta
        ttl_us = None if ttl is None else ttl // timedelta(microseconds=1)
        return cls(view, tuple(point), defaults, ttl_us, aggregations)

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.features + tuple(a.output_name for a in self.aggregations)

    def keys(self, entity_rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        names = self.view.entity.key_names
        try:
            return [tuple(row[k] for k in names) for row in entity_rows]
        except KeyError as exc:
            raise InvalidInputError(
                f"an entity row lacks join key {exc.args[0]!r} of feature view "
                f"{self.view.name!r}; give every row {list(names)}"
            ) from None
        except TypeError:
            raise InvalidInputError(
                "entity_rows must be a list of dicts such as [{'user_id': 1}]"
            ) from None

    def read(
        self, online: OnlineStore, keys: list[tuple[Any, ...]], request_us: int
    ) -> tuple[list[tuple[Any, ...]], list[str | None], list[int | None]]:
        """Per row: the point values to serve, the version and event time of a live stored
        row (None where the defaults were served)."""
        if not self.features:
            return [()] * len(keys), [None] * len(keys), [None] * len(keys)
        try:
            rows = online.read(self.view.name, keys, self.features)
        except NotFoundError:
            raise _not_materialized(self.view.name) from None
        lo = None if self.ttl_us is None else request_us - self.ttl_us
        values: list[tuple[Any, ...]] = []
        versions: list[str | None] = []
        events: list[int | None] = []
        for stored, event, version in zip(rows.values, rows.event_us, rows.versions, strict=True):
            if (
                stored is None
                or event is None
                or event > request_us
                or (lo is not None and event < lo)
            ):
                values.append(self.defaults)
                versions.append(None)
                events.append(None)
            else:
                values.append(stored)
                versions.append(version)
                events.append(event)
        return values, versions, events

    def aggregate(
        self, online: OnlineStore, keys: list[tuple[Any, ...]], request_us: int
    ) -> dict[str, list[Any]]:
        """Each selected aggregation per row over ``(T - window, T]`` of the stored events."""
        if not self.aggregations:
            return {}
        from keel.features.online.windows import aggregate_online, window_bounds

        since, until = window_bounds(self.aggregations, request_us)
        columns = sorted({a.column for a in self.aggregations})
        events = online.read_events(self.view.name, keys, columns, since, until)
        return aggregate_online(events, self.aggregations, request_us)


def _not_materialized(view: str) -> NotFoundError:
    return NotFoundError(
        f"feature view {view!r} has nothing in the online store; run "
        "`keel features materialize` (or push rows) first"
    )


def _typed_default(view: str, dtype: str, default: Any) -> Any:
    """The default as the offline join gives it: cast to the feature's declared type."""
    if default is None:
        return None
    from keel.features.offline.frames import arrow_type, default_scalar

    scalar = default_scalar(default, arrow_type(dtype), f"feature view {view!r}")
    return None if scalar is None else scalar.as_py()
