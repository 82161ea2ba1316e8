"""The demo dataset: determinism, schema, calendar effects and the two documented drifts."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from keel.demo import DemoData, Scenario, generate, write_parquet
from keel.demo import scenario as sc
from keel.errors import InvalidInputError

N_ROWS = 200_000
TWO_WEEKS = pd.Timedelta(days=14)


@pytest.fixture(scope="module")
def data() -> DemoData:
    return generate(n_rows=N_ROWS)


@pytest.fixture(scope="module")
def tx(data: DemoData) -> pd.DataFrame:
    """Transactions joined with their merchant and user, as a monitoring job would see them."""
    joined = data.transactions.merge(data.merchants, on="merchant_id", how="left")
    return joined.merge(data.users, on="user_id", how="left")


def _tvd(a: pd.Series, b: pd.Series) -> float:
    """Total variation distance between the value distributions of two categorical columns."""
    pa, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
    return float(0.5 * pa.sub(pb, fill_value=0).abs().sum())


def _between(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    ts = frame["event_timestamp"]
    return frame[(ts >= start) & (ts < end)]


def test_same_seed_gives_identical_frames_and_another_seed_does_not() -> None:
    a, b = generate(n_rows=20_000, seed=3), generate(n_rows=20_000, seed=3)
    for name in ("transactions", "users", "merchants"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    c = generate(n_rows=20_000, seed=4)
    assert not a.transactions["amount"].equals(c.transactions["amount"])
    assert not a.transactions["user_id"].equals(c.transactions["user_id"])
    assert (a.scenario.seed, c.scenario.seed, c.scenario.n_rows) == (3, 4, 20_000)


def test_schema_and_row_count(data: DemoData) -> None:
    t, users, merchants = data.transactions, data.users, data.merchants
    assert len(t) == N_ROWS
    assert {c: str(d) for c, d in t.dtypes.items()} == {
        "transaction_id": "int64",
        "user_id": "int64",
        "merchant_id": "int64",
        "amount": "float64",
        "currency": "str",
        "channel": "str",
        "event_timestamp": "datetime64[ns, UTC]",
        "created_timestamp": "datetime64[ns, UTC]",
        "is_fraud": "int64",
    }
    assert list(users.columns) == [
        "user_id",
        "signup_timestamp",
        "home_country",
        "segment",
        "age_band",
        "signup_source",
    ]
    assert str(users["signup_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert list(merchants.columns) == ["merchant_id", "category", "country", "risk_tier"]
    assert (t["transaction_id"] == np.arange(1, N_ROWS + 1)).all()
    assert t["user_id"].isin(users["user_id"]).all()
    assert t["merchant_id"].isin(merchants["merchant_id"]).all()
    assert users["user_id"].is_unique
    assert merchants["merchant_id"].is_unique
    assert not set(users["user_id"]) & set(merchants["merchant_id"])
    assert set(t["channel"]) == set(sc.CHANNELS)
    assert set(t["currency"]) == {"EUR", "GBP", "USD"}
    assert set(merchants["category"]) == set(sc.CATEGORIES)
    assert set(t["is_fraud"]) == {0, 1}
    assert (t["amount"] > 0).all()
    assert t["amount"].max() > 20 * t["amount"].median()


def test_timestamps_are_utc_inside_the_period_and_created_not_before_event(
    data: DemoData,
) -> None:
    t, s = data.transactions, data.scenario
    assert t["event_timestamp"].min() >= s.start
    assert t["event_timestamp"].max() < s.end
    assert t["event_timestamp"].is_monotonic_increasing
    lag = t["created_timestamp"] - t["event_timestamp"]
    assert (lag > pd.Timedelta(0)).all()
    assert lag.median() < pd.Timedelta(seconds=30)
    late = (lag >= pd.Timedelta(hours=1)).mean()
    assert late == pytest.approx(s.late_fraction, rel=0.15)
    assert lag.max() <= pd.Timedelta(hours=72)


def test_weekly_seasonality_follows_the_weekday_factors(tx: pd.DataFrame, data: DemoData) -> None:
    s = data.scenario
    quiet = _between(tx, s.start, s.campaign_start)
    daily = quiet.groupby(quiet["event_timestamp"].dt.floor("D")).size()
    daily = daily[daily.index.date != s.bank_holiday]
    by_dow = daily.groupby(daily.index.day_of_week).mean()
    relative = by_dow / by_dow[:4].mean()
    expected = np.asarray(sc.DOW_VOLUME) / np.mean(sc.DOW_VOLUME[:4])
    assert relative.to_numpy() == pytest.approx(expected, abs=0.06)
    assert relative[4] > 1.12
    assert relative[6] < 0.82
    weekend = quiet["event_timestamp"].dt.day_of_week >= 5
    share = quiet.groupby(weekend)["category"].value_counts(normalize=True)
    assert share[True, "restaurants"] > share[False, "restaurants"] * 1.08
    assert share[True, "fuel"] < share[False, "fuel"] * 0.8


def test_bank_holiday_has_its_own_volume_and_mix(tx: pd.DataFrame, data: DemoData) -> None:
    s = data.scenario
    quiet = _between(tx, s.start, s.campaign_start)
    day = quiet["event_timestamp"].dt.floor("D")
    holiday = day.dt.date == s.bank_holiday
    mondays = (day.dt.day_of_week == 0) & ~holiday
    monday_volume = mondays.sum() / day[mondays].nunique()
    assert holiday.sum() / monday_volume == pytest.approx(sc.HOLIDAY_VOLUME, abs=0.08)
    travel = quiet["category"] == "travel"
    assert travel[holiday].mean() > 1.5 * travel[mondays].mean()
    assert (quiet["category"] == "grocery")[holiday].mean() < 0.7 * (
        quiet["category"] == "grocery"
    )[mondays].mean()


def test_campaign_users_arrive_in_the_window_and_spend_differently(
    tx: pd.DataFrame, data: DemoData
) -> None:
    s, users = data.scenario, data.users
    joined = users[users["signup_source"] == "campaign"]
    assert len(joined) == round(N_ROWS // sc.ROWS_PER_USER * s.campaign_user_share)
    assert joined["signup_timestamp"].min() >= s.campaign_start
    assert joined["signup_timestamp"].max() < s.campaign_end
    campaign = tx["signup_source"] == "campaign"
    assert tx.loc[campaign, "event_timestamp"].min() >= s.campaign_start + timedelta(days=1)
    after = tx[tx["event_timestamp"] >= s.campaign_end]
    mine = after["signup_source"] == "campaign"
    assert 0.15 < mine.mean() < 0.40  # a large part of the volume after the campaign
    result = stats.ks_2samp(after.loc[mine, "amount"], after.loc[~mine, "amount"])
    assert result.pvalue < 1e-12
    assert result.statistic > 0.2
    assert after.loc[mine, "amount"].median() < 0.7 * after.loc[~mine, "amount"].median()
    assert _tvd(after.loc[mine, "category"], after.loc[~mine, "category"]) > 0.15
    assert _tvd(after.loc[mine, "channel"], after.loc[~mine, "channel"]) > 0.10


def test_campaign_shifts_the_overall_inputs_but_the_weeks_before_do_not(
    tx: pd.DataFrame, data: DemoData
) -> None:
    s = data.scenario
    ordinary = tx[tx["event_timestamp"].dt.date != s.bank_holiday]  # seasonality, not drift
    early = _between(ordinary, s.campaign_start - 2 * TWO_WEEKS, s.campaign_start - TWO_WEEKS)
    before = _between(ordinary, s.campaign_start - TWO_WEEKS, s.campaign_start)
    after = _between(ordinary, s.campaign_end, s.campaign_end + TWO_WEEKS)
    for column in ("category", "channel", "home_country"):
        quiet, drifted = _tvd(early[column], before[column]), _tvd(before[column], after[column])
        assert quiet < 0.025, column
        assert drifted > max(0.045, 3 * quiet), column
    quiet_ks = stats.ks_2samp(early["amount"], before["amount"]).statistic
    drifted_ks = stats.ks_2samp(before["amount"], after["amount"]).statistic
    assert quiet_ks < 0.03
    assert drifted_ks > 0.07


def test_fraud_rate_stays_in_the_band(tx: pd.DataFrame, data: DemoData) -> None:
    s = data.scenario
    ts = tx["event_timestamp"]
    quiet = tx.loc[ts < s.campaign_start, "is_fraud"].mean()
    campaign = tx.loc[(ts >= s.campaign_start) & (ts < s.fraud_shift_start), "is_fraud"].mean()
    shifted = tx.loc[ts >= s.fraud_shift_start, "is_fraud"].mean()
    assert quiet == pytest.approx(s.base_fraud_rate, rel=0.15)
    assert shifted == pytest.approx(s.base_fraud_rate, rel=0.15)
    # New campaign accounts paying online are riskier under the pre-shift profile.
    assert 1.2 * quiet < campaign < 0.02
    fortnight = (ts - s.start).dt.days // 14
    rates = tx.groupby(fortnight)["is_fraud"].mean()
    assert rates.between(0.005, 0.02).all(), rates.to_dict()


def test_fraud_profile_changes_at_the_shift(tx: pd.DataFrame, data: DemoData) -> None:
    s = data.scenario
    before = _between(tx, s.start, s.fraud_shift_start)
    after = _between(tx, s.fraud_shift_start, s.end)
    fb, fa = before[before["is_fraud"] == 1], after[after["is_fraud"] == 1]
    in_shop = ["fuel", "grocery"]
    assert fa["category"].isin(in_shop).mean() > fb["category"].isin(in_shop).mean() + 0.2
    assert (fb["channel"] == "online").mean() > 0.5 > 0.3 > (fa["channel"] == "online").mean()
    table = pd.crosstab(pd.concat([fb, fa])["category"], [0] * len(fb) + [1] * len(fa))
    assert stats.chi2_contingency(table).pvalue < 1e-12
    # The same kind of row is risky before and harmless after, and the other way round.
    hour = tx["event_timestamp"].dt.hour
    night_online = (tx["channel"] == "online") & (hour < 6)
    shifted = tx["event_timestamp"] >= s.fraud_shift_start
    lift = tx.groupby([shifted, night_online])["is_fraud"].mean()
    assert lift[False, True] > 4 * lift[False, False]
    assert lift[True, True] < 1.5 * lift[True, False]
    fuel = tx["category"] == "fuel"
    assert (
        tx.loc[fuel & shifted, "is_fraud"].mean() > 3 * tx.loc[fuel & ~shifted, "is_fraud"].mean()
    )


def test_inputs_of_existing_users_barely_change_at_the_shift(
    tx: pd.DataFrame, data: DemoData
) -> None:
    s = data.scenario
    existing = tx[tx["signup_timestamp"] < s.start]
    before = _between(existing, s.fraud_shift_start - TWO_WEEKS, s.fraud_shift_start)
    after = _between(existing, s.fraud_shift_start, s.fraud_shift_start + TWO_WEEKS)
    for column in ("category", "channel", "currency", "risk_tier"):
        assert _tvd(before[column], after[column]) < 0.02, column
    for values in (lambda f: f["amount"], lambda f: f["event_timestamp"].dt.hour):
        assert stats.ks_2samp(values(before), values(after)).statistic < 0.02


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32), n_rows=st.integers(10_000, 30_000))
def test_invariants_hold_for_any_seed(seed: int, n_rows: int) -> None:
    data = generate(n_rows=n_rows, seed=seed)
    t = data.transactions.merge(data.users, on="user_id")
    assert len(t) == n_rows
    assert (t["event_timestamp"] > t["signup_timestamp"]).all()
    assert (t["created_timestamp"] > t["event_timestamp"]).all()
    assert t["event_timestamp"].between(data.scenario.start, data.scenario.end).all()
    assert 0.004 < t["is_fraud"].mean() < 0.02


def test_write_parquet_round_trips_every_table(data: DemoData, tmp_path: Path) -> None:
    small = generate(n_rows=20_000)
    paths = write_parquet(small, tmp_path / "out")
    assert paths == {name: tmp_path / "out" / f"{name}.parquet" for name in paths}
    assert sorted(paths) == ["merchants", "transactions", "users"]
    for name, path in paths.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), getattr(small, name))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{name}.parquet" for name in paths
    )  # no temporary file left behind


def test_write_parquet_can_partition_transactions_by_day(tmp_path: Path) -> None:
    small = generate(n_rows=20_000)
    for _ in range(2):  # writing again replaces the directory
        paths = write_parquet(small, tmp_path, partition_by_day=True)
    folder = paths["transactions"]
    assert folder == tmp_path / "transactions"
    assert folder.is_dir()
    days = sorted(p.name for p in folder.iterdir())
    assert len(days) == small.scenario.days
    assert days[0] == "event_date=2026-01-05"
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
    back = table.to_pandas().sort_values("transaction_id").reset_index(drop=True)
    assert len(back) == len(small.transactions)
    assert (back["amount"].to_numpy() == small.transactions["amount"].to_numpy()).all()
    assert back["event_timestamp"].dt.date.astype(str).eq(back["event_date"].astype(str)).all()


def test_write_parquet_refuses_a_file_as_directory(data: DemoData, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        write_parquet(data, target)


def test_default_scenario_documents_the_change_points() -> None:
    s = Scenario.default()
    assert (s.start, s.days, s.n_rows, s.seed) == (datetime(2026, 1, 5, tzinfo=UTC), 120, 10**6, 7)
    assert s.end == datetime(2026, 5, 5, tzinfo=UTC)
    assert {k: v.date() for k, v in s.change_points().items()} == {
        "bank_holiday_start": date(2026, 2, 16),
        "bank_holiday_end": date(2026, 2, 17),
        "campaign_start": date(2026, 3, 2),
        "campaign_end": date(2026, 3, 16),
        "fraud_shift_start": date(2026, 3, 30),
    }
    assert s.base_fraud_rate == 0.01


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"start": datetime(2026, 1, 5)}, "aware UTC midnight"),
        ({"start": datetime(2026, 1, 5, 6, tzinfo=UTC)}, "aware UTC midnight"),
        ({"campaign_end": datetime(2026, 3, 1, tzinfo=UTC)}, "campaign_end"),
        ({"bank_holiday": date(2027, 1, 1)}, "bank_holiday 2027-01-01 is outside"),
        ({"bank_holiday": datetime(2026, 2, 16, tzinfo=UTC)}, "must be a date"),
        ({"fraud_shift_start": datetime(2026, 6, 1, tzinfo=UTC)}, "fraud_shift_start"),
        ({"n_rows": 10}, "n_rows=10 is out of range"),
        ({"n_rows": 1e6}, "must be an int"),
        ({"base_fraud_rate": 0.5}, "base_fraud_rate"),
    ],
)
def test_invalid_scenarios_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Scenario(**changes)  # type: ignore[arg-type]


def test_generate_refuses_bad_overrides() -> None:
    with pytest.raises(InvalidInputError, match="n_rows"):
        generate(n_rows=5)
    with pytest.raises(InvalidInputError, match=r"keel\.demo\.Scenario"):
        generate("default")  # type: ignore[arg-type]


def test_importing_keel_demo_loads_neither_numpy_nor_pandas() -> None:
    code = "import sys, keel.demo; print('numpy' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
