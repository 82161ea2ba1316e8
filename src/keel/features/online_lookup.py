"""`FeatureStore.get_online_features`: one read per view, then on-demand views row by row.

The selection and the per-view lookups are compiled once per feature list and cached on the
store, so a request costs the store reads plus a little Python per row."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError
from keel.features.serving import OnlineResult, ViewLookup

if TYPE_CHECKING:
    from keel.features.selection import Selection
    from keel.features.service import FeatureService
    from keel.features.store import FeatureStore

_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def lookup(
    store: FeatureStore,
    features: Sequence[str] | None,
    entity_rows: Sequence[Mapping[str, Any]],
    *,
    service: str | FeatureService | None,
    request_time: datetime | None,
) -> OnlineResult:
    selection, lookups = _compiled(store, features, service)
    request_us = _request_us(request_time)
    columns: dict[str, list[Any]] = {}
    if entity_rows:
        for name in entity_rows[0]:
            columns[name] = [row.get(name) for row in entity_rows]
    values: dict[tuple[str, str], list[Any]] = {}
    versions: dict[str, list[str | None]] = {}
    events: dict[str, list[int | None]] = {}
    for view_lookup in lookups:
        name = view_lookup.view.name
        keys = view_lookup.keys(entity_rows)
        rows, versions[name], events[name] = view_lookup.read(store.online, keys, request_us)
        for j, feature in enumerate(view_lookup.features):
            values[(name, feature)] = [row[j] for row in rows]
        for feature, column in view_lookup.aggregate(store.online, keys, request_us).items():
            values[(name, feature)] = column
        if not view_lookup.features:  # aggregations only: the version of the stored events
            versions[name] = [_online_version(store, name)] * len(keys)
    sources: dict[str, str] = {}
    for odfv, outputs in selection.on_demand:
        versions[odfv.name] = [store.versions.get(odfv.name)] * len(entity_rows)
        computed = _on_demand(odfv, outputs, values, entity_rows)
        for output, column in computed.items():
            values[(odfv.name, output)] = column
    for owner, feature in selection.order:
        columns[feature] = values[(owner, feature)]
        sources[feature] = owner
    as_of = {lk.view.name: store_as_of(store, lk.view.name) for lk in lookups}
    result = OnlineResult(columns, sources, versions, events, request_us, as_of)
    if store._log_served:
        store.served_log.append(result)
    return result


def _compiled(
    store: FeatureStore, features: Sequence[str] | None, service: str | FeatureService | None
) -> tuple[Selection, list[ViewLookup]]:
    key = (tuple(features) if features is not None else None, service)
    try:
        return store._lookups[key]
    except (KeyError, TypeError):
        pass
    selection = store.select(features, service)
    lookups = []
    for name, names in selection.views.items():
        lookups.append(ViewLookup.build(store.view(name), names))
    with contextlib.suppress(TypeError):  # an unhashable service object: compile per call
        store._lookups[key] = (selection, lookups)
    return selection, lookups


def _request_us(request_time: datetime | None) -> int:
    when = request_time or datetime.now(UTC)
    if when.tzinfo is None:
        raise InvalidInputError(
            f"request_time {when.isoformat()} has no time zone; pass an aware datetime"
        )
    return (when - _EPOCH) // _US


def _on_demand(
    odfv: Any,
    outputs: Sequence[str],
    values: Mapping[tuple[str, str], list[Any]],
    entity_rows: Sequence[Mapping[str, Any]],
) -> dict[str, list[Any]]:
    from keel.features.ondemand import compute_online

    inputs = []
    for ref in odfv.inputs:
        view, _, feature = ref.partition(":")
        inputs.append((feature, values[(view, feature)]))
    out: dict[str, list[Any]] = {name: [] for name in outputs}
    for i, row in enumerate(entity_rows):
        given = {name: column[i] for name, column in inputs}
        for field in odfv.request:
            if field.name not in row:
                raise InvalidInputError(
                    f"on-demand view {odfv.name!r} needs request field {field.name!r}; add it "
                    "to every entity row"
                )
            given[field.name] = row[field.name]
        result = compute_online(odfv, given)
        for name in outputs:
            out[name].append(result[name])
    return out


def _materialized(store: FeatureStore, view: str) -> tuple[str | None, datetime | None]:
    """The version and event-time end of the view's last materialization (cached a few
    seconds, so a request does not query the metadata store)."""
    import time

    from keel.features.materialize import from_us, last_run

    cache: dict[str, tuple[float, str | None, datetime | None]]
    cache = store.__dict__.setdefault("_materialized", {})
    now = time.monotonic()
    hit = cache.get(view)
    if hit is None or now - hit[0] >= 5.0:
        run = last_run(store.project, view)
        if run is None:
            hit = (now, None, None)
        else:
            hit = (now, str(run["version"]), from_us(int(run["end_us"])))
        cache[view] = hit
    return hit[1], hit[2]


def store_as_of(store: FeatureStore, view: str) -> datetime | None:
    """The event-time end of the view's last materialization (None: never materialized)."""
    return _materialized(store, view)[1]


def _online_version(store: FeatureStore, view: str) -> str | None:
    """The version an aggregation-only view's events were written under: its last
    materialization's, else (pushes only) the registered one."""
    return _materialized(store, view)[0] or store.versions.get(view)
