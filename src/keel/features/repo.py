"""Load feature definitions from a Python file and validate them against their data.

`load_definitions` runs the file (``features.py`` in the project root by default) and collects
its module-level entities, feature views, on-demand feature views and feature services;
`validate_view` checks a view against the schema of its source (Parquet file footers, or the
result description of a PostgreSQL query with no rows — never the rows); `validate_on_demand`
and `validate_service` check the other kinds against the views they name.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError, KeelError
from keel.features.definitions import Entity, FeatureView
from keel.features.ondemand import OnDemandFeatureView
from keel.features.service import FeatureService
from keel.features.sources import PostgresSource, is_url

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.features.sources import Source
    from keel.project import Project

DEFAULT_FILE = "features.py"
_NUMERIC = ("sum", "mean")
_NAMED = (FeatureView, OnDemandFeatureView, FeatureService)
SYNTHETIC_ROWS = 64  # rows of the parity check `keel features apply` runs on on-demand views


@dataclass(frozen=True)
class Definitions:
    """What a definitions file declares, in file order."""

    path: Path
    entities: tuple[Entity, ...]
    views: tuple[FeatureView, ...]
    on_demand: tuple[OnDemandFeatureView, ...] = ()
    services: tuple[FeatureService, ...] = ()


def load_definitions(path: str | Path) -> Definitions:
    """Run ``path`` and collect its module-level entities, feature views, on-demand feature
    views and feature services (one name may name one of them only).

    >>> load_definitions("features.py").views[0].name  # doctest: +SKIP
    'user_stats'
    """
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(
            f"definitions file {str(file)!r} does not exist; create it or pass its path to "
            "`keel features apply FILE`"
        )
    namespace = _run(file)
    entities: dict[int, Entity] = {}
    named: dict[str, FeatureView | OnDemandFeatureView | FeatureService] = {}
    for value in namespace.values():
        if isinstance(value, Entity):
            entities.setdefault(id(value), value)
        elif isinstance(value, _NAMED):
            known = named.setdefault(value.name, value)
            if known is not value:
                raise InvalidInputError(
                    f"{file} declares a {type(known).__name__} and a {type(value).__name__} "
                    f"both named {value.name!r}; rename one"
                )
    found = list(named.values())
    return Definitions(
        file,
        tuple(entities.values()),
        tuple(v for v in found if isinstance(v, FeatureView)),
        tuple(v for v in found if isinstance(v, OnDemandFeatureView)),
        tuple(v for v in found if isinstance(v, FeatureService)),
    )


def _run(file: Path) -> dict[str, Any]:
    from keel.core.hashing import sha256_bytes

    name = "keel_features_" + sha256_bytes(str(file.resolve()).encode())[:12]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"{file} cannot be loaded as Python; give it a .py name")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs so dataclasses and pickling inside the file can find it.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeelError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"{file} failed while loading: {type(exc).__name__}: {exc}; fix the file"
        ) from exc
    finally:
        sys.modules.pop(name, None)
    return dict(vars(module))


def validate_view(view: FeatureView, project: Project | None = None) -> None:
    """Check ``view`` against the schema of its source; raise InvalidInputError naming the
    view and the fix for: a missing owner, an unknown column, a dtype mismatch, or a naive
    timestamp column without ``time_zone``.

    >>> validate_view(user_stats, project)  # doctest: +SKIP
    """
    where = f"feature view {view.name!r}"
    _check_owner(where, view.owner)
    schema = source_schema(view.source, project, where)
    source = view.source
    for key, dtype in view.entity.join_keys.items():
        _check_type(where, schema, key, dtype, "join key")
    for field in view.fields:
        _check_type(where, schema, field.name, field.dtype, "feature")
    for agg in view.aggregation_list:
        arrow = _column(where, schema, agg.column, f"aggregation {agg.output_name!r}")
        if agg.function in _NUMERIC and keel_dtype(arrow) not in _NUMBER_TYPES:
            raise InvalidInputError(
                f"{where}: aggregation {agg.output_name!r} takes {agg.function} of column "
                f"{agg.column!r}, which is {arrow}, not a number; aggregate a numeric column"
            )
    for role in ("event_timestamp", "created_timestamp"):
        column = getattr(source, role)
        if column is not None:
            _check_timestamp(where, schema, column, role, source.time_zone)


def _check_owner(where: str, owner: str | None) -> None:
    if not isinstance(owner, str) or not owner.strip():
        raise InvalidInputError(f"{where} has no owner; pass owner='team-or-person'")


def validate_on_demand(
    view: OnDemandFeatureView, definitions: Definitions, project: Project | None = None
) -> OnDemandFeatureView:
    """Check an on-demand view: an owner, inputs that are features of the file's batch views,
    and both paths giving the same values on `SYNTHETIC_ROWS` random rows with NULLs built
    from the input dtypes. Returns the view with its input dtypes bound.

    >>> validate_on_demand(amount_ratio, definitions, project)  # doctest: +SKIP
    """
    import numpy as np

    from keel.features.parity import check_parity, synthetic_table
    from keel.features.selection import feature_dtypes, select_features

    where = f"on-demand feature view {view.name!r}"
    _check_owner(where, view.owner)
    select_features(definitions, [view.name])  # inputs exist; request fields agree
    batch = {v.name: v for v in definitions.views}
    inputs: dict[str, str] = {}
    for source, feature in view.input_refs:
        dtypes = feature_dtypes(batch[source])
        if feature not in dtypes:  # an aggregation of an undeclared column: ask the data
            schema = source_schema(batch[source].source, project, where)
            dtypes = feature_dtypes(batch[source], schema)
        inputs[feature] = dtypes.get(feature, "float64")
    bound = view.with_input_dtypes(inputs)
    sample = synthetic_table(bound.input_dtypes, SYNTHETIC_ROWS)
    try:
        with np.errstate(all="ignore"):  # random inputs divide by zero; that is not a failure
            report = check_parity(bound, sample, rows=None)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"checking {where} on {SYNTHETIC_ROWS} random rows with NULLs: {exc}"
        ) from exc
    if not report.ok:
        raise InvalidInputError(
            f"{report.describe()}; compute each row from that row's values alone"
        )
    return bound


def validate_service(service: FeatureService, definitions: Definitions) -> None:
    """Check a service: an owner, and every ref naming a view or feature of the file."""
    from keel.features.selection import select_features

    _check_owner(f"feature service {service.name!r}", service.owner)
    select_features(definitions, service=service)


_NUMBER_TYPES = frozenset(
    {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"float32", "float64", "bool"}
)


def source_schema(source: Source, project: Project | None, where: str) -> pa.Schema:
    """The Arrow schema of a view's source: a PostgreSQL result description, else the first
    Parquet file's footer."""
    if isinstance(source, PostgresSource):
        return source.schema(project, where)
    return read_schema(source.resolve(project), where)


def read_schema(source: str, where: str) -> pa.Schema:
    """The Arrow schema of the first Parquet file of ``source`` (file, glob or URL)."""
    import pyarrow.parquet as pq

    if is_url(source):
        import fsspec

        fs, root = fsspec.core.url_to_fs(source)
        files = [root] if fs.isfile(root) else sorted(fs.glob(root))
        if not files:
            raise _no_files(where, source)
        with fs.open(files[0], "rb") as handle:
            return pq.read_schema(handle)
    import glob

    files = sorted(glob.glob(source, recursive=True))
    if not files:
        raise _no_files(where, source)
    return pq.read_schema(files[0])


def _no_files(where: str, source: str) -> InvalidInputError:
    return InvalidInputError(
        f"{where}: source {source!r} matches no Parquet file; fix the source path"
    )


def keel_dtype(arrow: pa.DataType) -> str:
    """The `DTYPES` name of an Arrow type (``str(arrow)`` when Keel has no name for it)."""
    import pyarrow as pa

    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return "string"
    if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow):
        return "binary"
    if pa.types.is_float32(arrow):
        return "float32"
    if pa.types.is_float64(arrow):
        return "float64"
    if pa.types.is_date(arrow):
        return "date"
    if pa.types.is_timestamp(arrow):
        return "timestamp"
    return str(arrow)


def _column(where: str, schema: pa.Schema, name: str, role: str) -> pa.DataType:
    index = schema.get_field_index(name)
    if index < 0:
        raise InvalidInputError(
            f"{where}: {role} reads column {name!r}, which the source does not have "
            f"(it has {schema.names}); fix the name or the source"
        )
    return schema.field(index).type


def _check_type(where: str, schema: pa.Schema, name: str, dtype: str, role: str) -> None:
    actual = keel_dtype(_column(where, schema, name, f"{role} {name!r}"))
    if actual != dtype:
        raise InvalidInputError(
            f"{where}: {role} {name!r} is declared {dtype!r} but the source column is "
            f"{actual!r}; declare dtype={actual!r} or cast the data"
        )


def _check_timestamp(where: str, schema: pa.Schema, name: str, role: str, zone: str | None) -> None:
    arrow = _column(where, schema, name, role)
    if keel_dtype(arrow) != "timestamp":
        raise InvalidInputError(
            f"{where}: {role} column {name!r} is {arrow}, not a timestamp; point {role} at a "
            "timestamp column"
        )
    if getattr(arrow, "tz", None) is None and zone is None:
        raise InvalidInputError(
            f"{where}: {role} column {name!r} has naive timestamps; declare the source's "
            "time_zone (e.g. time_zone='UTC') or store timezone-aware timestamps"
        )
