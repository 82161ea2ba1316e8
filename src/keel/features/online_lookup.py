"""`FeatureStore.get_online_features`: one read per view, then on-demand views row by row.

The selection and the per-view lookups are compiled once per feature list and cached on the
store, so a request costs the store reads plus a little Python per row."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError
from keel.features.materialize import us_of
from keel.features.serving import OnlineResult, ViewLookup

if TYPE_CHECKING:
    from keel.features.selection import Selection
    from keel.features.service import FeatureService
    from keel.features.store import FeatureStore


@dataclass(frozen=True)
class _Plan:
    """A feature list compiled once: the selection, one lookup per view, and where each value
    lands, so a request does no name resolution."""

    selection: Selection
    lookups: list[ViewLookup]
    slots: list[list[tuple[str, str]]]  # per lookup: (view, feature) of its point features
    order: list[tuple[str, tuple[str, str]]]  # output column -> (view, feature)
    sources: Mapping[str, str]  # output column -> the view; read-only, shared by results
    # Point features only, in request order, view after view: values go straight into the
    # result's columns (the common case, and the one whose latency matters most).
    direct: bool


def lookup(
    store: FeatureStore,
    features: Sequence[str] | None,
    entity_rows: Sequence[Mapping[str, Any]],
    *,
    service: str | FeatureService | None,
    request_time: datetime | None,
) -> OnlineResult:
    plan = _compiled(store, features, service)
    request_us = time.time_ns() // 1000 if request_time is None else us_of(request_time)
    count = len(entity_rows)
    columns: dict[str, list[Any]] = {}
    if entity_rows:
        for name in entity_rows[0]:
            columns[name] = [row.get(name) for row in entity_rows]
    versions: dict[str, list[str | None]] = {}
    events: dict[str, list[int | None]] = {}
    if plan.direct:
        for view_lookup in plan.lookups:
            name = view_lookup.view.name
            keys = view_lookup.keys(entity_rows)
            rows, versions[name], events[name] = view_lookup.read(store.online, keys, request_us)
            if count == 1:
                columns.update(zip(view_lookup.features, ([v] for v in rows[0]), strict=True))
            else:
                per_feature = (
                    zip(*rows, strict=True) if rows else ([] for _ in view_lookup.features)
                )
                columns.update(zip(view_lookup.features, map(list, per_feature), strict=True))
        return _result(store, plan, columns, versions, events, request_us)
    values: dict[tuple[str, str], list[Any]] = {}
    for view_lookup, slots in zip(plan.lookups, plan.slots, strict=True):
        name = view_lookup.view.name
        keys = view_lookup.keys(entity_rows)
        rows, versions[name], events[name] = view_lookup.read(store.online, keys, request_us)
        if count == 1:
            for slot, value in zip(slots, rows[0], strict=True):
                values[slot] = [value]
        elif slots:
            for slot, per_row in zip(slots, zip(*rows, strict=True), strict=True):
                values[slot] = list(per_row)
        if view_lookup.aggregations:
            for feature, column in view_lookup.aggregate(store.online, keys, request_us).items():
                values[(name, feature)] = column
            if not view_lookup.features:  # aggregations only: the version of the events
                versions[name] = [_online_version(store, name)] * count
    for odfv, outputs in plan.selection.on_demand:
        versions[odfv.name] = [store.versions.get(odfv.name)] * count
        computed = _on_demand(odfv, outputs, values, entity_rows)
        for output, column in computed.items():
            values[(odfv.name, output)] = column
    for output, slot in plan.order:
        columns[output] = values.get(slot) or [None] * count
    return _result(store, plan, columns, versions, events, request_us)


def _result(
    store: FeatureStore,
    plan: _Plan,
    columns: dict[str, list[Any]],
    versions: dict[str, list[str | None]],
    events: dict[str, list[int | None]],
    request_us: int,
) -> OnlineResult:
    as_of = {lk.view.name: store_as_of(store, lk.view.name) for lk in plan.lookups}
    result = OnlineResult(columns, plan.sources, versions, events, request_us, as_of)
    if store._log_served:
        store.served_log.append(result)
    return result


def _compiled(
    store: FeatureStore, features: Sequence[str] | None, service: str | FeatureService | None
) -> _Plan:
    key = (tuple(features) if features is not None else None, service)
    try:
        plan: _Plan = store._lookups[key]
        return plan
    except (KeyError, TypeError):
        pass
    selection = store.select(features, service)
    lookups = [ViewLookup.build(store.view(name), names) for name, names in selection.views.items()]
    slots = [[(lk.view.name, feature) for feature in lk.features] for lk in lookups]
    order = [(feature, (owner, feature)) for owner, feature in selection.order]
    sources = MappingProxyType({feature: owner for owner, feature in selection.order})
    point_order = [(lk.view.name, feature) for lk in lookups for feature in lk.features]
    direct = (
        not selection.on_demand
        and not any(lk.aggregations for lk in lookups)
        and point_order == list(selection.order)
    )
    plan = _Plan(selection, lookups, slots, order, sources, direct)
    with contextlib.suppress(TypeError):  # an unhashable service object: compile per call
        store._lookups[key] = plan
    return plan


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
    cache: dict[str, tuple[float, str | None, datetime | None]]
    cache = store.__dict__.setdefault("_materialized", {})
    now = time.monotonic()
    hit = cache.get(view)
    if hit is None or now - hit[0] >= 5.0:
        from keel.features.materialize import last_run
        from keel.features.online.base import from_us

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
