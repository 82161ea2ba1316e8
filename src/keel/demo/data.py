"""Generate the synthetic card-transaction stream of the Keel demo.

Three tables, deterministic from ``Scenario.seed``: ``users``, ``merchants`` and
``transactions`` (about 1,000,000 rows over 120 days by default). The weekly cycle, the bank
holiday, the marketing campaign (data drift) and the fraud shift (concept drift) are described,
with their exact dates, in ``keel.demo.scenario`` and docs/demo-data.md.

Every draw is vectorized numpy: 1,000,000 rows take about one second on two cores.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.demo import _stream
from keel.demo import scenario as sc
from keel.demo.scenario import Scenario
from keel.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    Arr = NDArray[Any]

DAY_MS, HOUR_MS = _stream.DAY_MS, _stream.HOUR_MS


@dataclass(frozen=True)
class DemoData:
    """The generated tables and the scenario (with its true change points) they follow."""

    transactions: pd.DataFrame
    users: pd.DataFrame
    merchants: pd.DataFrame
    scenario: Scenario


def generate(
    scenario: Scenario | None = None, *, n_rows: int | None = None, seed: int | None = None
) -> DemoData:
    """Generate the demo tables; ``n_rows`` and ``seed`` override the scenario's values.

    Example:
        >>> data = generate(n_rows=50_000, seed=1)
        >>> len(data.transactions), round(float(data.transactions["is_fraud"].mean()), 2)
        (50000, 0.01)
    """
    import numpy as np

    base = scenario if scenario is not None else Scenario.default()
    if not isinstance(base, Scenario):
        raise InvalidInputError(f"scenario must be a keel.demo.Scenario, not {type(base)!r}")
    s = replace(
        base,
        n_rows=base.n_rows if n_rows is None else n_rows,
        seed=base.seed if seed is None else seed,
    )
    rng = np.random.default_rng(s.seed)
    users = _stream.make_users(s, rng)
    merchants = _stream.make_merchants(s, rng)
    n_extra = round(s.n_rows * s.base_fraud_rate * sc.BURST_SHARE)
    rows = _stream.draw_rows(s, rng, users, merchants, s.n_rows - n_extra)
    _label(s, rng, rows, users, merchants)
    rows = _with_follow_ups(s, rng, rows, merchants, n_extra)
    return DemoData(
        transactions=_transactions_frame(s, rng, rows, merchants),
        users=_users_frame(s, users),
        merchants=_merchants_frame(merchants),
        scenario=s,
    )


def write_parquet(
    data: DemoData, directory: str | os.PathLike[str], *, partition_by_day: bool = False
) -> dict[str, Path]:
    """Write one Parquet file per table into ``directory``; return table name -> path.

    With ``partition_by_day`` the transactions become a Hive-partitioned directory
    ``transactions/event_date=YYYY-MM-DD/``. Each file appears complete or not at all.

    Example:
        >>> paths = write_parquet(generate(n_rows=20_000), "demo-data")  # doctest: +SKIP
        >>> paths["transactions"]
        PosixPath('demo-data/transactions.parquet')
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"{root} is a file; pass a directory to write the demo tables in")
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "users": _write_file(data.users, root / "users.parquet"),
        "merchants": _write_file(data.merchants, root / "merchants.parquet"),
    }
    if partition_by_day:
        paths["transactions"] = _write_by_day(data.transactions, root / "transactions")
    else:
        paths["transactions"] = _write_file(data.transactions, root / "transactions.parquet")
    return paths


def _velocity(user: Arr, t_ms: Arr, span: int) -> Arr:
    """Transactions of the same user in the window (t - 1 hour, t], this one included."""
    import numpy as np

    key = user * span + t_ms
    order = np.argsort(key, kind="stable")
    ks = key[order]
    count = np.searchsorted(ks, ks, side="right") - np.searchsorted(ks, ks - HOUR_MS, side="right")
    out = np.empty_like(count)
    out[order] = count
    return out


def _fraud_logit(
    p: sc.FraudProfile, rng: np.random.Generator, rows: dict[str, Arr], context: dict[str, Arr]
) -> Arr:
    import numpy as np

    hour = (rows["t_ms"] % DAY_MS) // HOUR_MS
    night, channel, z = hour < 6, rows["channel"], rows["z"]
    new = context["age_ms"] < 30 * DAY_MS
    score: Arr = (
        np.asarray(p.channel)[channel]
        + np.asarray(p.category)[rows["cat"]]
        + p.afternoon * ((hour >= 15) & (hour < 20))
        + p.large_amount * (z - 1).clip(0.0, 2.0)
        + p.small_amount * (-z - 1).clip(0.0, 2.0)
        + np.asarray(p.risk)[context["risk"]]
        + p.foreign * context["foreign"]
        + p.velocity * (context["velocity"] - 1).clip(0, 3)
        + p.combo * ((channel == 2) & (night | new))
        + p.noise * rng.standard_normal(len(z))
    )
    return score


def _intercept(score: Arr, target: float) -> float:
    """The b for which mean(sigmoid(b + score)) equals ``target`` (Newton's method)."""
    import numpy as np

    b = float(np.log(target / (1 - target)) - np.median(score))
    for _ in range(50):
        prob = 1.0 / (1.0 + np.exp(-(b + score)))
        gap = float(prob.mean()) - target
        if abs(gap) < 1e-9:
            break
        b -= float(np.clip(gap / max(float((prob * (1 - prob)).mean()), 1e-12), -2.0, 2.0))
    return b


def _label(
    s: Scenario,
    rng: np.random.Generator,
    rows: dict[str, Arr],
    users: dict[str, Arr],
    m: dict[str, Arr],
) -> None:
    """Draw is_fraud from the profile of each row's phase, calibrated to the base rate."""
    import numpy as np

    user, merchant = rows["user"], rows["merchant"]
    context = {
        "risk": m["risk"][merchant],
        "age_ms": rows["t_ms"] - users["signup_ms"][user],
        "foreign": m["country"][merchant] != users["country"][user],
        "velocity": _velocity(user, rows["t_ms"], s.days * DAY_MS + 2 * HOUR_MS),
    }
    # The follow-ups added later bring each phase back up to the base rate.
    target = s.base_fraud_rate * (1 - sc.BURST_SHARE) * s.n_rows / len(user)
    after = rows["t_ms"] >= _stream.offset_ms(s, s.fraud_shift_start)
    # Calibrated on ordinary days: the campaign's new users raise the rate, as they would.
    calm = rows["t_ms"] < _stream.offset_ms(s, s.campaign_start)
    for phase, profile in ((~after, sc.PRE_SHIFT_FRAUD), (after, sc.POST_SHIFT_FRAUD)):
        if not phase.any():
            continue
        part = {k: v[phase] for k, v in rows.items()}
        score = _fraud_logit(profile, rng, part, {k: v[phase] for k, v in context.items()})
        reference = score[calm[phase]] if calm[phase].any() else score
        prob = 1.0 / (1.0 + np.exp(-(_intercept(reference, target) + score)))
        rows["is_fraud"][phase] = rng.random(len(prob)) < prob


def _with_follow_ups(
    s: Scenario, rng: np.random.Generator, rows: dict[str, Arr], m: dict[str, Arr], n_extra: int
) -> dict[str, Arr]:
    """Add ``n_extra`` fraud rows, each a few minutes after a fraud of the same user and kind."""
    import numpy as np

    frauds = np.flatnonzero(rows["is_fraud"])
    parent = rng.choice(frauds if len(frauds) else np.arange(len(rows["user"])), n_extra)
    t_ms = rows["t_ms"][parent] + rng.integers(60_000, 50 * 60_000, n_extra)
    extra = {
        "user": rows["user"][parent],
        "t_ms": t_ms.clip(0, s.days * DAY_MS - 1),
        "cat": rows["cat"][parent],
        "z": rows["z"][parent],
        "amount_eur": rows["amount_eur"][parent] * rng.lognormal(0.0, 0.3, n_extra),
        "channel": rows["channel"][parent],
        "merchant": _stream.pick_merchant(rng, m, rows["cat"][parent], np.full(n_extra, -1)),
        "is_fraud": np.ones(n_extra, dtype=np.int64),
    }
    both = {k: np.concatenate([rows[k], extra[k]]) for k in rows}
    order = np.argsort(both["t_ms"], kind="stable")
    return {k: v[order] for k, v in both.items()}


def _labels(names: tuple[str, ...], codes: Arr) -> Any:
    import pandas as pd

    return pd.array(list(names), dtype="str").take(codes)


def _utc(s: Scenario, offset_ms: Arr) -> pd.Series:
    import pandas as pd

    ms = int(s.start.timestamp()) * 1000 + offset_ms
    return pd.Series(pd.DatetimeIndex((ms * 1_000_000).astype("datetime64[ns]")).tz_localize("UTC"))


def _transactions_frame(
    s: Scenario, rng: np.random.Generator, rows: dict[str, Arr], m: dict[str, Arr]
) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    n = len(rows["user"])
    country = m["country"][rows["merchant"]]
    lag = rng.lognormal(np.log(3000.0), 1.0, n).clip(100, 600_000).astype(np.int64)
    late = rng.random(n) < s.late_fraction
    lag = np.where(late, rng.integers(HOUR_MS, 72 * HOUR_MS, n), lag)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(1, n + 1, dtype=np.int64),
            "user_id": rows["user"].astype(np.int64) + 1,
            "merchant_id": m["id"][rows["merchant"]].astype(np.int64),
            "amount": (rows["amount_eur"] * np.asarray(sc.EUR_RATE)[country]).round(2),
            "currency": _labels(sc.CURRENCY, country),
            "channel": _labels(sc.CHANNELS, rows["channel"]),
            "event_timestamp": _utc(s, rows["t_ms"]),
            "created_timestamp": _utc(s, rows["t_ms"] + lag),
            "is_fraud": rows["is_fraud"].astype(np.int64),
        }
    )


def _users_frame(s: Scenario, users: dict[str, Arr]) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    n = len(users["signup_ms"])
    return pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1, dtype=np.int64),
            "signup_timestamp": _utc(s, users["signup_ms"]),
            "home_country": _labels(sc.COUNTRIES, users["country"]),
            "segment": _labels(sc.SEGMENTS, users["segment"]),
            "age_band": _labels(sc.AGE_BANDS, users["age"]),
            "signup_source": _labels(sc.SIGNUP_SOURCES, users["source"]),
        }
    )


def _merchants_frame(m: dict[str, Arr]) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    order = np.argsort(m["id"])
    return pd.DataFrame(
        {
            "merchant_id": m["id"][order].astype(np.int64),
            "category": _labels(sc.CATEGORIES, m["cat"][order]),
            "country": _labels(sc.COUNTRIES, m["country"][order]),
            "risk_tier": _labels(sc.RISK_TIERS, m["risk"][order]),
        }
    )


def _write_file(frame: pd.DataFrame, path: Path) -> Path:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_by_day(frame: pd.DataFrame, path: Path) -> Path:
    """Write a Hive-partitioned directory (event_date=YYYY-MM-DD), swapped in when complete."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.append_column("event_date", pc.cast(table["event_timestamp"], pa.date32()))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    try:
        ds.write_dataset(
            table,
            tmp,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([("event_date", pa.date32())]), flavor="hive"),
            existing_data_behavior="delete_matching",
        )
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path
