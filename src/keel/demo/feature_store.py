"""The demo's feature store: feature views over the versioned transactions, the training set
built through the store, the online store materialized, online lookups and a skew check.

The definitions are written into the demo project as ``features.py`` (what a team would keep
in git) and registered with ``keel features apply``. The per-user and per-merchant features are
windowed aggregations of the transactions; the amount-to-average ratio is an on-demand view,
one function that runs on the training set and on every online lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from keel.features.skew import SkewReport
    from keel.features.store import FeatureStore
    from keel.project import Project

SERVICE = "fraud_features"
DEFINITIONS = '''"""Fraud features of the Keel demo: one definition for training and serving."""

import numpy as np

from keel.features import (
    Aggregation,
    DatasetSource,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    RequestField,
    on_demand_feature_view,
)

user = Entity("user", join_keys={"user_id": "int64"}, description="a card holder")
merchant = Entity("merchant", join_keys={"merchant_id": "int64"}, description="a card acceptor")

# The versioned transactions (keel data add data); a transaction is known once it is recorded
# (created_timestamp), so a training row never sees its own transaction or its label.
transactions = DatasetSource(
    "data/transactions.parquet",
    event_timestamp="event_timestamp",
    created_timestamp="created_timestamp",
)

user_spending = FeatureView(
    "user_spending",
    entity=user,
    source=transactions,
    aggregations=[
        Aggregation("amount", "count", "1h"),
        Aggregation("amount", "sum", "1d", default=0.0),
        Aggregation("amount", "count", "1d"),
        Aggregation("amount", "sum", "7d", default=0.0),
        Aggregation("amount", "count", "7d"),
        Aggregation("amount", "sum", "30d", default=0.0),
        Aggregation("amount", "count", "30d"),
        Aggregation("amount", "mean", "30d", default=0.0),
    ],
    owner="fraud-team@keel.dev",
    description="what a card holder spent and how often, over the last hour and 1, 7, 30 days",
)

merchant_risk = FeatureView(
    "merchant_risk",
    entity=merchant,
    source=transactions,
    aggregations=[
        Aggregation("is_fraud", "mean", "30d", name="merchant_fraud_rate_30d", default=0.0),
        Aggregation("is_fraud", "count", "30d", name="merchant_txn_30d"),
    ],
    owner="fraud-team@keel.dev",
    description="the share of a merchant's transactions that were fraud, over 30 days",
)


@on_demand_feature_view(
    inputs=["user_spending:amount_mean_30d"],
    request=[RequestField("amount", "float64")],
    outputs=[Field("amount_to_avg_30d", "float64")],
    owner="fraud-team@keel.dev",
    description="this amount against the card holder's 30-day average",
)
def amount_ratio(columns):
    mean = columns["amount_mean_30d"]
    ratio = columns["amount"] / np.maximum(mean, 1e-9)
    return {"amount_to_avg_30d": np.where(mean > 0, ratio, 1.0)}


@on_demand_feature_view(
    request=[
        RequestField("amount", "float64"),
        RequestField("channel", "string"),
        RequestField("event_timestamp", "timestamp"),
    ],
    inputs=[],
    outputs=[
        Field("amount_log", "float64"),
        Field("is_online", "int64"),
        Field("is_contactless", "int64"),
        Field("hour", "int64"),
        Field("is_night", "int64"),
    ],
    owner="fraud-team@keel.dev",
    description="what the transaction itself says: its size, how the card was used, and when",
)
def transaction_shape(columns):
    channel = columns["channel"]
    hour = columns["event_timestamp"].astype("datetime64[h]").astype(np.int64) % 24
    return {
        "amount_log": np.log1p(columns["amount"]),
        "is_online": (channel == "online").astype(np.int64),
        "is_contactless": (channel == "contactless").astype(np.int64),
        "hour": hour,
        "is_night": (hour < 6).astype(np.int64),
    }


fraud_features = FeatureService(
    "fraud_features",
    features=[user_spending, merchant_risk, amount_ratio, transaction_shape],
    owner="fraud-team@keel.dev",
    description="what the fraud model consumes",
)
'''
STORE_FEATURES = [
    "amount_count_1h",
    "amount_sum_1d",
    "amount_count_1d",
    "amount_sum_7d",
    "amount_count_7d",
    "amount_sum_30d",
    "amount_count_30d",
    "amount_mean_30d",
    "merchant_fraud_rate_30d",
    "merchant_txn_30d",
    "amount_to_avg_30d",
    "amount_log",
    "is_online",
    "is_contactless",
    "hour",
    "is_night",
]


def define_features(project: Project) -> list[Any]:
    """Write features.py into the project and register it (`keel features apply`)."""
    from keel.features.registry import apply_definitions

    (project.root / "features.py").write_text(DEFINITIONS, "utf-8")
    return apply_definitions(project)


@dataclass(frozen=True)
class ServingCheck:
    """What the demo shows of the online side: one lookup and the skew check."""

    lookup: dict[str, Any]
    versions: dict[str, str | None]
    ages: dict[str, str]
    skew: SkewReport
    lookups: int
    materialized_rows: int


def serve_and_check(store: FeatureStore, frame: pd.DataFrame, *, sample: int = 400) -> ServingCheck:
    """Materialize up to the end of the data, look up the features of ``sample`` transactions
    of the last day as a server would at that time (each lookup logged), and recompute them
    through the offline path: the skew check."""
    from keel.features.skew import check_skew

    end = frame["event_timestamp"].max().to_pydatetime()
    results = store.materialize(end=end)
    last_day = frame[frame["event_timestamp"] > end - _day()]
    chosen = last_day.sample(n=min(sample, len(last_day)), random_state=7)
    rows = [
        {
            "user_id": int(u),
            "merchant_id": int(m),
            "amount": float(a),
            "channel": str(c),
            "event_timestamp": t.to_pydatetime(),
        }
        for u, m, a, c, t in zip(
            chosen["user_id"],
            chosen["merchant_id"],
            chosen["amount"],
            chosen["channel"],
            chosen["event_timestamp"],
            strict=True,
        )
    ]
    first = None
    for at in range(0, len(rows), 100):
        result = store.get_online_features(
            entity_rows=rows[at : at + 100], service=SERVICE, request_time=end
        )
        first = first or result
    if first is None:
        raise RuntimeError("the demo data has no transaction on its last day")
    lookup = {name: values[0] for name, values in first.columns.items()}
    versions = {name: first.version(name) for name in first.sources}
    ages = {name: str(first.age(name) or "") for name in first.sources}
    return ServingCheck(
        lookup,
        versions,
        ages,
        check_skew(store),
        len(rows),
        sum(r.rows_read for r in results),
    )


def _day() -> Any:
    from datetime import timedelta

    return timedelta(days=1)
