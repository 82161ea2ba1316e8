"""The feature store: declarative feature views, point-in-time-correct training sets and online
serving from one definition, so training and serving compute features the same way.

    from keel.features import Entity, FeatureStore, FeatureView, Field, ParquetSource

Backends live below: ``keel.features.offline`` (engines that build training sets: DuckDB,
Spark) and ``keel.features.online`` (stores that serve the latest values: SQLite, Redis).
Names resolve lazily, so importing this package imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Aggregation": "keel.features.definitions",
    "DatasetSource": "keel.features.sources",
    "Entity": "keel.features.definitions",
    "FeatureService": "keel.features.service",
    "FeatureStore": "keel.features.store",
    "FeatureView": "keel.features.definitions",
    "Field": "keel.features.definitions",
    "MaterializeResult": "keel.features.materialize",
    "OnDemandFeatureView": "keel.features.ondemand",
    "OnlineResult": "keel.features.serving",
    "ParquetSource": "keel.features.sources",
    "PostgresSource": "keel.features.sources",
    "RequestField": "keel.features.ondemand",
    "TrainingSet": "keel.features.training",
    "apply_definitions": "keel.features.registry",
    "check_parity": "keel.features.ondemand",
    "diff_versions": "keel.features.registry",
    "get_feature_view": "keel.features.registry",
    "list_feature_views": "keel.features.registry",
    "on_demand_feature_view": "keel.features.ondemand",
}

__all__ = [
    "Aggregation",
    "DatasetSource",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "MaterializeResult",
    "OnDemandFeatureView",
    "OnlineResult",
    "ParquetSource",
    "PostgresSource",
    "RequestField",
    "TrainingSet",
    "apply_definitions",
    "check_parity",
    "diff_versions",
    "get_feature_view",
    "list_feature_views",
    "on_demand_feature_view",
]

if TYPE_CHECKING:
    from keel.features.definitions import Aggregation, Entity, FeatureView, Field
    from keel.features.materialize import MaterializeResult
    from keel.features.ondemand import (
        OnDemandFeatureView,
        RequestField,
        check_parity,
        on_demand_feature_view,
    )
    from keel.features.registry import (
        apply_definitions,
        diff_versions,
        get_feature_view,
        list_feature_views,
    )
    from keel.features.service import FeatureService
    from keel.features.serving import OnlineResult
    from keel.features.sources import DatasetSource, ParquetSource, PostgresSource
    from keel.features.store import FeatureStore
    from keel.features.training import TrainingSet


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
