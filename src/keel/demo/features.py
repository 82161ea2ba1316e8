"""Fraud features for the demo, computed with pandas from the three demo tables.

Each feature uses only what was known at the transaction's event time (earlier transactions of
the same user), so a model trained on them could be served. The feature store replaces this
module's role in the demo once feature views exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from keel.demo.data import DemoData

HOUR_MS = 3_600_000
FEATURES = [
    "amount_log",
    "amount_vs_user",
    "hour",
    "is_night",
    "is_online",
    "is_contactless",
    "merchant_risk",
    "category_code",
    "account_age_days",
    "is_foreign",
    "user_txn_last_hour",
    "user_txn_count",
]
LABEL = "is_fraud"


def build_features(data: DemoData) -> pd.DataFrame:
    """One row per transaction, in event-time order: keys, timestamps, FEATURES and the label."""
    import numpy as np
    import pandas as pd

    tx = data.transactions.sort_values(["event_timestamp", "transaction_id"], kind="stable")
    tx = tx.reset_index(drop=True)
    merchants, users = data.merchants, data.users
    m_row = pd.Index(merchants["merchant_id"]).get_indexer(tx["merchant_id"])
    u_row = pd.Index(users["user_id"]).get_indexer(tx["user_id"])
    t_ms = _epoch_ms(tx["event_timestamp"])
    user = tx["user_id"].to_numpy()
    amount_log = np.log1p(tx["amount"].to_numpy())

    # Per-user running statistics, computed on (user, time) order and mapped back.
    order = np.lexsort((t_ms, user))
    u_sorted, t_sorted, a_sorted = user[order], t_ms[order], amount_log[order]
    first = np.r_[True, u_sorted[1:] != u_sorted[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    rank = np.arange(len(order)) - group_start  # earlier transactions of this user
    csum = np.cumsum(a_sorted)
    prior_sum = csum - a_sorted - np.where(group_start > 0, csum[group_start - 1], 0.0)
    prior_mean = np.divide(prior_sum, rank, out=np.zeros_like(prior_sum), where=rank > 0)
    key = u_sorted.astype(np.int64) * (1 << 36) + (t_sorted - t_sorted.min())
    in_last_hour = np.arange(len(order)) - np.searchsorted(key, key - HOUR_MS, side="left")

    def back(values: NDArray[Any]) -> NDArray[Any]:
        out = np.empty_like(values)
        out[order] = values
        return out

    risk_codes = merchants["risk_tier"].map({"low": 0, "medium": 1, "high": 2}).to_numpy()
    category = pd.Categorical(merchants["category"]).codes[m_row]
    merchant_country = merchants["country"].to_numpy()[m_row]
    home = users["home_country"].to_numpy()[u_row]
    signup_ms = _epoch_ms(users["signup_timestamp"])[u_row]
    hour = (t_ms // HOUR_MS) % 24
    return pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"].to_numpy(),
            "user_id": user,
            "event_timestamp": tx["event_timestamp"],
            "amount_log": amount_log,
            "amount_vs_user": np.where(back(rank) > 0, amount_log - back(prior_mean), 0.0),
            "hour": hour.astype(np.int64),
            "is_night": (hour < 6).astype(np.int64),
            "is_online": (tx["channel"] == "online").to_numpy().astype(np.int64),
            "is_contactless": (tx["channel"] == "contactless").to_numpy().astype(np.int64),
            "merchant_risk": risk_codes[m_row].astype(np.int64),
            "category_code": category.astype(np.int64),
            "account_age_days": (t_ms - signup_ms) / 86_400_000,
            "is_foreign": (merchant_country != home).astype(np.int64),
            "user_txn_last_hour": back(in_last_hour).astype(np.int64),
            "user_txn_count": back(rank).astype(np.int64),
            LABEL: tx[LABEL].to_numpy(),
        }
    )


def _epoch_ms(column: pd.Series) -> NDArray[np.int64]:
    import numpy as np

    # as_unit: pandas may hold datetimes in s, ms, us or ns; the features use milliseconds.
    return np.asarray(column.dt.as_unit("ms").astype("int64"), dtype=np.int64)
