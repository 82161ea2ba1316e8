"""The vectorized engine of the demo data: populations, calendar and legitimate rows.

Private to keel.demo; ``keel.demo.data`` labels the rows and turns them into tables. Arrays are
indexed by position: users in signup order, merchants grouped by (category, country).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.demo import scenario as sc
from keel.demo.scenario import Scenario

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Arr = NDArray[Any]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MERCHANT_ID_BASE = 1_000_000_000  # merchant ids never collide with user ids


def _draw(rng: np.random.Generator, population: Arr, mixes: Any) -> Arr:
    """One category code per element, drawn from the mix of the element's population."""
    import numpy as np

    out = np.zeros(len(population), dtype=np.int64)
    for pop, mix in enumerate(mixes):
        where = np.flatnonzero(population == pop)
        p = np.asarray(mix, dtype=float)
        out[where] = rng.choice(len(p), size=len(where), p=p / p.sum())
    return out


def _pick(rng: np.random.Generator, weights: Arr) -> Arr:
    """One column index per row of ``weights`` (n, k), with probability proportional to weight."""
    cdf = weights.cumsum(axis=1)
    r = rng.random(len(weights)) * cdf[:, -1]
    picked: Arr = (r[:, None] >= cdf).sum(axis=1).clip(0, weights.shape[1] - 1)
    return picked


def _pick_table(rng: np.random.Generator, table: Arr, group: Arr) -> Arr:
    """One column index per row, drawn from row ``group`` of a (g, k) table of positive weights."""
    import numpy as np

    cdf = table.cumsum(axis=1) / table.sum(axis=1, keepdims=True)
    flat = (cdf + np.arange(len(table))[:, None]).ravel()
    hit = np.searchsorted(flat, group + rng.random(len(group)), side="right")
    picked: Arr = (hit - group * table.shape[1]).clip(0, table.shape[1] - 1)
    return picked


def offset_ms(s: Scenario, moment: Any) -> int:
    """Milliseconds from the scenario start to an aware datetime."""
    return int((moment - s.start).total_seconds() * 1000)


def make_users(s: Scenario, rng: np.random.Generator) -> dict[str, Arr]:
    """Existing, organic and campaign users with their hidden habits, sorted by signup time."""
    import numpy as np

    n_old = max(250, s.n_rows // sc.ROWS_PER_USER)
    n_org = round(n_old * sc.ORGANIC_GROWTH)
    n_camp = round(n_old * s.campaign_user_share)
    c0, c1 = offset_ms(s, s.campaign_start), offset_ms(s, s.campaign_end)
    signup = np.concatenate(
        [
            -rng.integers(1, 4 * 365 * DAY_MS, n_old),
            rng.integers(0, s.days * DAY_MS, n_org),
            rng.integers(c0, c1, n_camp),
        ]
    )
    source = np.concatenate([rng.choice(2, n_old + n_org, p=(0.8, 0.2)), np.full(n_camp, 2)])
    order = np.argsort(signup, kind="stable")
    signup, source = signup[order], source[order]
    pop = (source == 2).astype(np.int64)
    segment = _draw(rng, pop, sc.SEGMENT_MIX)
    pref = rng.gamma(8.0 * np.asarray(sc.CATEGORY_MIX)[pop])
    pref /= pref.sum(axis=1, keepdims=True)
    rate = rng.lognormal(0.0, 0.9, len(pop)) * np.where(pop == 1, sc.CAMPAIGN_ACTIVITY, 1.0)
    scale = (
        rng.lognormal(0.0, 0.45, len(pop))
        * np.asarray(sc.SEGMENT_AMOUNT)[segment]
        * np.where(pop == 1, sc.CAMPAIGN_AMOUNT, 1.0)
    )
    return {
        "signup_ms": signup,
        "signup_day": np.floor_divide(signup, DAY_MS),
        "source": source,
        "campaign": pop,
        "country": _draw(rng, pop, sc.HOME_COUNTRY_MIX),
        "segment": segment,
        "age": _draw(rng, pop, sc.AGE_MIX),
        "cw0": np.concatenate([[0.0], np.cumsum(rate)]),
        "scale": scale,
        "pref": pref,
        # The user's usual amount: exp of the mean log amount over their category mix.
        "usual": np.log(scale) + pref @ np.log(sc.CATEGORY_MEDIAN_EUR),
    }


def make_merchants(s: Scenario, rng: np.random.Generator) -> dict[str, Arr]:
    """Merchants sorted by (category, country), with group bounds for fast sampling."""
    import numpy as np

    n_cat, n_country = len(sc.CATEGORIES), len(sc.COUNTRIES)
    n_groups = n_cat * n_country
    n = max(2 * n_groups, s.n_rows // sc.ROWS_PER_MERCHANT)
    # One merchant per (category, country) at least, so every user can shop at home.
    cat = np.concatenate(
        [
            np.repeat(np.arange(n_cat), n_country),
            _draw(rng, np.zeros(n - n_groups), [sc.MERCHANT_CATEGORY_MIX]),
        ]
    )
    country = np.concatenate(
        [
            np.tile(np.arange(n_country), n_cat),
            _draw(rng, np.zeros(n - n_groups), [sc.HOME_COUNTRY_MIX[0]]),
        ]
    )
    order = np.lexsort((country, cat))
    cat, country = cat[order], country[order]
    group = cat * n_country + country
    popularity = rng.lognormal(0.0, 1.2, n)
    return {
        "id": MERCHANT_ID_BASE + 1 + rng.permutation(n),
        "cat": cat,
        "country": country,
        "risk": _pick_table(rng, np.asarray(sc.RISK_TIER_MIX), cat),
        "cw0": np.concatenate([[0.0], np.cumsum(popularity)]),
        "group_lo": np.searchsorted(group, np.arange(n_groups), side="left"),
        "group_hi": np.searchsorted(group, np.arange(n_groups), side="right"),
        "cat_lo": np.searchsorted(cat, np.arange(n_cat), side="left"),
        "cat_hi": np.searchsorted(cat, np.arange(n_cat), side="right"),
    }


def _calendar(s: Scenario) -> tuple[Arr, Arr]:
    """Per day: the day type (0 weekday, 1 weekend, 2 bank holiday) and the volume factor."""
    import numpy as np

    first_dow = s.start.weekday()
    dow = (first_dow + np.arange(s.days)) % 7
    day_type = np.where(dow >= 5, 1, 0)
    holiday = (s.bank_holiday - s.start.date()).days
    day_type[holiday] = 2
    volume = np.asarray(sc.DOW_VOLUME)[dow]
    volume[holiday] *= sc.HOLIDAY_VOLUME
    return day_type, volume


def _hour_table() -> Arr:
    """Hourly weights, shape (2 * categories, 24): weekday rows first, then weekend rows."""
    import numpy as np

    hours = np.arange(24) + 0.5
    rows = []
    for weekend in (False, True):
        for floor, bumps in zip(sc.HOUR_FLOOR, sc.HOUR_BUMPS, strict=True):
            weights = np.full(24, floor)
            for centre, width, height in sc.weekend_hours(bumps) if weekend else bumps:
                gap = np.abs(hours - centre)
                gap = np.minimum(gap, 24 - gap)  # the day wraps around midnight
                weights += height * np.exp(-0.5 * (gap / width) ** 2)
            rows.append(weights)
    return np.asarray(rows)


def draw_rows(
    s: Scenario, rng: np.random.Generator, users: dict[str, Arr], m: dict[str, Arr], n: int
) -> dict[str, Arr]:
    """``n`` legitimate rows (is_fraud still 0), following the calendar and the users' habits."""
    import numpy as np

    day_type, volume = _calendar(s)
    # Users transact from the day after they sign up; users are sorted by signup time.
    eligible = np.searchsorted(users["signup_day"], np.arange(s.days), side="left")
    active = users["cw0"][eligible]
    counts = rng.multinomial(n, active * volume / (active * volume).sum())
    day = np.repeat(np.arange(s.days), counts)
    user = np.searchsorted(users["cw0"], rng.random(n) * active[day], side="right") - 1
    user = user.clip(0, eligible[day] - 1)
    # Shopping trips: some rows follow another row of the same user within the hour.
    is_trip = rng.random(n) < sc.TRIP_SHARE
    trip, lead = np.flatnonzero(is_trip), np.flatnonzero(~is_trip)
    lead = lead[rng.integers(0, len(lead), len(trip))]  # a lead is never itself a follower
    user[trip], day[trip] = user[lead], day[lead]
    kind = day_type[day]
    cat = _pick(rng, users["pref"][user] * np.asarray(sc.CATEGORY_DAY_MULT)[kind])
    hour = _pick_table(rng, _hour_table(), (kind > 0) * len(sc.CATEGORIES) + cat)
    t_ms = day * DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, n)
    t_ms[trip] = t_ms[lead] + rng.integers(2 * 60_000, 55 * 60_000, len(trip))
    t_ms = t_ms.clip(0, s.days * DAY_MS - 1)
    mu = np.log(np.asarray(sc.CATEGORY_MEDIAN_EUR)[cat] * users["scale"][user])
    sigma = np.asarray(sc.CATEGORY_SIGMA)[cat]
    tail = np.where(rng.random(n) < sc.TAIL_SHARE, np.log1p(rng.pareto(1.2, n)), 0.0)
    amount_eur = np.exp(mu + sigma * rng.standard_normal(n) + tail).clip(0.5, 50_000.0)
    online = rng.random(n) < np.asarray(sc.ONLINE_SHARE)[cat]
    tap = (amount_eur <= 50) & (rng.random(n) < np.asarray(sc.CONTACTLESS)[users["campaign"][user]])
    domestic = rng.random(n) < np.asarray(sc.DOMESTIC_SHARE)[cat]
    return {
        "user": user,
        "t_ms": t_ms,
        "cat": cat,
        "z": np.log(amount_eur) - users["usual"][user],  # log of amount / the user's usual
        "amount_eur": amount_eur,
        "channel": np.where(online, 2, np.where(tap, 1, 0)),
        "merchant": pick_merchant(rng, m, cat, np.where(domestic, users["country"][user], -1)),
        "is_fraud": np.zeros(n, dtype=np.int64),
    }


def pick_merchant(rng: np.random.Generator, m: dict[str, Arr], cat: Arr, country: Arr) -> Arr:
    """A merchant of ``cat`` by popularity, in ``country`` unless it is -1 (anywhere)."""
    import numpy as np

    group = cat * len(sc.COUNTRIES) + country.clip(0)
    lo = np.where(country >= 0, m["group_lo"][group], m["cat_lo"][cat])
    hi = np.where(country >= 0, m["group_hi"][group], m["cat_hi"][cat])
    cw0 = m["cw0"]
    x = cw0[lo] + rng.random(len(cat)) * (cw0[hi] - cw0[lo])
    picked: Arr = (np.searchsorted(cw0, x, side="right") - 1).clip(lo, hi - 1)
    return picked
