"""Fixed-horizon statistics for A/B tests: sample size, effect tests, sample-ratio mismatch.

Arm ``a`` is the control and arm ``b`` the treatment throughout: a difference is ``b - a``.
The always-valid sequential test lives in :mod:`keel.deploy.stats_sequential`, guardrails in
:mod:`keel.deploy.stats_guardrails` and the analysis of a prediction log in
:mod:`keel.deploy.stats_ab`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from keel.errors import InvalidInputError

_NORMAL = NormalDist()

#: A sample-ratio mismatch is flagged below this p-value: strict, because an SRM check runs on
#: every analysis and a false alarm stops a healthy experiment.
SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class EffectEstimate:
    """The effect of the treatment (arm b) over the control (arm a).

    ``difference`` is ``treatment_mean - control_mean`` with its ``1 - alpha`` confidence
    interval ``[ci_low, ci_high]``; ``relative_lift`` is ``difference / control_mean`` (None when
    the control mean is 0). ``significant`` is ``p_value < alpha``.
    """

    control_mean: float
    treatment_mean: float
    difference: float
    relative_lift: float | None
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    alpha: float
    method: str


def check_alpha(alpha: float, name: str = "alpha") -> None:
    """Raise InvalidInputError unless ``0 < alpha < 1``."""
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise InvalidInputError(f"{name}={alpha!r} must be a probability in (0, 1), e.g. 0.05")


def sample_size(
    baseline: float,
    mde: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    two_sided: bool = True,
    std: float | None = None,
) -> int:
    """Units needed per arm to detect an effect of ``mde`` with probability ``power``.

    Without ``std`` the metric is a conversion rate: ``baseline`` is the control rate and the
    normal-approximation two-proportion formula is used (variance pooled under the null, as in
    R's ``power.prop.test``). With ``std`` the metric is continuous: ``baseline`` is the control
    mean and each arm has standard deviation ``std``. ``mde`` is relative to ``baseline`` when
    ``relative`` (0.1 = +10 %), else absolute.

    Example:
        >>> sample_size(0.5, 0.25, relative=False, power=0.9)
        77
        >>> sample_size(0.0, 0.5, relative=False, std=1.0)
        63
    """
    check_alpha(alpha)
    check_alpha(power, "power")
    if not math.isfinite(mde) or mde == 0:
        raise InvalidInputError(f"mde={mde!r} must be a non-zero finite effect, e.g. 0.05")
    if relative and baseline == 0:
        raise InvalidInputError("a relative mde needs a non-zero baseline; pass relative=False")
    delta = baseline * mde if relative else mde
    z_alpha = _NORMAL.inv_cdf(1 - alpha / 2 if two_sided else 1 - alpha)
    z_power = _NORMAL.inv_cdf(power)
    if std is not None:
        if not (math.isfinite(std) and std > 0):
            raise InvalidInputError(f"std={std!r} must be a positive standard deviation")
        return math.ceil(2 * (std * (z_alpha + z_power) / delta) ** 2)
    p1, p2 = baseline, baseline + delta
    if not (0 < p1 < 1 and 0 < p2 < 1):
        raise InvalidInputError(
            f"conversion rates baseline={p1!r} and baseline+effect={p2!r} must lie in (0, 1); "
            "pass std=... for a continuous metric"
        )
    pooled = (p1 + p2) / 2
    root = z_alpha * math.sqrt(2 * pooled * (1 - pooled)) + z_power * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return math.ceil((root / delta) ** 2)


def _estimate(
    mean_a: float, mean_b: float, se: float, alpha: float, method: str, df: float | None = None
) -> EffectEstimate:
    difference = mean_b - mean_a
    if se > 0:
        statistic = abs(difference) / se
        if df is None:
            p_value = 2 * (1 - _NORMAL.cdf(statistic))
            critical = _NORMAL.inv_cdf(1 - alpha / 2)
        else:
            from scipy import stats as sps  # imported here: scipy is slow to import

            p_value = float(2 * sps.t.sf(statistic, df))
            critical = float(sps.t.ppf(1 - alpha / 2, df))
    else:
        # No variation in either arm: the observed difference is exact.
        p_value, critical = (1.0 if difference == 0 else 0.0), 0.0
    p_value = min(1.0, max(0.0, p_value))
    return EffectEstimate(
        control_mean=mean_a,
        treatment_mean=mean_b,
        difference=difference,
        relative_lift=difference / mean_a if mean_a != 0 else None,
        ci_low=difference - critical * se,
        ci_high=difference + critical * se,
        p_value=p_value,
        significant=p_value < alpha,
        alpha=alpha,
        method=method,
    )


def _check_counts(successes: int, n: int, arm: str) -> None:
    if isinstance(successes, bool) or isinstance(n, bool):
        raise InvalidInputError(f"arm {arm}: counts must be integers, not booleans")
    if not (isinstance(n, int | np.integer) and n > 0):
        raise InvalidInputError(f"arm {arm}: n={n!r} must be a positive integer")
    if not (isinstance(successes, int | np.integer) and 0 <= successes <= n):
        raise InvalidInputError(
            f"arm {arm}: successes={successes!r} must be an integer in [0, {n}]"
        )


def proportion_test(
    successes_a: int, n_a: int, successes_b: int, n_b: int, *, alpha: float = 0.05
) -> EffectEstimate:
    """Two-sided z-test of two conversion rates (fixed horizon: look once, at the planned n).

    The standard error is the unpooled one, the same for the test and the Wald interval, so
    the interval excludes 0 exactly when the result is significant.

    Example:
        >>> est = proportion_test(500, 5000, 600, 5000)
        >>> round(est.difference, 3), est.significant
        (0.02, True)
    """
    check_alpha(alpha)
    _check_counts(successes_a, n_a, "a")
    _check_counts(successes_b, n_b, "b")
    p_a, p_b = successes_a / n_a, successes_b / n_b
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return _estimate(p_a, p_b, se, alpha, "z-test")


def _as_values(values: Iterable[float], arm: str) -> np.ndarray:
    try:
        array = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"arm {arm}: values must be numbers ({exc})") from exc
    if array.ndim != 1 or array.size < 2:
        raise InvalidInputError(f"arm {arm}: need at least 2 values, got {array.size}")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"arm {arm}: values contain NaN or infinity; drop them first")
    return array


def mean_test(
    values_a: Iterable[float], values_b: Iterable[float], *, alpha: float = 0.05
) -> EffectEstimate:
    """Welch's t-test of two means (unequal variances), with its confidence interval.

    Example:
        >>> est = mean_test([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0])
        >>> est.difference, est.significant
        (2.0, False)
    """
    check_alpha(alpha)
    a, b = _as_values(values_a, "a"), _as_values(values_b, "b")
    var_a, var_b = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(var_a + var_b)
    df = None
    if se > 0:
        # Welch–Satterthwaite degrees of freedom.
        df = (var_a + var_b) ** 2 / (var_a**2 / (a.size - 1) + var_b**2 / (b.size - 1))
    return _estimate(float(a.mean()), float(b.mean()), se, alpha, "welch", df if se > 0 else None)


@dataclass(frozen=True)
class SRMResult:
    """Chi-square goodness-of-fit of the observed arm sizes to the planned split."""

    chi2: float
    p_value: float
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]


def srm_check(
    observed: Mapping[str, int],
    expected_weights: Mapping[str, float],
    *,
    threshold: float = SRM_THRESHOLD,
) -> SRMResult:
    """Sample-ratio mismatch check: do the arm sizes fit the planned weights?

    A mismatch (p < ``threshold``) means assignment or logging is broken, and no effect
    estimate from the experiment can be trusted. Weights need not sum to 1.

    Example:
        >>> srm_check({"control": 4500, "treatment": 5500}, {"control": 1, "treatment": 1}).mismatch
        True
    """
    check_alpha(threshold, "threshold")
    if set(observed) != set(expected_weights) or len(observed) < 2:
        raise InvalidInputError(
            f"observed arms {sorted(observed)} and weighted arms {sorted(expected_weights)} "
            "must be the same two or more arms"
        )
    for arm, count in observed.items():
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise InvalidInputError(f"arm {arm!r}: count {count!r} must be a non-negative int")
    for arm, weight in expected_weights.items():
        if not (math.isfinite(weight) and weight > 0):
            raise InvalidInputError(f"arm {arm!r}: weight {weight!r} must be positive")
    arms = sorted(observed)
    total = sum(int(observed[arm]) for arm in arms)
    if total == 0:
        raise InvalidInputError("no units observed in any arm; the SRM check needs data")
    weight_sum = sum(expected_weights[arm] for arm in arms)
    expected = {arm: total * expected_weights[arm] / weight_sum for arm in arms}
    chi2 = sum((observed[arm] - expected[arm]) ** 2 / expected[arm] for arm in arms)
    from scipy import stats as sps  # imported here: scipy is slow to import

    p_value = float(sps.chi2.sf(chi2, len(arms) - 1))
    return SRMResult(
        chi2=float(chi2),
        p_value=p_value,
        mismatch=p_value < threshold,
        observed={arm: int(observed[arm]) for arm in arms},
        expected=expected,
    )
