"""Offline engines: point-in-time-correct training sets from feature-view sources.

    from keel.features.offline import DuckDBEngine, FeatureInput, JoinRequest, ViewInput

    view = ViewInput("user_stats", ("user_id",), "data/user_stats/*.parquet", "event_ts",
                     created_timestamp="created_ts", ttl=timedelta(days=7),
                     features=(FeatureInput("spend_7d", "float64", default=0.0),))
    table = DuckDBEngine(memory_limit="2GB").get_training_set(
        JoinRequest(entity_df, (view,), timestamp_column="ts"))

The semantics are in `keel.features.offline.spec`. Names resolve lazily, so importing this
package imports neither DuckDB nor Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "AGGREGATIONS": "keel.features.offline.spec",
    "DTYPES": "keel.features.offline.spec",
    "AggregationInput": "keel.features.offline.spec",
    "DuckDBEngine": "keel.features.offline.duckdb_engine",
    "FeatureInput": "keel.features.offline.spec",
    "JoinRequest": "keel.features.offline.spec",
    "OfflineEngine": "keel.features.offline.base",
    "SparkEngine": "keel.features.offline.spark_engine",
    "ViewInput": "keel.features.offline.spec",
    "fingerprint": "keel.features.offline.fingerprint",
    "table_hash": "keel.features.offline.fingerprint",
}

__all__ = [
    "AGGREGATIONS",
    "DTYPES",
    "AggregationInput",
    "DuckDBEngine",
    "FeatureInput",
    "JoinRequest",
    "OfflineEngine",
    "SparkEngine",
    "ViewInput",
    "fingerprint",
    "table_hash",
]

if TYPE_CHECKING:
    from keel.features.offline.base import OfflineEngine
    from keel.features.offline.duckdb_engine import DuckDBEngine
    from keel.features.offline.fingerprint import fingerprint, table_hash
    from keel.features.offline.spark_engine import SparkEngine
    from keel.features.offline.spec import (
        AGGREGATIONS,
        DTYPES,
        AggregationInput,
        FeatureInput,
        JoinRequest,
        ViewInput,
    )


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
