"""The demo scenario: its true change points and every constant that shapes the data.

The default scenario covers 120 days from Monday 2026-01-05 00:00 UTC to 2026-05-05 (exclusive)
and changes at exactly these moments (UTC midnights; docs/demo-data.md has the measured effects):

* every week — weekday volume ``DOW_VOLUME`` (Friday/Saturday busy, Sunday quiet), a weekend
  category mix ``CATEGORY_DAY_MULT`` (more restaurants/travel/electronics, less fuel) and later,
  smaller weekend mornings (``weekend_hours``). Seasonality, not drift.
* 2026-02-16 (a Monday) — the bank holiday, one day: volume x``HOLIDAY_VOLUME`` (0.6), travel
  x2.2, restaurants x1.6, grocery x0.45, weekend hours.
* 2026-03-02 .. 2026-03-16 (exclusive) — the marketing campaign (data drift): new users, 30 %
  (``campaign_user_share``) of the users existing at the start, sign up uniformly over the window
  and transact from the day after signing up to the end. They are mostly students aged 18-34 in
  FR/ES, spend 40 % less (``CAMPAIGN_AMOUNT``), prefer online/restaurants/electronics, pay
  contactless more often and are 1.3x as active, so from 2026-03-03 on they are a quarter of the
  volume. P(fraud | features) does not change, but their new accounts paying online are riskier
  under the pre-shift profile: the fraud rate rises from 1.0 % to about 1.6 % until the shift.
* 2026-03-30 (a Monday) — the fraud shift (concept drift): fraud moves from ``PRE_SHIFT_FRAUD``
  (card not present) to ``POST_SHIFT_FRAUD`` (skimmed cards used in shops). Legitimate rows are
  drawn exactly as before; only P(fraud | features) changes, back at the 1.0 % base rate.

Before the campaign only the weekly cycle, the holiday and slow organic growth
(``ORGANIC_GROWTH``: 10 % more users over the 120 days) move the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from keel.errors import InvalidInputError

CATEGORIES = ("grocery", "restaurants", "fuel", "electronics", "travel", "online")
CHANNELS = ("card_present", "contactless", "online")
COUNTRIES = ("DE", "FR", "NL", "ES", "IT", "IE", "GB", "US")
CURRENCY = ("EUR", "EUR", "EUR", "EUR", "EUR", "EUR", "GBP", "USD")  # per COUNTRIES
EUR_RATE = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.86, 1.08)  # units of CURRENCY per euro
SEGMENTS = ("student", "standard", "premium", "business")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
RISK_TIERS = ("low", "medium", "high")
SIGNUP_SOURCES = ("organic", "referral", "campaign")

# Population sizes, relative to the number of rows.
ROWS_PER_USER = 40  # users existing at the start = n_rows // 40
ROWS_PER_MERCHANT = 200
ORGANIC_GROWTH = 0.10  # new organic users over the whole period, as a share of existing ones
CAMPAIGN_ACTIVITY = 1.3  # campaign users transact 1.3x as often (welcome cashback)
CAMPAIGN_AMOUNT = 0.6  # ... and spend 40 % less per transaction
TRIP_SHARE = 0.08  # legitimate rows that follow another row of the same user within the hour
BURST_SHARE = 0.15  # share of fraud rows that are follow-ups within 50 minutes of another fraud

# Populations: (existing and organic users, campaign users); mixes follow the tuples above.
HOME_COUNTRY_MIX = (
    (0.28, 0.20, 0.10, 0.10, 0.12, 0.03, 0.12, 0.05),
    (0.05, 0.45, 0.03, 0.35, 0.05, 0.02, 0.03, 0.02),
)
SEGMENT_MIX = ((0.10, 0.60, 0.20, 0.10), (0.55, 0.40, 0.05, 0.0))
AGE_MIX = ((0.08, 0.20, 0.22, 0.20, 0.17, 0.13), (0.50, 0.35, 0.10, 0.03, 0.02, 0.0))
CATEGORY_MIX = (
    (0.34, 0.20, 0.14, 0.06, 0.05, 0.21),
    (0.18, 0.28, 0.04, 0.10, 0.04, 0.36),
)
CONTACTLESS = (0.72, 0.92)  # P(contactless) for in-store payments of at most 50 EUR
SEGMENT_AMOUNT = (0.6, 1.0, 1.6, 1.9)  # spend multiplier per segment

# Amounts: log-normal per category (median EUR, sigma) times the user's scale, plus a Pareto
# tail on TAIL_SHARE of rows; in-store payments over 50 EUR are never contactless.
CATEGORY_MEDIAN_EUR = (32.0, 24.0, 55.0, 140.0, 230.0, 38.0)
CATEGORY_SIGMA = (0.60, 0.55, 0.35, 0.90, 0.80, 0.85)
TAIL_SHARE = 0.03
ONLINE_SHARE = (0.0, 0.0, 0.0, 0.35, 0.70, 1.0)  # P(channel online) per category
DOMESTIC_SHARE = (0.97, 0.92, 0.95, 0.88, 0.45, 0.40)  # P(merchant in the home country)

# Merchants.
MERCHANT_CATEGORY_MIX = (0.25, 0.30, 0.10, 0.10, 0.08, 0.17)
RISK_TIER_MIX = (  # (low, medium, high) per category
    (0.90, 0.08, 0.02),
    (0.85, 0.12, 0.03),
    (0.85, 0.12, 0.03),
    (0.55, 0.28, 0.17),
    (0.70, 0.22, 0.08),
    (0.50, 0.30, 0.20),
)

# Calendar: volume per weekday (Monday first), the holiday factor, category multipliers per
# day type (weekday, weekend, holiday) and hourly profiles as (centre hour, width, weight) bumps.
DOW_VOLUME = (0.95, 0.97, 1.00, 1.03, 1.18, 1.12, 0.72)
HOLIDAY_VOLUME = 0.6
CATEGORY_DAY_MULT = (
    (1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    (1.10, 1.35, 0.75, 1.25, 1.30, 1.10),
    (0.45, 1.60, 0.90, 0.60, 2.20, 1.40),
)
HOUR_FLOOR = (0.02, 0.02, 0.04, 0.01, 0.05, 0.15)  # night activity per category
HOUR_BUMPS = (
    ((8.5, 1.5, 0.5), (12.5, 1.5, 0.7), (18.0, 1.8, 1.0)),
    ((9.0, 1.0, 0.2), (12.8, 1.0, 1.0), (19.8, 1.6, 1.1)),
    ((7.8, 1.2, 1.0), (12.0, 2.0, 0.3), (17.5, 1.5, 0.9)),
    ((13.0, 2.0, 0.8), (17.5, 2.0, 1.0)),
    ((10.0, 3.0, 0.8), (20.0, 3.0, 0.7)),
    ((12.5, 2.0, 0.6), (21.0, 2.5, 1.0)),
)
WEEKEND_MORNING_DELAY = 1.5  # hours: weekend and holiday bumps before noon start later...
WEEKEND_MORNING_WEIGHT = 0.6  # ... and are smaller


def weekend_hours(bumps: tuple[tuple[float, float, float], ...]) -> list[tuple[float, ...]]:
    """The weekend version of a category's hourly bumps (later, smaller mornings)."""
    return [
        (c + WEEKEND_MORNING_DELAY, w, h * WEEKEND_MORNING_WEIGHT) if c < 12 else (c, w, h)
        for c, w, h in bumps
    ]


@dataclass(frozen=True)
class FraudProfile:
    """Terms of the fraud log-odds of a row; the intercept is solved to hit the base rate.

    ``z`` is log(amount / the user's usual amount), the usual amount being the geometric mean
    over the user's own category mix. ``combo`` is added for online payments made at night
    (00:00-05:59 UTC) or from an account younger than 30 days: an interaction that a linear
    model only approximates, as are the two one-sided amount terms.
    """

    channel: tuple[float, float, float]  # per CHANNELS
    category: tuple[float, float, float, float, float, float]  # per CATEGORIES
    afternoon: float  # 15:00-19:59 UTC
    large_amount: float  # per unit of z above 1 (2.7x the usual amount), up to 2 units
    small_amount: float  # per unit of z below -1 (0.37x the usual amount), up to 2 units
    risk: tuple[float, float, float]  # per RISK_TIERS of the merchant
    foreign: float  # merchant country differs from the user's home country
    velocity: float  # per earlier transaction of the user in the last hour, up to 3
    combo: float
    noise: float = 0.5  # standard deviation of unexplained per-row log-odds


# Card not present: online at night or from new accounts, unusually large amounts or tiny
# card-test amounts, a little more at electronics and high-risk merchants.
PRE_SHIFT_FRAUD = FraudProfile(
    channel=(0.0, 0.0, 0.1),
    category=(-0.2, -0.1, -0.2, 0.2, 0.0, 0.0),
    afternoon=0.0,
    large_amount=1.5,
    small_amount=1.2,
    risk=(0.0, 0.2, 0.4),
    foreign=0.1,
    velocity=0.5,
    combo=2.0,
)
# Skimmed cards used in shops: contactless and chip at fuel stations and grocers, small amounts,
# late afternoon, abroad. Night, new accounts and large amounts no longer matter.
POST_SHIFT_FRAUD = FraudProfile(
    channel=(0.4, 0.6, 0.0),
    category=(0.5, 0.2, 1.1, 0.0, -0.3, -0.3),
    afternoon=0.8,
    large_amount=0.0,
    small_amount=1.5,
    risk=(0.0, 0.2, 0.4),
    foreign=0.9,
    velocity=0.5,
    combo=0.0,
)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class Scenario:
    """The true timeline of the demo data; see the module docstring for what changes when.

    ``campaign_end`` is exclusive. All datetimes are aware UTC midnights.

    Example:
        >>> s = Scenario.default()
        >>> s.fraud_shift_start.isoformat()
        '2026-03-30T00:00:00+00:00'
    """

    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    days: int = 120
    bank_holiday: date = date(2026, 2, 16)
    campaign_start: datetime = datetime(2026, 3, 2, tzinfo=UTC)
    campaign_end: datetime = datetime(2026, 3, 16, tzinfo=UTC)
    fraud_shift_start: datetime = datetime(2026, 3, 30, tzinfo=UTC)
    base_fraud_rate: float = 0.01
    seed: int = 7
    n_rows: int = 1_000_000
    campaign_user_share: float = 0.30
    late_fraction: float = 0.01  # rows whose created_timestamp is 1-72 hours after the event

    def __post_init__(self) -> None:
        for name in ("start", "campaign_start", "campaign_end", "fraud_shift_start"):
            _check_midnight(name, getattr(self, name))
        if isinstance(self.bank_holiday, datetime) or not isinstance(self.bank_holiday, date):
            raise InvalidInputError(
                f"Scenario.bank_holiday={self.bank_holiday!r} must be a date, "
                "e.g. date(2026, 2, 16)"
            )
        for name in ("days", "n_rows", "seed"):
            if not isinstance(getattr(self, name), int):
                raise InvalidInputError(f"Scenario.{name}={getattr(self, name)!r} must be an int")
        _check_range("days", self.days, 14, 3660)
        _check_range("n_rows", self.n_rows, 10_000, 500_000_000)
        _check_range("seed", self.seed, 0, 2**63 - 1)
        _check_range("base_fraud_rate", self.base_fraud_rate, 0.001, 0.05)
        _check_range("campaign_user_share", self.campaign_user_share, 0.0, 3.0)
        _check_range("late_fraction", self.late_fraction, 0.0, 0.5)
        inside = (
            ("bank_holiday", _midnight(self.bank_holiday)),
            ("campaign_start", self.campaign_start),
            ("fraud_shift_start", self.fraud_shift_start),
        )
        for name, moment in inside:
            if not self.start < moment < self.end:
                raise InvalidInputError(
                    f"Scenario.{name} {moment.date()} is outside the period "
                    f"{self.start.date()} .. {self.end.date()}; move it inside or change days"
                )
        if not self.campaign_start < self.campaign_end <= self.end:
            raise InvalidInputError(
                f"Scenario.campaign_end {self.campaign_end.date()} must be after campaign_start "
                f"{self.campaign_start.date()} and no later than the end {self.end.date()}"
            )

    @classmethod
    def default(cls) -> Scenario:
        """The documented default scenario (1,000,000 rows, seed 7)."""
        return cls()

    @property
    def end(self) -> datetime:
        """The exclusive end of the period: ``start + days``."""
        return self.start + timedelta(days=self.days)

    def change_points(self) -> dict[str, datetime]:
        """Every true change point as an aware UTC datetime, in time order.

        Example:
            >>> Scenario.default().change_points()["campaign_start"].day
            2
        """
        points = {
            "bank_holiday_start": _midnight(self.bank_holiday),
            "bank_holiday_end": _midnight(self.bank_holiday) + timedelta(days=1),
            "campaign_start": self.campaign_start,
            "campaign_end": self.campaign_end,
            "fraud_shift_start": self.fraud_shift_start,
        }
        return dict(sorted(points.items(), key=lambda item: item[1]))


def _check_midnight(name: str, value: datetime) -> None:
    if (
        not isinstance(value, datetime)
        or value.utcoffset() != timedelta(0)
        or value.time() != time(0)
    ):
        raise InvalidInputError(
            f"Scenario.{name} {value.isoformat()} must be an aware UTC midnight, "
            f"e.g. datetime(2026, 1, 5, tzinfo=UTC)"
        )


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not low <= value <= high:
        raise InvalidInputError(f"Scenario.{name}={value!r} is out of range; use {low}..{high}")
