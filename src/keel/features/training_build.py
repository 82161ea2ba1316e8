"""Building a training set from a selection: the offline join of the batch views, then the
on-demand views computed on its columns by the same function serving calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from keel.errors import InvalidInputError
from keel.features.training import TrainingSet, fingerprint_of

if TYPE_CHECKING:
    from keel.features.offline.spec import JoinRequest, TableLike, ViewInput
    from keel.features.selection import Selection
    from keel.features.store import FeatureStore


def build_training_set(
    store: FeatureStore,
    entity_df: TableLike,
    selection: Selection,
    *,
    timestamp_column: str,
    entity_keys: Mapping[str, str],
    as_known_at: bool,
    full_feature_names: bool,
) -> TrainingSet:
    from keel.features.offline.frames import as_table
    from keel.features.offline.spec import JoinRequest

    entities = as_table(entity_df, "the entity frame")
    views = [_view_input(store, name, names) for name, names in selection.views.items()]
    request = JoinRequest(
        entities,
        tuple(views),
        timestamp_column=timestamp_column,
        entity_keys=entity_keys,
        as_known_at=as_known_at,
        full_feature_names=full_feature_names,
    )
    table = store.engine.get_training_set(request)
    table = _add_on_demand(table, selection, request, entities)
    outputs = [_output_name(request, owner, name) for owner, name in selection.order]
    # Only the requested features: inputs fetched just for on-demand views are dropped here.
    table = table.select(list(entities.column_names) + outputs)
    used = [*selection.views, *(odfv.name for odfv, _ in selection.on_demand)]
    versions = {name: store.versions[name] for name in used}
    datasets = _dataset_versions(store, list(selection.views))
    return TrainingSet(
        table,
        fingerprint_of(_portable(store, request), versions, datasets),
        versions,
        datasets,
        tuple(outputs),
    )


def _portable(store: FeatureStore, request: JoinRequest) -> JoinRequest:
    """``request`` with each file source named as its definition names it (a project-relative
    path or a URL), so the fingerprint does not depend on where the project is checked out:
    the same training set rebuilt in a worktree, or from a revision, gets the same one."""
    from keel.features.sources import DatasetSource, ParquetSource

    views = []
    for view in request.views:
        source = store.view(view.name).source
        if isinstance(source, DatasetSource | ParquetSource):
            view = dataclasses.replace(view, source=f"{source.kind}:{source.path}")
        views.append(view)
    return dataclasses.replace(request, views=tuple(views))


def _output_name(request: JoinRequest, owner: str, name: str) -> str:
    return f"{owner}__{name}" if request.full_feature_names else name


def _view_input(store: FeatureStore, name: str, names: tuple[str, ...]) -> ViewInput:
    from keel.features.registry import to_view_input
    from keel.features.sources import DatasetSource

    view = store.view(name)
    if store.data_rev is not None and isinstance(view.source, DatasetSource):
        full = to_view_input(view, store.project, source=store.dataset_at_rev(view.source.path))
    else:
        full = to_view_input(view, store.project)
    wanted = set(names)
    return dataclasses.replace(
        full,
        features=tuple(f for f in full.features if f.name in wanted),
        aggregations=tuple(a for a in full.aggregations if a.name in wanted),
    )


def _add_on_demand(
    table: pa.Table, selection: Selection, request: JoinRequest, entities: pa.Table
) -> pa.Table:
    if not selection.on_demand:
        return table
    from keel.features.ondemand import compute_offline

    for odfv, outputs in selection.on_demand:
        columns: dict[str, pa.ChunkedArray] = {}
        for ref in odfv.inputs:
            view, _, feature = ref.partition(":")
            columns[feature] = table.column(_output_name(request, view, feature))
        for field in odfv.request:
            if field.name not in entities.column_names:
                raise InvalidInputError(
                    f"on-demand view {odfv.name!r} needs request field {field.name!r}; add it "
                    "as a column of the entity frame"
                )
            columns[field.name] = entities.column(field.name)
        computed = compute_offline(odfv, pa.table(columns))
        for name in outputs:
            table = table.append_column(
                _output_name(request, odfv.name, name), computed.column(name)
            )
    return table


def _dataset_versions(store: FeatureStore, views: list[str]) -> dict[str, str]:
    from keel.features.sources import DatasetSource

    out: dict[str, str] = {}
    for name in views:
        source = store.view(name).source
        if isinstance(source, DatasetSource):
            if store.data_rev is not None:
                from keel.data.api import resolve

                out[source.path] = resolve(
                    source.path, store.data_rev, project=store.project
                ).sha256
            else:
                out[source.path] = source.version(store.project)
    return out
