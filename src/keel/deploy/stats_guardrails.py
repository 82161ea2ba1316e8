"""Guardrail metrics: limits on how much worse an A/B treatment may be than its control."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from keel.errors import InvalidInputError


@dataclass(frozen=True)
class Guardrail:
    """How much worse the treatment may be than the control on one metric.

    Increases and decreases are of ``treatment - control``; relative ones are divided by the
    control value. Set only the bounds that matter, e.g. ``Guardrail(max_increase=0.01)`` for
    an error rate or ``Guardrail(max_relative_decrease=0.02)`` for revenue.
    """

    max_increase: float | None = None
    max_relative_increase: float | None = None
    max_decrease: float | None = None
    max_relative_decrease: float | None = None


class GuardrailResult(NamedTuple):
    """One guardrail verdict; unpacks as ``(metric, ok, detail)``."""

    metric: str
    ok: bool
    detail: str


def _guardrail(metric: str, a: float, b: float, limit: Guardrail) -> GuardrailResult:
    change = b - a
    relative = (
        change / abs(a) if a != 0 else (0.0 if change == 0 else math.copysign(math.inf, change))
    )
    bounds = [
        (limit.max_increase, change, "increase"),
        (limit.max_relative_increase, relative, "relative increase"),
        (limit.max_decrease, -change, "decrease"),
        (limit.max_relative_decrease, -relative, "relative decrease"),
    ]
    for bound, value, what in bounds:
        if bound is not None and value > bound:
            return GuardrailResult(
                metric,
                False,
                f"{metric}: {what} {value:.6g} exceeds {bound:.6g} ({a:.6g} -> {b:.6g})",
            )
    return GuardrailResult(metric, True, f"{metric}: {a:.6g} -> {b:.6g} within limits")


def check_guardrails(
    metrics_a: Mapping[str, float],
    metrics_b: Mapping[str, float],
    limits: Mapping[str, Guardrail],
) -> list[GuardrailResult]:
    """Compare the treatment's metrics (``metrics_b``) with the control's on every guardrail.

    A metric missing from either side, or not a finite number, fails: a guardrail that
    cannot be evaluated must not pass silently.

    Example:
        >>> check_guardrails({"error_rate": 0.010}, {"error_rate": 0.030},
        ...                  {"error_rate": Guardrail(max_increase=0.01)})[0].ok
        False
    """
    results = []
    for metric in sorted(limits):
        limit = limits[metric]
        if not isinstance(limit, Guardrail):
            raise InvalidInputError(
                f"guardrail {metric!r}: {limit!r} is not a Guardrail; "
                "use e.g. Guardrail(max_increase=0.01)"
            )
        a, b = metrics_a.get(metric), metrics_b.get(metric)
        if a is None or b is None:
            side = "control" if a is None else "treatment"
            results.append(GuardrailResult(metric, False, f"{metric}: no {side} value"))
        elif not (math.isfinite(a) and math.isfinite(b)):
            results.append(GuardrailResult(metric, False, f"{metric}: not finite ({a}, {b})"))
        else:
            results.append(_guardrail(metric, float(a), float(b), limit))
    return results
