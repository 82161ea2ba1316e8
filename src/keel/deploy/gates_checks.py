"""The individual canary gates: each compares one variant's rows with the other's.

Every gate returns a ``GateResult``; one that lacks the data to judge says ``"waiting"`` and
what is missing, so a ramp never passes on too little evidence and never stalls silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from keel.deploy.gates_metrics import (
    auc,
    ks_test,
    log_loss,
    psi,
    psi_categorical,
    rmse,
    standard_error,
)
from keel.errors import InvalidInputError

if TYPE_CHECKING:
    from keel.deploy.gates import GateConfig

GateStatus = Literal["pass", "fail", "waiting"]
Array = np.ndarray[Any, np.dtype[Any]]


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: ``value`` compared with ``threshold``, explained in ``detail``.

    Example:
        >>> GateResult("latency_p99", "pass", 1.02, 1.5, "p99 ratio 1.02").status
        'pass'
    """

    name: str
    status: GateStatus
    value: float | None
    threshold: float
    detail: str


@dataclass(frozen=True)
class Variant:
    """The rows of one variant as arrays (status 0 stands for a missing status)."""

    name: str
    status: Array
    latency: Array
    prediction: Array
    ok: Array
    prediction_text: list[str | None]
    label: Array | None
    label_present: Array

    @property
    def rows(self) -> int:
        return int(self.status.size)

    @property
    def errors(self) -> int:
        return int(np.count_nonzero(~self.ok))

    @property
    def usable_labels(self) -> Array:
        """Mask of successful rows with a numeric prediction and a numeric label."""
        if self.label is None:
            return np.zeros(self.rows, dtype=bool)
        return self.ok & np.isfinite(self.prediction) & np.isfinite(self.label)

    @property
    def labelled(self) -> int:
        return int(np.count_nonzero(self.ok & self.label_present))


def _shortfall(variants: tuple[Variant, ...], have: list[int], need: int, what: str) -> str:
    parts = [
        f"{v.name} needs {need - n} more {what} ({n} of {need})"
        for v, n in zip(variants, have, strict=True)
        if n < need
    ]
    return "; ".join(parts)


def _reached(primary: Variant, canary: Variant, config: GateConfig) -> bool:
    return primary.rows >= config.min_sample and canary.rows >= config.min_sample


def _judge(
    name: str, value: float, limit: float, z: float, config: GateConfig, detail: str
) -> GateResult:
    # A canary fails only when it is worse beyond the limit AND the worsening is significant
    # (one-sided z-test at config.alpha), so noise in a small sample neither rolls back a good
    # canary nor lets a bad-looking one pass: it waits for more data instead.
    if value <= limit:
        return GateResult(name, "pass", value, limit, detail)
    if z >= NormalDist().inv_cdf(1.0 - config.alpha):
        return GateResult(name, "fail", value, limit, detail)
    note = f"worse than the limit but not yet significant (z {z:.2f}, alpha {config.alpha:g})"
    return GateResult(name, "waiting", value, limit, f"{note}: {detail}")


def _z(difference: float, standard_error: float) -> float:
    if standard_error > 0:
        return difference / standard_error
    return math.inf if difference > 0 else 0.0


def sample_gate(primary: Variant, canary: Variant, config: GateConfig) -> GateResult:
    """Each variant has at least ``min_sample`` rows in the analysed window."""
    need = config.min_sample
    value = float(min(primary.rows, canary.rows))
    if _reached(primary, canary, config):
        detail = f"{primary.name} {primary.rows} rows, {canary.name} {canary.rows} rows"
        return GateResult("sample", "pass", value, need, detail + f" (need {need} each)")
    detail = _shortfall((primary, canary), [primary.rows, canary.rows], need, "rows")
    return GateResult("sample", "waiting", value, need, detail)


def error_rate_gate(primary: Variant, canary: Variant, config: GateConfig) -> GateResult:
    """Canary error rate minus primary error rate is at most ``max_error_rate_increase``."""
    limit = config.max_error_rate_increase
    if canary.rows == 0 or primary.rows == 0:
        return GateResult("error_rate", "waiting", None, limit, "no rows to compare yet")
    rate_p = primary.errors / primary.rows
    rate_c = canary.errors / canary.rows
    value = rate_c - rate_p
    detail = (
        f"{canary.name} {rate_c:.2%} ({canary.errors}/{canary.rows}) vs "
        f"{primary.name} {rate_p:.2%} ({primary.errors}/{primary.rows}), "
        f"allowed increase {limit:.2%}"
    )
    spread = rate_p * (1 - rate_p) / primary.rows + rate_c * (1 - rate_c) / canary.rows
    z = _z(value, math.sqrt(spread))
    if _reached(primary, canary, config):
        return _judge("error_rate", value, limit, z, config, detail)
    # Before the sample is reached, fail only when the canary cannot recover: even if all its
    # remaining rows up to min_sample succeed, its error rate would still be over the limit.
    best_case = canary.errors / max(config.min_sample, canary.rows)
    significant = z >= NormalDist().inv_cdf(1.0 - config.alpha)
    if primary.rows >= config.min_sample and best_case - rate_p > limit and significant:
        detail += (
            f"; even with no more errors it would be {best_case:.2%} at {config.min_sample} rows"
        )
        return GateResult("error_rate", "fail", value, limit, detail)
    return GateResult("error_rate", "waiting", value, limit, "sample not reached: " + detail)


def latency_gate(primary: Variant, canary: Variant, config: GateConfig) -> GateResult:
    """Canary p99 latency over primary p99 latency is at most ``max_p99_latency_ratio``."""
    limit = config.max_p99_latency_ratio
    lat_p = primary.latency[np.isfinite(primary.latency)]
    lat_c = canary.latency[np.isfinite(canary.latency)]
    if lat_p.size == 0 or lat_c.size == 0:
        return GateResult("latency_p99", "waiting", None, limit, "no latencies to compare yet")
    p99_p = float(np.percentile(lat_p, 99))
    p99_c = float(np.percentile(lat_c, 99))
    # A 1 us floor keeps the ratio finite when a primary answers in "0" microseconds.
    value = p99_c / max(p99_p, 1.0)
    detail = (
        f"p99 {canary.name} {p99_c / 1000:.2f} ms vs {primary.name} {p99_p / 1000:.2f} ms "
        f"(ratio {value:.2f}, limit {limit:.2f})"
    )
    if not _reached(primary, canary, config):
        return GateResult("latency_p99", "waiting", value, limit, "sample not reached: " + detail)
    return GateResult("latency_p99", "pass" if value <= limit else "fail", value, limit, detail)


def distribution_gate(primary: Variant, canary: Variant, config: GateConfig) -> GateResult:
    """The canary's predictions are distributed like the primary's (PSI or KS test)."""
    use_ks = config.distribution_test == "ks"
    limit = config.min_ks_p_value if use_ks else config.max_psi
    name = "prediction_distribution"
    num_p = primary.prediction[primary.ok & np.isfinite(primary.prediction)]
    num_c = canary.prediction[canary.ok & np.isfinite(canary.prediction)]
    if num_p.size and num_c.size:
        if use_ks:
            statistic, value = ks_test(num_p, num_c)
            detail = f"KS statistic {statistic:.3f}, p-value {value:.2g} (fail below {limit:g})"
            failed = value < limit
        else:
            value = psi(num_p, num_c, bins=config.psi_bins)
            detail = f"PSI {value:.3f} (limit {limit:g})"
            failed = value > limit
        compared = num_c.size
    else:
        # Outputs without a single number (class names, lists) are compared as categories.
        text_p = _texts(primary)
        text_c = _texts(canary)
        if not text_p or not text_c:
            return GateResult(name, "waiting", None, limit, "no successful predictions to compare")
        value = psi_categorical(text_p, text_c)
        limit = config.max_psi
        detail = f"PSI over output categories {value:.3f} (limit {limit:g})"
        failed = value > limit
        compared = len(text_c)
    detail += f" on {compared} {canary.name} predictions"
    if not _reached(primary, canary, config):
        return GateResult(name, "waiting", value, limit, "sample not reached: " + detail)
    return GateResult(name, "fail" if failed else "pass", value, limit, detail)


def _texts(variant: Variant) -> list[str]:
    if not variant.prediction_text:
        return []
    return [
        text
        for text, ok in zip(variant.prediction_text, variant.ok.tolist(), strict=True)
        if ok and text is not None
    ]


def performance_gate(primary: Variant, canary: Variant, config: GateConfig) -> GateResult:
    """Once labels arrive, the canary's quality is not worse than the primary's by too much."""
    limit = config.max_performance_drop
    if primary.label is None and (primary.labelled or canary.labelled):
        return GateResult(
            "performance",
            "waiting",
            None,
            limit,
            "labels are text; attach numeric labels (0/1 or numbers) or set "
            "GateConfig(performance_metric='off')",
        )
    mask_p, mask_c = primary.usable_labels, canary.usable_labels
    have = [int(mask_p.sum()), int(mask_c.sum())]
    need = config.min_labels
    if min(have) < need:
        detail = _shortfall((primary, canary), have, need, "labels")
        return GateResult("performance", "waiting", None, limit, detail)
    if primary.label is None or canary.label is None:  # unreachable: labels were counted
        return GateResult("performance", "waiting", None, limit, "no numeric labels")
    y_p, s_p = primary.label[mask_p], primary.prediction[mask_p]
    y_c, s_c = canary.label[mask_c], canary.prediction[mask_c]
    try:
        metric = _pick_metric(config, y_p, s_p, y_c, s_c)
        functions = {"auc": auc, "log_loss": log_loss, "rmse": rmse}
        score_p = functions[metric](y_p, s_p)
        score_c = functions[metric](y_c, s_c)
    except InvalidInputError as exc:
        return GateResult("performance", "waiting", None, limit, f"cannot score yet: {exc}")
    # Worsening, positive when the canary is worse whatever the metric's direction; the gate
    # compares it relative to the primary's score.
    worse = score_p - score_c if metric == "auc" else score_c - score_p
    value = worse / max(score_p, 1e-12)
    spread = math.hypot(
        standard_error(metric, y_p, s_p, score_p), standard_error(metric, y_c, s_c, score_c)
    )
    detail = (
        f"{metric} {canary.name} {score_c:.4f} vs {primary.name} {score_p:.4f} on "
        f"{have[1]}/{have[0]} labels: {value:+.1%} worse (limit {limit:.1%})"
    )
    return _judge("performance", value, limit, _z(worse, spread), config, detail)


def _pick_metric(config: GateConfig, y_p: Array, s_p: Array, y_c: Array, s_c: Array) -> str:
    if config.performance_metric != "auto":
        return config.performance_metric
    labels = np.concatenate([y_p, y_c])
    if not np.all((labels == 0.0) | (labels == 1.0)):
        return "rmse"
    both_classes = all(0 < y.sum() < y.size for y in (y_p, y_c))
    if both_classes:
        return "auc"
    scores = np.concatenate([s_p, s_c])
    if np.all((scores >= 0.0) & (scores <= 1.0)):
        # One class only in a variant leaves AUC undefined; probabilities can still be scored.
        return "log_loss"
    raise InvalidInputError(
        "the labels of one variant hold a single class and predictions are not probabilities; "
        "wait for labels of both classes"
    )
