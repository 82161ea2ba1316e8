"""Checking a view against its source before any join runs, and shaping the results.

Every check raises `InvalidInputError` naming the view, the column and the fix, so a bad
request fails in milliseconds instead of after a long join."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import InvalidInputError
from keel.features.offline.duckdb_sources import BoundSource, bind_source, quote
from keel.features.offline.duckdb_sql import ENTITIES, AggregationPlan, ViewPlan
from keel.features.offline.frames import arrow_type, default_scalar, finish_column
from keel.features.offline.spec import AggregationInput, FeatureInput, JoinRequest, ViewInput

_US = timedelta(microseconds=1)
_FAR = 1 << 62  # beyond any real ttl or window, far from int64 overflow
_INTEGER = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
_INTEGER |= {"U" + kind for kind in _INTEGER}
_FLOAT = {"FLOAT", "DOUBLE"}
_TIMESTAMP = {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"}
_TIMESTAMP |= {"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ_NS"}


def _family(kind: str) -> str:
    if kind in _INTEGER:
        return "integer"
    if kind in _FLOAT:
        return "float"
    if kind.startswith("DECIMAL"):
        return "decimal"
    if kind == "VARCHAR" or kind.startswith("ENUM"):
        return "string"
    if kind in _TIMESTAMP:
        return "timestamp"
    return kind


_ACCEPTS = {
    "bool": {"BOOLEAN"},
    "float32": {"integer", "float", "decimal"},
    "float64": {"integer", "float", "decimal"},
    "string": {"string"},
    "binary": {"BLOB"},
    "date": {"DATE"},
    "timestamp": {"timestamp"},
}


def _accepts(dtype: str, kind: str) -> bool:
    wanted = _ACCEPTS.get(dtype, {"integer"})  # the int and uint dtypes
    return _family(kind) in wanted or kind in wanted


def span_us(span: timedelta | None) -> int | None:
    """A ttl or window in microseconds; one too large to matter is no bound."""
    if span is None or span // _US >= _FAR:
        return None
    return span // _US


@dataclass
class Output:
    name: str
    kind: pa.DataType | None  # None: keep the type DuckDB computed
    default: Any  # a pa.Scalar of ``kind``; a plain value while ``kind`` is None
    owner: str

    def finish(self, values: pa.ChunkedArray, matched: pa.ChunkedArray | None) -> pa.ChunkedArray:
        default = self.default
        if self.kind is None and default is not None:
            default = default_scalar(default, values.type, self.owner)
        return finish_column(values, self.kind, default, matched, self.owner)


@dataclass
class ViewOutputs:
    """A view's SQL plan and how to turn its query results into output columns."""

    plan: ViewPlan
    owner: str
    features: list[Output]
    aggregations: list[Output]

    def finish(
        self, point: pa.Table | None, agg: pa.Table | None
    ) -> list[tuple[str, pa.ChunkedArray]]:
        columns = []
        if point is not None:
            matched = point.column("__matched")
            for j, out in enumerate(self.features):
                columns.append((out.name, out.finish(point.column(f"__v{j}"), matched)))
        if agg is not None:
            for j, out in enumerate(self.aggregations):
                columns.append((out.name, out.finish(_utc(agg.column(f"__a{j}")), None)))
        return columns


def _utc(values: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = values.type
    if pa.types.is_timestamp(kind) and kind.tz is not None and kind.tz != "UTC":
        return pc.cast(values, pa.timestamp(kind.unit, tz="UTC"))
    return values


def check_output_names(request: JoinRequest, entity_columns: list[str]) -> None:
    taken = dict.fromkeys(entity_columns, "the entity frame")
    for view in request.views:
        names = [f.name for f in view.features] + [a.name for a in view.aggregations]
        for feature in names:
            name = request.output_name(view, feature)
            if name in taken:
                raise InvalidInputError(
                    f"output column {name!r} of view {view.name!r} clashes with a column of "
                    f"{taken[name]}; rename one or pass full_feature_names=True"
                )
            taken[name] = f"view {view.name!r}"


def plan_view(
    con: duckdb.DuckDBPyConnection,
    request: JoinRequest,
    view: ViewInput,
    index: int,
    key_columns: dict[str, str],
) -> ViewOutputs:
    """Bind the view's source, check every column it names, and plan its SQL."""
    source = bind_source(con, view, index)
    entity_types = {str(row[0]): str(row[1]) for row in con.sql(f"DESCRIBE {ENTITIES}").fetchall()}
    keys, integer_keys = [], []
    for key in view.join_keys:
        column = request.entity_column(key)
        source_kind = source.column_type(key, "join key")
        entity_kind = entity_types[key_columns[column]]
        if _family(source_kind) != _family(entity_kind):
            raise InvalidInputError(
                f"join key {key!r} of view {view.name!r} is {source_kind} in the source but "
                f"entity column {column!r} is {entity_kind}; convert one so both are "
                "integers, or both strings, etc."
            )
        keys.append((key_columns[column], quote(key)))
        integer_keys.append(_family(source_kind) == "integer")
    created = view.created_timestamp
    plan = ViewPlan(
        source=source,
        keys=keys,
        event_us=source.time_us(view.event_timestamp, "event timestamp"),
        created_us=source.time_us(created, "created timestamp") if created else None,
        known_at=request.as_known_at,
        ttl_us=span_us(view.ttl),
        integer_keys=integer_keys,
    )
    features = [_plan_feature(request, source, plan, f) for f in view.features]
    aggregations = [_plan_aggregation(request, source, plan, a) for a in view.aggregations]
    return ViewOutputs(plan, source.owner, features, aggregations)


def _plan_feature(
    request: JoinRequest, source: BoundSource, plan: ViewPlan, feature: FeatureInput
) -> Output:
    owner = f"feature {feature.name!r} of {source.owner}"
    column = feature.source_column
    kind = source.column_type(column, f"feature {feature.name!r}")
    if not _accepts(feature.dtype, kind):
        raise InvalidInputError(
            f"{owner} is declared {feature.dtype} but source column {column!r} is {kind}; "
            "declare the matching dtype or convert the column"
        )
    plan.values.append(
        source.timestamp_value(column, f"feature {feature.name!r}")
        if _family(kind) == "timestamp"
        else quote(column)
    )
    target = arrow_type(feature.dtype)
    name = request.output_name(source.view, feature.name)
    return Output(name, target, default_scalar(feature.default, target, owner), owner)


def _plan_aggregation(
    request: JoinRequest, source: BoundSource, plan: ViewPlan, agg: AggregationInput
) -> Output:
    owner = f"aggregation {agg.name!r} of {source.owner}"
    kind = source.column_type(agg.column, f"aggregation {agg.name!r}")
    family = _family(kind)
    if agg.function in ("sum", "mean") and family not in ("integer", "float", "decimal"):
        raise InvalidInputError(
            f"{owner} takes the {agg.function} of column {agg.column!r}, which is {kind}; "
            "use a numeric column, or count/min/max/last"
        )
    value = (
        source.timestamp_value(agg.column, f"aggregation {agg.name!r}")
        if family == "timestamp"
        else quote(agg.column)
    )
    window = span_us(agg.window) or _FAR
    plan.aggregations.append(
        AggregationPlan(agg.function, value, window, family == "integer", family == "float")
    )
    dtype = agg.dtype or {"count": "int64", "mean": "float64"}.get(agg.function)
    target = arrow_type(dtype) if dtype else None
    default = default_scalar(agg.default, target, owner) if target is not None else agg.default
    name = request.output_name(source.view, agg.name)
    return Output(name, target, default, owner)
