"""Analysis of an A/B test from the prediction log: per-arm summaries, effects and SRM check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.deploy.stats import (
    EffectEstimate,
    SRMResult,
    check_alpha,
    mean_test,
    proportion_test,
    srm_check,
)
from keel.deploy.stats_sequential import SequentialTest
from keel.errors import InvalidInputError

#: Without an explicit ``tau`` the sequential test is tuned for effects of this many standard
#: deviations of the metric: small enough for the effects online experiments usually see.
DEFAULT_TAU_STDS = 0.1


@dataclass(frozen=True)
class ArmSummary:
    """One arm: ``assigned`` units (or requests) and the ``n`` of them with a metric value."""

    variant: str
    assigned: int
    n: int
    mean: float
    std: float


@dataclass(frozen=True)
class ABReport:
    """Everything ``analyze_ab`` found; ``effects`` maps each treatment arm to its effect.

    ``unit`` names the column the analysis was made by (None: by row); ``mixed_units``
    counts units seen in more than one arm, left out of the effects.
    """

    metric: str
    kind: str
    control: str
    alpha: float
    sequential: bool
    arms: tuple[ArmSummary, ...]
    effects: dict[str, EffectEstimate]
    srm: SRMResult
    unit: str | None = None
    mixed_units: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (infinite interval ends become None)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            return value

        return dict(clean(asdict(self)))


def _column(table: pa.Table, name: str, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise InvalidInputError(
            f"the table has no {what} column {name!r}; columns are {table.column_names}"
        )
    return table.column(name)


def _metric_values(table: pa.Table, metric: str) -> np.ndarray:
    column = _column(table, metric, "metric")
    kind = column.type
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
        raise InvalidInputError(
            f"metric column {metric!r} has type {kind}; an A/B metric must be numeric or "
            "boolean (attach numeric labels or outcomes as feedback)"
        )
    values: np.ndarray = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return values  # nulls become NaN


def _assigned(table: pa.Table, variants: np.ndarray, arm: str, unit_column: str | None) -> int:
    mask = variants == arm
    if unit_column is None:
        return int(mask.sum())
    units = _column(table, unit_column, "unit").to_numpy(zero_copy_only=False)
    return len({u for u in units[mask] if u is not None})


def per_unit(
    units: np.ndarray, variants: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Rows to units: each unit's arm and the mean of its present values (NaN: none), units
    in order of first appearance (a row without a unit is a unit of its own); also the number
    of units seen in several arms (left out) and whether any unit has more than one value.

    >>> per_unit(np.array(["u", "v", "u"], object), np.array(["a", "b", "a"], object),
    ...          np.array([1.0, 0.0, 0.0]))[1]
    array([0.5, 0. ])
    """
    arm_of: dict[object, object] = {}
    sums: dict[object, float] = {}
    counts: dict[object, int] = {}
    mixed: set[object] = set()
    for i, (unit, variant, value) in enumerate(zip(units, variants, values, strict=True)):
        key = ("row", i) if unit is None else unit
        if arm_of.setdefault(key, variant) != variant:
            mixed.add(key)
        if not math.isnan(value):
            sums[key] = sums.get(key, 0.0) + float(value)
            counts[key] = counts.get(key, 0) + 1
    kept = [key for key in arm_of if key not in mixed]
    unit_variants = np.array([arm_of[key] for key in kept], dtype=object)
    unit_values = np.array(
        [sums[key] / counts[key] if key in counts else math.nan for key in kept], dtype=float
    )
    repeated = any(counts.get(key, 0) > 1 for key in kept)
    return unit_variants, unit_values, len(mixed), repeated


def _sequential(
    values: np.ndarray, is_b: np.ndarray, *, tau: float, alpha: float, looks: int, ddof: int
) -> EffectEstimate:
    """Replay observations in log order through an mSPRT, looking ``looks`` times.

    ``values`` are both arms' metric values in log order; ``is_b`` marks the treatment's.
    Cumulative sums give every look's means and variances without re-scanning the rows;
    ``ddof`` is 0 for a proportion (variance p(1-p), as in the z-test) and 1 for a mean.
    """
    test = SequentialTest(tau=tau, alpha=alpha)
    mean_a, mean_b = float(values[~is_b].mean()), float(values[is_b].mean())
    # Centred first: running sums of squares of large values (latencies in microseconds, say)
    # would lose the variance to cancellation.
    shift = float(values.mean())
    values = values - shift
    n_b = np.cumsum(is_b)
    n_a = np.arange(1, is_b.size + 1) - n_b
    sum_b, sum_a = np.cumsum(np.where(is_b, values, 0.0)), np.cumsum(np.where(is_b, 0.0, values))
    sq_b = np.cumsum(np.where(is_b, values**2, 0.0))
    sq_a = np.cumsum(np.where(is_b, 0.0, values**2))
    stops = np.unique(np.linspace(0, is_b.size, looks + 1)[1:].astype(int) - 1)
    for i in stops:
        if n_a[i] < 2 or n_b[i] < 2:
            continue
        look_a, look_b = sum_a[i] / n_a[i], sum_b[i] / n_b[i]
        var_a = max(0.0, (sq_a[i] - n_a[i] * look_a**2) / (n_a[i] - ddof))
        var_b = max(0.0, (sq_b[i] - n_b[i] * look_b**2) / (n_b[i] - ddof))
        test.update(float(look_b - look_a), float(var_a / n_a[i] + var_b / n_b[i]))
    final = test.estimate
    return EffectEstimate(
        control_mean=mean_a,
        treatment_mean=mean_b,
        difference=mean_b - mean_a,
        relative_lift=(mean_b - mean_a) / mean_a if mean_a != 0 else None,
        ci_low=final.ci_low,
        ci_high=final.ci_high,
        p_value=final.p_value,
        significant=final.significant,
        alpha=alpha,
        method="msprt",
    )


def _compare(
    values: np.ndarray,
    is_b: np.ndarray,
    *,
    names: tuple[str, str, str],
    kind: str,
    alpha: float,
    sequential: bool,
    tau: float | None,
    looks: int,
) -> EffectEstimate:
    """The effect of one treatment arm; ``values`` of both arms in log order."""
    a, b = values[~is_b], values[is_b]
    control, arm, metric = names
    if a.size < 2 or b.size < 2:
        raise InvalidInputError(
            f"arms {control!r} and {arm!r} have {a.size} and {b.size} values of {metric!r}; "
            "each needs at least 2 (wait for more feedback)"
        )
    if sequential:
        if tau is None:
            tau = DEFAULT_TAU_STDS * float(values.std(ddof=1))
            if not tau > 0:
                raise InvalidInputError(f"metric {metric!r} does not vary; pass tau=... explicitly")
        ddof = 0 if kind == "proportion" else 1
        return _sequential(values, is_b, tau=tau, alpha=alpha, looks=looks, ddof=ddof)
    if kind == "proportion":
        return proportion_test(int(a.sum()), int(a.size), int(b.sum()), int(b.size), alpha=alpha)
    return mean_test(a, b, alpha=alpha)


def analyze_ab(
    table: pa.Table,
    *,
    metric: str = "label",
    kind: Literal["proportion", "mean"] = "proportion",
    control: str = "control",
    alpha: float = 0.05,
    sequential: bool = False,
    tau: float | None = None,
    looks: int = 20,
    expected_weights: Mapping[str, float] | None = None,
    variant_column: str = "variant",
    unit_column: str | None = None,
) -> ABReport:
    """Analyze an A/B test from prediction-log rows (``keel.serving.predlog.read_predictions``).

    Each non-control arm is compared with ``control`` on ``metric`` (rows without a value are
    left out): ``kind="proportion"`` for a 0/1 metric (z-test), ``"mean"`` for a continuous one
    (Welch's t). With ``sequential=True`` the rows are replayed in log order through an
    always-valid mSPRT with ``looks`` evenly spaced looks, so the p-value stays valid however
    often the analysis is rerun while the test is live; ``tau`` is the effect scale it is tuned
    for (default: a tenth of the metric's standard deviation; the plan's absolute minimum
    detectable effect is better). The sample-ratio check compares the rows (or distinct
    ``unit_column`` values) per arm with ``expected_weights`` (default: equal).

    With ``unit_column`` the effects are estimated by unit too: the unit — the entity traffic is
    assigned by — is what was randomized, and one unit's many requests are not independent
    observations (treating them as such makes confidence intervals too narrow and false
    positives frequent). Each unit contributes the mean of its metric values, compared with
    Welch's t; units seen in several arms (a changed split) are left out and counted.

    Example:
        >>> t = pa.table({"variant": ["control", "treatment"] * 50, "label": [0.0, 1.0] * 50})
        >>> report = analyze_ab(t)
        >>> report.effects["treatment"].difference, report.srm.mismatch
        (1.0, False)
    """
    check_alpha(alpha)
    if kind not in ("proportion", "mean"):
        raise InvalidInputError(f"kind={kind!r} must be 'proportion' or 'mean'")
    if looks < 1:
        raise InvalidInputError(f"looks={looks!r} must be at least 1")
    variants = _column(table, variant_column, "variant").to_numpy(zero_copy_only=False)
    values = _metric_values(table, metric)
    arms = sorted({v for v in variants if v is not None})
    if control not in arms or len(arms) < 2:
        raise InvalidInputError(
            f"control arm {control!r} and at least one other arm are needed; the log has "
            f"{arms}; pass control=... naming the control variant"
        )
    present = ~np.isnan(values)
    if kind == "proportion" and not np.isin(values[present], (0.0, 1.0)).all():
        raise InvalidInputError(
            f"metric {metric!r} has values other than 0 and 1; use kind='mean' for it"
        )
    weights = expected_weights if expected_weights is not None else dict.fromkeys(arms, 1.0)
    srm = srm_check({arm: _assigned(table, variants, arm, unit_column) for arm in arms}, weights)
    mixed = 0
    if unit_column is not None:
        units = _column(table, unit_column, "unit").to_numpy(zero_copy_only=False)
        variants, values, mixed, repeated = per_unit(units, variants, values)
        if repeated:
            kind = "mean"  # a unit's mean of 0/1 values is a rate, not a 0/1 outcome
        present = ~np.isnan(values)
    per_arm = {arm: values[(variants == arm) & present] for arm in arms}
    summaries = tuple(
        ArmSummary(
            variant=arm,
            assigned=srm.observed[arm],
            n=int(per_arm[arm].size),
            mean=float(per_arm[arm].mean()) if per_arm[arm].size else math.nan,
            std=float(per_arm[arm].std(ddof=1)) if per_arm[arm].size > 1 else math.nan,
        )
        for arm in arms
    )
    effects: dict[str, EffectEstimate] = {}
    for arm in (arm for arm in arms if arm != control):
        rows = ((variants == control) | (variants == arm)) & present
        effects[arm] = _compare(
            values[rows],
            variants[rows] == arm,
            names=(control, arm, metric),
            kind=kind,
            alpha=alpha,
            sequential=sequential,
            tau=tau,
            looks=looks,
        )
    return ABReport(
        metric=metric,
        kind=kind,
        control=control,
        alpha=alpha,
        sequential=sequential,
        arms=summaries,
        effects=effects,
        srm=srm,
        unit=unit_column,
        mixed_units=mixed,
    )
