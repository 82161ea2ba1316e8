"""The feature store: one object over a project's feature definitions, its offline engine and
its online store — training sets, materialization, pushes and online lookups from the same
definitions, so training and serving compute every feature the same way.

    from keel.features import FeatureStore

    store = FeatureStore(project)                        # definitions: features.py, applied
    training = store.get_training_set(entities, service="fraud_model")
    store.materialize_incremental()
    store.get_online_features(service="fraud_model", entity_rows=[{"user_id": 7}]).to_dict()

Definitions come from the project's definitions file (config ``features.definitions``) and must
be registered (`keel features apply`) at the version the file declares, so every training set
and every served value names a registered feature version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    from keel.features.definitions import FeatureView
    from keel.features.materialize import MaterializeResult, ProgressHook
    from keel.features.offline.base import OfflineEngine
    from keel.features.offline.spec import TableLike
    from keel.features.online.base import OnlineStore
    from keel.features.repo import Definitions
    from keel.features.selection import Selection
    from keel.features.served_log import ServedLog
    from keel.features.service import FeatureService
    from keel.features.serving import OnlineResult
    from keel.features.training import TrainingSet
    from keel.project import Project
    from keel.registry.loaded import LoadedModel
    from keel.tracking.run import Run


class FeatureStore:
    """A project's feature store. ``online_store`` (a URL), ``engine`` and ``log_served``
    override the configuration (``features.online_store``, ``features.offline_engine``,
    ``features.log_served``: append every online lookup to the served-feature log).

    >>> store = FeatureStore(Project.discover())   # doctest: +SKIP
    """

    def __init__(
        self,
        project: Project | None = None,
        *,
        online_store: str | None = None,
        engine: OfflineEngine | None = None,
        log_served: bool | None = None,
        require_current: bool = True,
        data_rev: str | None = None,
    ) -> None:
        if project is None:
            from keel.project import Project

            project = Project.discover()
        self.project = project
        self._online_url = online_store or project.config.features.online_store
        self._engine = engine
        # False: definitions may be any version ever registered (to rebuild an old training
        # set from old code), not only the current one.
        self._require_current = require_current
        # Training sets read dataset sources (keel data) as they were at this git revision.
        self.data_rev = data_rev
        self._exports: Any = None  # a TemporaryDirectory holding those versions, made on use
        self._lookups: dict[tuple[Any, ...], Any] = {}  # compiled online lookups
        # Read on every online lookup, so a plain attribute rather than a config walk.
        self._log_served = (
            project.config.features.log_served if log_served is None else bool(log_served)
        )

    # -- definitions ---------------------------------------------------------------------------

    @cached_property
    def definitions(self) -> Definitions:
        """The definitions file, loaded once and checked to be registered as declared."""
        from keel.features.repo import load_definitions

        definitions = load_definitions(self.project.root / self.project.config.features.definitions)
        declared = definition_versions(definitions)
        if self._require_current:
            registered = _registered_versions(self.project)
            for name, version in declared.items():
                if registered.get(name) != version:
                    state = "is not registered" if name not in registered else "has changed"
                    raise InvalidInputError(
                        f"feature definition {name!r} {state} since `keel features apply`; "
                        "run `keel features apply` to register it before using it"
                    )
            return definitions
        history = _version_history(self.project)
        for name, version in declared.items():
            if (name, version) not in history:
                raise InvalidInputError(
                    f"feature definition {name!r} at version {version[:12]} was never "
                    "registered; run `keel features apply` with this definition first"
                )
        return definitions

    @cached_property
    def versions(self) -> dict[str, str]:
        """``{definition name: registered version}`` of every definition in the file."""
        return definition_versions(self.definitions)

    def view(self, name: str) -> FeatureView:
        for view in self.definitions.views:
            if view.name == name:
                return view
        known = sorted(v.name for v in self.definitions.views)
        raise InvalidInputError(f"feature view {name!r} is not defined; the views are {known}")

    def select(
        self, features: Sequence[str] | None = None, service: str | FeatureService | None = None
    ) -> Selection:
        from keel.features.selection import select_features

        return select_features(self.definitions, features, service)

    # -- offline ---------------------------------------------------------------------------------

    @property
    def engine(self) -> OfflineEngine:
        if self._engine is None:
            self._engine = _engine_from_config(self.project)
        return self._engine

    def get_training_set(
        self,
        entity_df: TableLike,
        features: Sequence[str] | None = None,
        *,
        service: str | FeatureService | None = None,
        timestamp_column: str = "event_timestamp",
        entity_keys: Mapping[str, str] | None = None,
        as_known_at: bool = True,
        full_feature_names: bool = False,
        run: Run | None = None,
    ) -> TrainingSet:
        """The point-in-time-correct training set of ``features`` (``"view:feature"``, or a
        whole ``"view"``) or of a feature ``service``, for the entity rows of ``entity_df``
        (its join-key columns and ``timestamp_column``); one row per entity row, in order.

        The result is fingerprinted and, when a run is active (or ``run`` is given), recorded
        as the run's inputs, so the model it trains names its feature and data versions.
        """
        from keel.features.training_build import build_training_set

        training = build_training_set(
            self,
            entity_df,
            self.select(features, service),
            timestamp_column=timestamp_column,
            entity_keys=dict(entity_keys or {}),
            as_known_at=as_known_at,
            full_feature_names=full_feature_names,
        )
        if run is None:
            from keel.tracking.fluent import active_run

            run = active_run()
        if run is not None:
            training.log_to(run)
        return training

    # -- online ----------------------------------------------------------------------------------

    @cached_property
    def online(self) -> OnlineStore:
        from keel.features.online import open_online_store

        return open_online_store(self._online_url, root=self.project.root)

    def materialize(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        views: Sequence[str] | None = None,
        progress: ProgressHook | None = None,
    ) -> list[MaterializeResult]:
        """Load the newest values with event times in ``[start, end]`` (default: the last
        ttl up to now) of ``views`` (default: all) into the online store."""
        return self._materialize(start, end, views, progress, incremental=False)

    def materialize_incremental(
        self,
        end: datetime | None = None,
        *,
        views: Sequence[str] | None = None,
        progress: ProgressHook | None = None,
    ) -> list[MaterializeResult]:
        """Load what is new since each view's last materialization, late rows included (a
        view never materialized is loaded in full)."""
        return self._materialize(None, end, views, progress, incremental=True)

    def _materialize(
        self,
        start: datetime | None,
        end: datetime | None,
        views: Sequence[str] | None,
        progress: ProgressHook | None,
        *,
        incremental: bool,
    ) -> list[MaterializeResult]:
        from keel.features.materialize import materialize_view

        chosen = [self.view(n) for n in views] if views else list(self.definitions.views)
        return [
            materialize_view(
                self.project,
                self.online,
                view,
                self.versions[view.name],
                start=start,
                end=end or datetime.now(UTC),
                incremental=incremental,
                progress=progress,
                memory_limit=self.project.config.features.memory_limit,
            )
            for view in chosen
        ]

    def push(self, view: str, rows: TableLike) -> int:
        """Write ``rows`` (a DataFrame or Arrow table with the view's keys, event timestamp,
        optional created timestamp and features) to the online store now, and append them to
        the view's offline data, so serving and later training sets both see them."""
        from keel.features.push import push_rows

        definition = self.view(view)
        return push_rows(self.project, self.online, definition, self.versions[view], rows)

    def get_online_features(
        self,
        features: Sequence[str] | None = None,
        entity_rows: Sequence[Mapping[str, Any]] = (),
        *,
        service: str | FeatureService | None = None,
        request_time: datetime | None = None,
    ) -> OnlineResult:
        """The features of each entity row as served now (or at ``request_time``), with the
        offline path's ttl, defaults and NULL handling; see `keel.features.serving`."""
        from keel.features.online_lookup import lookup

        return lookup(self, features, entity_rows, service=service, request_time=request_time)

    @cached_property
    def served_log(self) -> ServedLog:
        """The served-feature log online lookups append to when ``log_served`` is on."""
        from keel.features.served_log import ServedLog

        return ServedLog(self.project.root / self.project.config.features.served_log)

    def load_model(self, ref: str) -> LoadedModel:
        """Load model version ``ref`` after checking that the online store serves the feature
        versions it was trained on; a difference raises FeatureVersionMismatchError, or warns
        (FeatureVersionWarning) when ``features.on_version_mismatch`` is ``warn``."""
        from keel.features.compat import load_checked_model

        return load_checked_model(self, ref)

    def dataset_at_rev(self, path: str) -> str:
        """A local Parquet file holding dataset ``path`` as it was at ``data_rev`` (its
        verified bytes from the cache or the remote, exported once)."""
        import shutil
        import tempfile

        from keel.data.api import open as open_data

        if self._exports is None:
            self._exports = tempfile.TemporaryDirectory(prefix="keel-rev-")
        target = Path(self._exports.name) / (path.replace("/", "__") + ".parquet")
        if not target.exists():
            try:
                with (
                    open_data(path, self.data_rev, project=self.project) as source,
                    target.open("wb") as out,
                ):
                    shutil.copyfileobj(source, out, 1 << 20)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"dataset {path!r} cannot be read at revision {self.data_rev!r} ({exc}); "
                    "--data-rev reads dataset sources that are single Parquet files"
                ) from exc
        return str(target)

    def close(self) -> None:
        if self._exports is not None:
            self._exports.cleanup()
            self._exports = None
        if "served_log" in self.__dict__:
            self.served_log.close()
            del self.__dict__["served_log"]
        if "online" in self.__dict__:
            self.online.close()
            del self.__dict__["online"]

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def definition_versions(definitions: Definitions) -> dict[str, str]:
    """The version each definition in ``definitions`` would be registered under."""
    from keel.features.versioning import versioned

    versions = {view.name: versioned(view)[1] for view in definitions.views}
    versions.update((odfv.name, versioned(odfv)[1]) for odfv in definitions.on_demand)
    versions.update((service.name, versioned(service)[1]) for service in definitions.services)
    return versions


def _registered_versions(project: Project) -> dict[str, str]:
    from keel.features.registry import list_feature_views

    return {view.name: view.current_version for view in list_feature_views(project)}


def _version_history(project: Project) -> set[tuple[str, str]]:
    from sqlalchemy import select

    from keel.metadata.schema import feature_view_versions as fvv

    with project.metadata.read() as conn:
        rows = conn.execute(select(fvv.c.name, fvv.c.version))
        return {(str(name), str(version)) for name, version in rows}


def _engine_from_config(project: Project) -> OfflineEngine:
    name = project.config.features.offline_engine
    if name == "spark":
        from keel.features.offline.spark_engine import SparkEngine

        return SparkEngine()
    from keel.features.offline.duckdb_engine import DuckDBEngine

    return DuckDBEngine(memory_limit=project.config.features.memory_limit)
