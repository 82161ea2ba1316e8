"""Feature selection: which views, features and request fields a request needs.

A request names features as refs (``"view:feature"``, or ``"view"`` for all of them) or names a
`FeatureService`; `select_features` resolves the refs against the loaded definitions and says
what to fetch from each batch view — including the inputs of the requested on-demand views,
which are fetched but not returned — which on-demand views to run and which request fields the
caller must pass.

    selection = select_features(definitions, ["user_stats:amount", "risk:amount_ratio"])
    selection.views      # {"user_stats": ("amount", "amount_sum_7d")}
    selection.hidden     # frozenset({("user_stats", "amount_sum_7d")})
    selection.order      # (("user_stats", "amount"), ("risk", "amount_ratio"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keel.errors import InvalidInputError
from keel.features.definitions import FeatureView
from keel.features.ondemand import OnDemandFeatureView, RequestField, split_ref
from keel.features.service import FeatureService

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.features.repo import Definitions

_INTEGERS = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})


@dataclass(frozen=True)
class Selection:
    """The work behind a feature request.

    ``views``: batch view -> the names to fetch (requested ones in request order, then hidden
    inputs); ``on_demand``: each on-demand view to run (its input dtypes bound) with its
    requested outputs; ``hidden``: (view, name) fetched only as on-demand inputs;
    ``request_fields``: what the caller passes with each row; ``order``: the output columns in
    request order as (view, name).
    """

    views: dict[str, tuple[str, ...]]
    on_demand: tuple[tuple[OnDemandFeatureView, tuple[str, ...]], ...]
    hidden: frozenset[tuple[str, str]]
    request_fields: tuple[RequestField, ...]
    order: tuple[tuple[str, str], ...]


def view_outputs(view: FeatureView | OnDemandFeatureView) -> tuple[str, ...]:
    """The feature names a view gives: its fields and aggregations, or on-demand outputs.

    >>> view_outputs(user_stats)  # doctest: +SKIP
    ('amount', 'amount_sum_7d')
    """
    if isinstance(view, OnDemandFeatureView):
        return view.output_names
    return tuple(f.name for f in view.fields) + tuple(a.output_name for a in view.aggregation_list)


def feature_dtypes(view: FeatureView, schema: pa.Schema | None = None) -> dict[str, str]:
    """The dtype of each feature of a batch view, as the offline engine gives it. An
    aggregation's dtype follows its function and column: the column's declared field, else
    its type in ``schema`` (the source's); without either it is left out.

    >>> feature_dtypes(user_stats)  # doctest: +SKIP
    {'amount': 'float64', 'amount_sum_7d': 'float64'}
    """
    from keel.features.repo import keel_dtype

    dtypes = {f.name: f.dtype for f in view.fields}
    for agg in view.aggregation_list:
        column = next((f.dtype for f in view.fields if f.name == agg.column), None)
        if column is None and schema is not None and agg.column in schema.names:
            column = keel_dtype(schema.field(agg.column).type)
        if agg.function in ("count", "mean"):
            dtypes[agg.output_name] = "int64" if agg.function == "count" else "float64"
        elif agg.function == "sum" and column is not None:
            dtypes[agg.output_name] = "int64" if column in _INTEGERS | {"bool"} else "float64"
        elif agg.function != "sum" and column is not None:
            dtypes[agg.output_name] = column
    return dtypes


def bind_on_demand(view: OnDemandFeatureView, batch: dict[str, FeatureView]) -> OnDemandFeatureView:
    """``view`` with the dtypes of its inputs that ``batch`` (name -> view) declares."""
    dtypes = {}
    for source, feature in view.input_refs:
        if source in batch:
            dtype = feature_dtypes(batch[source]).get(feature)
            if dtype is not None:
                dtypes[feature] = dtype
    return view.with_input_dtypes(dtypes)


def select_features(
    definitions: Definitions,
    features: Sequence[str] | None = None,
    service: str | FeatureService | None = None,
) -> Selection:
    """Resolve exactly one of ``features`` (refs) or ``service`` (a name or a FeatureService)
    against ``definitions``; InvalidInputError names an unknown view, feature or service and
    lists what exists.

    >>> select_features(definitions, service="fraud_features").order  # doctest: +SKIP
    (('user_stats', 'amount'), ('risk', 'amount_ratio'))
    """
    if (features is None) == (service is None):
        raise InvalidInputError("pass exactly one of features=['view:feature', ...] or service=")
    if service is not None:
        found = _service(definitions, service)
        refs, where = found.refs, f"feature service {found.name!r}"
    else:
        if isinstance(features, str) or not features:
            raise InvalidInputError(f"features is {features!r}; pass a list of 'view:feature'")
        refs, where = tuple(features or ()), "the request"
    batch = {v.name: v for v in definitions.views}
    on_demand = {v.name: v for v in definitions.on_demand}
    order = list(dict.fromkeys(item for ref in refs for item in _expand(ref, where, definitions)))
    fetch: dict[str, list[str]] = {}
    run: dict[str, list[str]] = {}
    for view, name in order:
        (run if view in on_demand else fetch).setdefault(view, []).append(name)
    hidden: list[tuple[str, str]] = []
    request: dict[str, RequestField] = {}
    for name in run:
        for view, feature in on_demand[name].input_refs:
            _require_batch(on_demand[name], view, feature, batch)
            if feature not in fetch.setdefault(view, []):
                fetch[view].append(feature)
                hidden.append((view, feature))
        for field in on_demand[name].request:
            known = request.setdefault(field.name, field)
            if known.dtype != field.dtype:
                raise InvalidInputError(
                    f"request field {field.name!r} is {known.dtype!r} in one on-demand view and "
                    f"{field.dtype!r} in {name!r}; declare one dtype"
                )
    return Selection(
        views={view: tuple(names) for view, names in fetch.items()},
        on_demand=tuple((bind_on_demand(on_demand[n], batch), tuple(o)) for n, o in run.items()),
        hidden=frozenset(hidden),
        request_fields=tuple(request.values()),
        order=tuple(order),
    )


def _service(definitions: Definitions, service: str | FeatureService) -> FeatureService:
    if isinstance(service, FeatureService):
        return service
    for known in definitions.services:
        if known.name == service:
            return known
    names = sorted(s.name for s in definitions.services)
    raise InvalidInputError(
        f"there is no feature service {service!r} in {definitions.path}; the services are "
        f"{names}: use one of them or declare it there"
    )


def _expand(ref: str, where: str, definitions: Definitions) -> list[tuple[str, str]]:
    """(view, feature) of every feature a ref names, in declared order."""
    view_name, feature = split_ref(ref, where)
    views: dict[str, FeatureView | OnDemandFeatureView] = {v.name: v for v in definitions.views}
    views |= {v.name: v for v in definitions.on_demand}
    view = views.get(view_name)
    if view is None:
        raise InvalidInputError(
            f"{where} asks for {ref!r}, but there is no feature view {view_name!r}; the views "
            f"are {sorted(views)}"
        )
    outputs = view_outputs(view)
    if feature is not None and feature not in outputs:
        raise InvalidInputError(
            f"{where} asks for {ref!r}, but feature view {view_name!r} has no feature "
            f"{feature!r}; it has {list(outputs)}"
        )
    return [(view_name, f) for f in ((feature,) if feature else outputs)]


def _require_batch(
    view: OnDemandFeatureView, source: str, feature: str, batch: dict[str, FeatureView]
) -> None:
    where = f"on-demand feature view {view.name!r}"
    if source not in batch:
        raise InvalidInputError(
            f"{where} takes input {source}:{feature}, but {source!r} is not a batch feature "
            f"view; inputs come from FeatureViews: {sorted(batch)}"
        )
    if feature not in view_outputs(batch[source]):
        raise InvalidInputError(
            f"{where} takes input {source}:{feature}, but feature view {source!r} has no "
            f"feature {feature!r}; it has {list(view_outputs(batch[source]))}"
        )
