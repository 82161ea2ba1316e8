"""Always-valid sequential A/B test: the mixture sequential probability ratio test (mSPRT).

A fixed-horizon p-value is valid only if it is looked at once, at the planned sample size;
checking it after every batch and stopping at the first "significant" one inflates the false
positive rate several times over. The mSPRT (Johari, Pekelis and Walsh, "Always valid
inference", 2017) replaces it with a p-value that stays valid at any stopping time, however
often it is looked at, and a confidence sequence that covers the true effect at all times with
probability ``1 - alpha``.

The effect estimate ``d`` (treatment minus control) with variance ``s2`` is compared with a
normal mixture of alternatives ``N(0, tau**2)``; the likelihood ratio of the mixture against
"no effect" is

    L = sqrt(s2 / (s2 + tau2)) * exp(tau2 * d**2 / (2 * s2 * (s2 + tau2)))

and the always-valid p-value is the running minimum of ``1 / L``. ``tau`` is the scale of the
effects the test is tuned for: the minimum detectable effect of the plan is a good choice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from keel.deploy.stats import check_alpha
from keel.errors import InvalidInputError


@dataclass(frozen=True)
class SequentialEstimate:
    """The state of a sequential test after ``looks`` looks.

    ``p_value`` is always valid (stopping as soon as it drops below ``alpha`` keeps the false
    positive rate at most ``alpha``) and never increases; ``[ci_low, ci_high]`` is the running
    intersection of the confidence sequence, so it only shrinks.
    """

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    looks: int
    alpha: float
    tau: float


def msprt_look(
    difference: float, variance: float, *, tau: float, alpha: float
) -> tuple[float, float]:
    """``(1 / likelihood ratio, confidence-sequence radius)`` at one look.

    Example:
        >>> p, radius = msprt_look(0.02, 0.0001, tau=0.02, alpha=0.05)
        >>> round(p, 4), round(radius, 4)
        (0.4515, 0.0308)
    """
    tau2 = tau * tau
    if not (math.isfinite(variance) and variance > 0 and math.isfinite(tau2) and tau2 > 0):
        raise InvalidInputError(
            f"variance={variance!r} must be positive and tau={tau!r} positive with a finite, "
            "non-zero square"
        )
    total = variance + tau2
    # Logarithms taken apart and z**2 formed first, so tiny variances neither underflow nor
    # divide by zero.
    log_shrink = math.log(total) - math.log(variance)
    z2 = difference * difference / variance
    log_ratio = z2 * (tau2 / total) / 2 - log_shrink / 2
    p_value = math.exp(-log_ratio) if log_ratio > 0 else 1.0
    # The set of effects t with likelihood ratio (centred at t) below 1/alpha.
    radius = math.sqrt(2 * variance * (total / tau2) * (math.log(1 / alpha) + log_shrink / 2))
    return min(1.0, p_value), radius


class SequentialTest:
    """An mSPRT that may be updated after every batch of observations.

    Each update takes the cumulative data so far (not just the new batch). The result is
    valid whenever you stop, so it is safe to watch it continuously and stop early.

    Example:
        >>> test = SequentialTest(tau=0.02)
        >>> first = test.update_proportions(100, 1000, 120, 1000)
        >>> later = test.update_proportions(1000, 10000, 1200, 10000)
        >>> later.p_value <= first.p_value, later.significant
        (True, True)
    """

    def __init__(self, *, tau: float, alpha: float = 0.05) -> None:
        check_alpha(alpha)
        if not (isinstance(tau, int | float) and tau > 0 and 0 < tau * tau < math.inf):
            raise InvalidInputError(
                f"tau={tau!r} must be a positive effect scale, e.g. the plan's minimum "
                "detectable effect in absolute units"
            )
        self.tau = float(tau)
        self.alpha = float(alpha)
        self._p_value = 1.0
        self._low = -math.inf
        self._high = math.inf
        self._difference = 0.0
        self._looks = 0

    def update(self, difference: float, variance: float) -> SequentialEstimate:
        """Look at the cumulative effect estimate ``difference`` whose variance is ``variance``.

        A zero variance (e.g. no conversions yet in either arm) carries no information: the
        look is counted and nothing else changes.
        """
        if not (math.isfinite(difference) and math.isfinite(variance) and variance >= 0):
            raise InvalidInputError(
                f"difference={difference!r} and variance={variance!r} must be finite, "
                "with a non-negative variance"
            )
        self._looks += 1
        self._difference = float(difference)
        if variance > 0:
            p_value, radius = msprt_look(difference, variance, tau=self.tau, alpha=self.alpha)
            self._p_value = min(self._p_value, p_value)
            self._low = max(self._low, difference - radius)
            self._high = min(self._high, difference + radius)
        return self.estimate

    def update_proportions(
        self, successes_a: int, n_a: int, successes_b: int, n_b: int
    ) -> SequentialEstimate:
        """Look at cumulative conversion counts of the control (a) and the treatment (b)."""
        for arm, successes, n in (("a", successes_a, n_a), ("b", successes_b, n_b)):
            if not (isinstance(n, int | np.integer) and n > 0 and 0 <= successes <= n):
                raise InvalidInputError(
                    f"arm {arm}: successes={successes!r}, n={n!r} need 0 <= successes <= n, n > 0"
                )
        p_a, p_b = successes_a / n_a, successes_b / n_b
        variance = p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
        return self.update(p_b - p_a, variance)

    def update_means(
        self, values_a: Iterable[float], values_b: Iterable[float]
    ) -> SequentialEstimate:
        """Look at all values of a continuous metric observed so far in each arm."""
        a = np.asarray(list(values_a), dtype=np.float64)
        b = np.asarray(list(values_b), dtype=np.float64)
        if a.size < 2 or b.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise InvalidInputError(
                f"need at least 2 finite values per arm, got {a.size} and {b.size}"
            )
        variance = float(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        return self.update(float(b.mean() - a.mean()), variance)

    @property
    def estimate(self) -> SequentialEstimate:
        """The result after the latest look."""
        return SequentialEstimate(
            difference=self._difference,
            ci_low=self._low,
            ci_high=self._high,
            p_value=self._p_value,
            significant=self._p_value < self.alpha,
            looks=self._looks,
            alpha=self.alpha,
            tau=self.tau,
        )
