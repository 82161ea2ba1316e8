"""The feature registry: applied feature views, on-demand views and feature services, and every
version they had, in the metadata DB.

    results = apply_definitions(project)                 # features.definitions of keel.yaml
    [v.name for v in list_feature_views(project)]
    diff_versions(project, "user_stats")                 # previous version -> current one
    feature_consumers(project, "user_stats")             # model versions trained on it

A definition's version is the hash of its semantic definition and transformation source
(`keel.features.versioning`); applying a changed definition adds a version and moves
``current_version``, an unchanged one writes nothing, and the history is never rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError, NotFoundError
from keel.features.definitions import FeatureView

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from keel.features.offline.spec import TableLike, ViewInput
    from keel.features.ondemand import OnDemandFeatureView
    from keel.features.repo import Definitions
    from keel.features.service import FeatureService
    from keel.project import Project

BATCH = "batch"


@dataclass(frozen=True)
class AppliedView:
    """The outcome of applying one definition: ``status`` is ``created``, ``updated`` (a new
    version), ``metadata`` (same version, new owner, description or tags) or ``unchanged``;
    ``previous`` is the version it replaced; ``kind`` is batch, on_demand or service."""

    name: str
    version: str
    status: str
    previous: str | None = None
    kind: str = BATCH


@dataclass(frozen=True)
class FeatureViewVersion:
    name: str
    version: str
    definition: dict[str, Any]
    created_at: int
    created_by: str | None


@dataclass(frozen=True)
class FeatureViewInfo:
    """A registered definition (``kind``: batch, on_demand or service): its current version,
    owner, description and (from `get_feature_view`) its versions, oldest first."""

    name: str
    current_version: str
    owner: str
    description: str | None
    updated_at: int
    kind: str = BATCH
    versions: tuple[FeatureViewVersion, ...] = ()


@dataclass(frozen=True)
class FeatureConsumer:
    """A model version trained on a view: ``feature_version`` is the view version its run
    recorded (None when the run recorded a version the registry does not hold)."""

    model: str
    version: int
    feature_version: str | None
    state: str
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """One difference between two versions: a dotted ``path`` in the definition."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class _Entry:
    name: str
    owner: str | None
    description: str
    kind: str
    version: str
    definition: dict[str, Any]


def apply_definitions(project: Project, path: str | Path | None = None) -> list[AppliedView]:
    """Load, validate and register the definitions of ``path`` (default: the
    ``features.definitions`` file of keel.yaml, relative to the project root) in one
    transaction: nothing is written when any of them is invalid.

    >>> [r.status for r in apply_definitions(project)]  # doctest: +SKIP
    ['created']
    """
    from keel.features.repo import load_definitions

    file = Path(path) if path is not None else project.root / project.config.features.definitions
    definitions = load_definitions(file)
    if not (definitions.views or definitions.on_demand or definitions.services):
        raise InvalidInputError(
            f"{file} declares no FeatureView, OnDemandFeatureView or FeatureService at module "
            "level; declare one"
        )
    entries = _entries(project, definitions)
    with project.metadata.write() as conn:
        return [_register(project, conn, entry) for entry in entries]


def _entries(project: Project, definitions: Definitions) -> list[_Entry]:
    """Every definition validated, with its kind, version and canonical definition."""
    from keel.features.repo import validate_on_demand, validate_service, validate_view
    from keel.features.versioning import versioned

    for view in definitions.views:
        validate_view(view, project)
    for odfv in definitions.on_demand:
        validate_on_demand(odfv, definitions, project)
    for svc in definitions.services:
        validate_service(svc, definitions)
    every: list[FeatureView | OnDemandFeatureView | FeatureService] = [*definitions.views]
    every += [*definitions.on_demand, *definitions.services]
    return [_Entry(d.name, d.owner, d.description, *versioned(d)) for d in every]


def _register(project: Project, conn: Connection, entry: _Entry) -> AppliedView:
    from sqlalchemy import select

    from keel.core.timeutil import now_ms
    from keel.metadata.schema import feature_view_versions, feature_views
    from keel.metadata.sql import insert_ignore, upsert

    project.metadata.lock_row(conn, "feature_views", "name", entry.name)
    previous = conn.execute(
        select(feature_views.c.current_version).where(feature_views.c.name == entry.name)
    ).scalar()
    now = now_ms()
    if previous == entry.version:
        return _refresh_metadata(conn, entry, now)
    version_row = {
        "name": entry.name,
        "version": entry.version,
        "definition": entry.definition,
        "created_at": now,
        "created_by": project.user,
    }
    # insert_ignore: reverting to an older definition reuses its recorded version.
    insert_ignore(conn, feature_view_versions, [version_row], keys=["name", "version"])
    head = {
        "name": entry.name,
        "current_version": entry.version,
        "owner": entry.owner,
        "description": entry.description,
        "updated_at": now,
        "kind": entry.kind,
    }
    upsert(conn, feature_views, [head], keys=["name"], update=[k for k in head if k != "name"])
    status = "updated" if previous else "created"
    return AppliedView(entry.name, entry.version, status, previous, entry.kind)


def _refresh_metadata(conn: Connection, entry: _Entry, now: int) -> AppliedView:
    """Same version: record a changed owner, description or tags in place (status
    ``metadata``), or nothing at all (``unchanged``)."""
    from sqlalchemy import select, update

    from keel.metadata.schema import feature_view_versions as fvv
    from keel.metadata.schema import feature_views

    where = (fvv.c.name == entry.name) & (fvv.c.version == entry.version)
    stored = conn.execute(select(fvv.c.definition).where(where)).scalar()
    if stored == entry.definition:
        return AppliedView(entry.name, entry.version, "unchanged", entry.version, entry.kind)
    conn.execute(update(fvv).where(where).values(definition=entry.definition))
    conn.execute(
        update(feature_views)
        .where(feature_views.c.name == entry.name)
        .values(owner=entry.owner, description=entry.description, updated_at=now)
    )
    return AppliedView(entry.name, entry.version, "metadata", entry.version, entry.kind)


def list_feature_views(project: Project) -> list[FeatureViewInfo]:
    """Every registered view, by name.

    >>> [v.name for v in list_feature_views(project)]  # doctest: +SKIP
    ['merchant_stats', 'user_stats']
    """
    from sqlalchemy import select

    from keel.metadata.schema import feature_views

    with project.metadata.read() as conn:
        rows = conn.execute(select(feature_views).order_by(feature_views.c.name)).all()
    return [FeatureViewInfo(**row._mapping) for row in rows]


def get_feature_view(project: Project, name: str) -> FeatureViewInfo:
    """One view with its version history, oldest first (NotFoundError when never applied)."""
    from sqlalchemy import select

    from keel.metadata.schema import feature_view_versions as fvv
    from keel.metadata.schema import feature_views

    with project.metadata.read() as conn:
        row = conn.execute(select(feature_views).where(feature_views.c.name == name)).first()
        history = conn.execute(
            select(fvv).where(fvv.c.name == name).order_by(fvv.c.created_at, fvv.c.version)
        ).all()
    if row is None:
        raise NotFoundError(
            f"feature view {name!r} is not registered; `keel features list` lists the views, "
            "`keel features apply` registers them"
        )
    versions = tuple(FeatureViewVersion(**h._mapping) for h in history)
    return FeatureViewInfo(**row._mapping, versions=versions)


def feature_consumers(project: Project, name: str) -> list[FeatureConsumer]:
    """The model versions whose runs (or parent runs) recorded any version of ``name``, by
    model and version (NotFoundError when ``name`` was never applied).

    >>> [(c.model, c.version) for c in feature_consumers(project, "user_stats")]  # doctest: +SKIP
    [('fraud', 1), ('fraud', 2)]
    """
    from keel.registry.lineage import models_using

    info = get_feature_view(project, name)
    found: dict[tuple[str, int], FeatureConsumer] = {}
    for version in (*(v.version for v in reversed(info.versions)), None):
        ref = name if version is None else f"{name}@{version}"
        for mv in models_using(project, feature_view=ref):
            consumer = FeatureConsumer(mv.name, mv.version, version, mv.state, tuple(mv.aliases))
            found.setdefault((mv.name, mv.version), consumer)
    return [found[key] for key in sorted(found)]


def find_version(info: FeatureViewInfo, ref: str) -> FeatureViewVersion:
    """The version of ``info`` whose hash starts with ``ref`` (at least 4 characters)."""
    found = [v for v in info.versions if len(ref) >= 4 and v.version.startswith(ref)]
    if len(found) != 1:
        problem = "matches several versions" if found else "is not one of its versions"
        raise NotFoundError(
            f"{ref!r} {problem} of feature view {info.name!r}; `keel features show {info.name}` "
            "lists them (give 4 or more leading characters)"
        )
    return found[0]


def diff_versions(
    project: Project, name: str, old: str | None = None, new: str | None = None
) -> list[Change]:
    """What changed between two versions of a view (default: the previous version and the
    current one); an empty list when they are equal.

    >>> diff_versions(project, "user_stats")  # doctest: +SKIP
    [Change(path='ttl_seconds', old=86400.0, new=172800.0)]
    """
    info = get_feature_view(project, name)
    if (old is None) != (new is None):
        raise InvalidInputError("pass both versions to compare, or neither for previous/current")
    if old is not None and new is not None:
        before, after = find_version(info, old), find_version(info, new)
    else:
        after = find_version(info, info.current_version)
        others = [v for v in info.versions if v.version != info.current_version]
        if not others:
            return []
        before = others[-1]
    return _diff("", before.definition, after.definition)


def _diff(prefix: str, old: Any, new: Any) -> list[Change]:
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for key in sorted(set(old) | set(new)):
            changes += _diff(f"{prefix}.{key}" if prefix else key, old.get(key), new.get(key))
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            c
            for i, (o, n) in enumerate(zip(old, new, strict=True))
            for c in _diff(f"{prefix}[{i}]", o, n)
        ]
    return [] if old == new else [Change(prefix, old, new)]


def to_view_input(
    view: FeatureView, project: Project | None = None, *, source: TableLike | None = None
) -> ViewInput:
    """The offline engine's form of ``view``, its source resolved against ``project`` — a
    Parquet path or glob, or for a PostgreSQL source the view's columns read into memory —
    unless ``source`` gives the engine's source already read.

    >>> DuckDBEngine().get_training_set(
    ...     JoinRequest(entity_df, (to_view_input(user_stats, project),)))  # doctest: +SKIP
    """
    from keel.features.offline.spec import AggregationInput, FeatureInput, ViewInput
    from keel.features.sources import PostgresSource, source_columns

    if source is None and isinstance(view.source, PostgresSource):
        where = f"the source of feature view {view.name!r}"
        source = view.source.read(project, columns=source_columns(view), where=where)
    features = tuple(FeatureInput(f.name, f.dtype, default=f.default) for f in view.fields)
    aggregations = tuple(
        AggregationInput(a.output_name, a.column, a.function, a.window_delta, default=a.default)
        for a in view.aggregation_list
    )
    return ViewInput(
        view.name,
        view.entity.key_names,
        view.source.resolve(project) if source is None else source,
        view.source.event_timestamp,
        created_timestamp=view.source.created_timestamp,
        features=features,
        aggregations=aggregations,
        ttl=view.ttl_delta,
        source_time_zone=view.source.time_zone,
    )
