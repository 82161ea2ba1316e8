"""Deployment reports from the prediction log: shadow agreement, canary gates, A/B analysis.

``report`` picks what fits the endpoint's deployment: a shadow is compared with the primary
request by request (the server logs the shadow's copy under the same request id), a canary gets
its gates (``keel.deploy.gates``), an A/B test its per-arm analysis with the sample-ratio check
(``keel.deploy.stats_ab``). Every report also summarises each variant: rows, errors, latency.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.core.timeutil import at_ms
from keel.deploy.controller import gate_config
from keel.deploy.gates import CanaryDecision, GateConfig, evaluate_canary
from keel.deploy.gates_metrics import psi, psi_categorical
from keel.deploy.records import get_deployment
from keel.deploy.stats import srm_check
from keel.deploy.stats_ab import ABReport, analyze_ab
from keel.errors import InvalidInputError
from keel.serving.predlog import UNIT

if TYPE_CHECKING:
    from keel.deploy.spec import DeploymentSpec
    from keel.project import Project

UNIT_COLUMN = "_unit"  # added to the log's columns for the analysis; no log column has this name

__all__ = [
    "DeployReport",
    "ShadowReport",
    "VariantStats",
    "report",
    "shadow_report",
    "variant_stats",
]


@dataclass(frozen=True)
class VariantStats:
    """One variant's traffic: rows, failed rows (status missing or >= 500), latency in ms."""

    variant: str
    rows: int
    errors: int
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None


@dataclass(frozen=True)
class ShadowReport:
    """The shadow compared with the primary on the requests both answered.

    ``pairs`` counts request ids answered successfully by both; ``agreement`` is the share of
    them with identical outputs, ``within_tolerance`` the share whose numeric predictions differ
    by at most ``tolerance`` (other outputs must be identical). ``psi`` compares the two
    prediction distributions. ``unmatched`` counts primary requests without a shadow answer
    (copies dropped from the queue or still in flight).
    """

    primary: VariantStats
    shadow: VariantStats
    pairs: int
    unmatched: int
    agreement: float | None
    within_tolerance: float | None
    tolerance: float
    mean_abs_diff: float | None
    psi: float | None


@dataclass(frozen=True)
class DeployReport:
    """What ``report`` found for ``endpoint``; exactly one of shadow, canary and ab is set
    unless ``note`` says why none could be computed."""

    endpoint: str
    strategy: str
    since: datetime | None
    rows: int
    variants: tuple[VariantStats, ...]
    shadow: ShadowReport | None = None
    canary: CanaryDecision | None = None
    ab: ABReport | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (non-finite numbers become null)."""
        return dict(
            _clean(
                {
                    "endpoint": self.endpoint,
                    "strategy": self.strategy,
                    "since": None if self.since is None else self.since.isoformat(),
                    "rows": self.rows,
                    "variants": [asdict(v) for v in self.variants],
                    "shadow": None if self.shadow is None else asdict(self.shadow),
                    "canary": None if self.canary is None else self.canary.to_dict(),
                    "ab": None if self.ab is None else self.ab.to_dict(),
                    "note": self.note,
                }
            )
        )


def variant_stats(table: pa.Table, variant: str) -> VariantStats:
    """Rows, errors and latency percentiles of ``variant`` in a prediction-log table.

    Example:
        >>> t = pa.table({"variant": ["primary"] * 2, "status": [200, 503],
        ...               "latency_us": [1000, 3000]})
        >>> variant_stats(t, "primary").error_rate
        0.5
    """
    rows = table.filter(pc.equal(table["variant"], variant))
    status = _numbers(rows["status"], 0.0)
    latency = _numbers(rows["latency_us"], math.nan)
    latency = latency[np.isfinite(latency)]
    errors = int(np.count_nonzero(~_ok(status)))
    return VariantStats(
        variant=variant,
        rows=rows.num_rows,
        errors=errors,
        error_rate=errors / rows.num_rows if rows.num_rows else None,
        latency_p50_ms=float(np.percentile(latency, 50)) / 1000 if latency.size else None,
        latency_p99_ms=float(np.percentile(latency, 99)) / 1000 if latency.size else None,
    )


def shadow_report(
    table: pa.Table,
    *,
    tolerance: float = 1e-6,
    psi_bins: int = 10,
    primary: str = "primary",
    shadow: str = "shadow",
) -> ShadowReport:
    """Compare ``shadow`` with ``primary`` request by request (joined on ``request_id``).

    Example:
        >>> t = pa.table({"request_id": ["a", "a", "b", "b"],
        ...     "variant": ["primary", "shadow"] * 2, "status": [200] * 4,
        ...     "latency_us": [900, 1200, 1000, 1100], "prediction": [0.2, 0.2, 0.4, 0.5],
        ...     "prediction_json": ["0.2", "0.2", "0.4", "0.5"]})
        >>> shadow_report(t).agreement
        0.5
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise InvalidInputError(f"tolerance {tolerance!r} must be a finite number >= 0")
    answers = {name: _answers(table, name) for name in (primary, shadow)}
    first, second = answers[primary], answers[shadow]
    both = [rid for rid in first if rid in second and first[rid][0] and second[rid][0]]
    equal = close = 0
    diffs: list[float] = []
    for rid in both:
        _, text_p, value_p = first[rid]
        _, text_s, value_s = second[rid]
        same = text_p == text_s
        equal += same
        if value_p is not None and value_s is not None:
            diffs.append(abs(value_p - value_s))
            close += abs(value_p - value_s) <= tolerance
        else:
            close += same
    return ShadowReport(
        primary=variant_stats(table, primary),
        shadow=variant_stats(table, shadow),
        pairs=len(both),
        unmatched=sum(1 for rid in first if rid not in second),
        agreement=equal / len(both) if both else None,
        within_tolerance=close / len(both) if both else None,
        tolerance=tolerance,
        mean_abs_diff=float(np.mean(diffs)) if diffs else None,
        psi=_psi(first, second, psi_bins),
    )


def report(
    project: Project,
    endpoint: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    strategy: str | None = None,
    metric: str = "label",
    config: GateConfig | None = None,
) -> DeployReport:
    """The report of ``endpoint``'s deployment over its prediction log.

    ``strategy`` (default: the endpoint's current one; for a single model, "shadow" or
    "canary" if the log holds such rows) picks the report. A canary is analysed from its
    current step's start unless ``since`` is given, with its own min_sample; an A/B test
    compares the arms on ``metric`` ("label" or "outcome" from feedback).

    Example:
        >>> report(project, "fraud").shadow.agreement  # doctest: +SKIP
        0.974
    """
    from keel.serving.predlog import read_predictions

    spec = get_deployment(project, endpoint).spec
    if since is None and spec.canary is not None and strategy in (None, "canary"):
        since = at_ms(spec.canary.step_started_at)
    folder = project.root / project.config.serving.prediction_log
    table = read_predictions(folder, endpoint=endpoint, since=since, until=until)
    names = sorted({v for v in table["variant"].to_pylist() if v is not None})
    kind = strategy or _infer(spec, names)
    stats = tuple(variant_stats(table, name) for name in names)
    base = DeployReport(endpoint, kind, since, table.num_rows, stats)
    if kind == "shadow":
        return replace(base, shadow=shadow_report(table))
    if kind == "canary":
        if spec.canary is not None:
            config = gate_config(config, spec.canary)
        return replace(base, canary=evaluate_canary(table, config=config))
    if kind == "ab":
        return _ab(base, table, spec, names, metric)
    return replace(base, note=f"a {kind} deployment has nothing to compare; variants: {names}")


def _infer(spec: DeploymentSpec, variants: list[str]) -> str:
    if spec.strategy != "single":
        return spec.strategy
    for kind in ("shadow", "canary"):
        if kind in variants:
            return kind
    return "single"


def _ab(
    base: DeployReport, table: pa.Table, spec: DeploymentSpec, names: list[str], metric: str
) -> DeployReport:
    if spec.ab is not None:
        weights = {arm: w for arm, w in spec.ab.weights.items() if w > 0}
    else:
        weights = dict.fromkeys((n for n in names if n != "primary"), 1.0)
    arms = sorted(weights)
    if len(arms) < 2:
        return replace(base, note=f"an A/B report needs two arms with traffic; found {arms}")
    table = table.filter(pc.is_in(table["variant"], pa.array(arms, pa.string())))
    control = "control" if "control" in arms else arms[0]
    if metric not in table.column_names:
        return replace(base, note=f"the log has no column {metric!r}; use label or outcome")
    values = table[metric]
    kind: Literal["proportion", "mean"] = "proportion"  # analyze_ab explains other types
    if pa.types.is_floating(values.type) or pa.types.is_integer(values.type):
        present = pc.drop_null(pc.cast(values, pa.float64())).to_pylist()
        kind = "proportion" if present and set(present) <= {0.0, 1.0} else "mean"
    table, unit = _with_units(table)
    try:
        analysis = analyze_ab(
            table,
            metric=metric,
            kind=kind,
            control=control,
            expected_weights=weights,
            unit_column=unit,
        )
    except InvalidInputError as exc:
        seen: dict[str, set[object]] = {arm: set() for arm in weights}
        rows = table.select(["variant", unit or "request_id"]).to_pylist()
        for row in rows:
            if row["variant"] in seen:
                seen[row["variant"]].add(row[unit or "request_id"])
        counts = {arm: len(found) for arm, found in seen.items()}
        note = f"no effect estimate yet: {exc}"
        if sum(counts.values()) and len(counts) >= 2:
            srm = srm_check(counts, weights)
            note += f"; sample ratio p-value {srm.p_value:.3g}" + (
                " (MISMATCH)" if srm.mismatch else ""
            )
        return replace(base, note=note)
    return replace(base, ab=analysis)


def _with_units(table: pa.Table) -> tuple[pa.Table, str | None]:
    """``table`` with a column of each row's unit, when the server logged units (it does under
    a canary or an A/B test, in the extra fields), and that column's name; else None."""
    if "extra_json" not in table.column_names:
        return table, None
    extras = table["extra_json"].to_pylist()
    units = [None if text is None else json.loads(text).get(UNIT) for text in extras]
    if all(unit is None for unit in units):
        return table, None
    column = pa.array([None if u is None else str(u) for u in units], pa.string())
    return table.append_column(UNIT_COLUMN, column), UNIT_COLUMN


def _answers(table: pa.Table, variant: str) -> dict[str, tuple[bool, str | None, float | None]]:
    """request id -> (succeeded, output JSON, numeric prediction); a repeated id keeps its last."""
    rows = table.filter(pc.equal(table["variant"], variant))
    ids = rows["request_id"].to_pylist()
    ok = _ok(_numbers(rows["status"], 0.0)).tolist()
    texts = rows["prediction_json"].to_pylist()
    numbers = _numbers(rows["prediction"], math.nan).tolist()
    return {
        rid: (bool(good), text, value if math.isfinite(value) else None)
        for rid, good, text, value in zip(ids, ok, texts, numbers, strict=True)
        if rid is not None
    }


def _psi(
    first: dict[str, tuple[bool, str | None, float | None]],
    second: dict[str, tuple[bool, str | None, float | None]],
    bins: int,
) -> float | None:
    values_p = [v for good, _, v in first.values() if good and v is not None]
    values_s = [v for good, _, v in second.values() if good and v is not None]
    if values_p and values_s:
        return psi(values_p, values_s, bins=bins)
    texts_p = [t for good, t, _ in first.values() if good and t is not None]
    texts_s = [t for good, t, _ in second.values() if good and t is not None]
    if texts_p and texts_s:
        return psi_categorical(texts_p, texts_s)
    return None


def _numbers(column: pa.ChunkedArray, fill: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    if column.type == pa.null():
        return np.full(len(column), fill, dtype=np.float64)
    filled = pc.fill_null(pc.cast(column, pa.float64()), fill)
    result: np.ndarray[Any, np.dtype[np.float64]] = np.asarray(filled, dtype=np.float64)
    return result


def _ok(status: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    # As in the gates: a missing status (0) or a server error counts as a failed request.
    result: np.ndarray[Any, np.dtype[np.bool_]] = (status > 0) & (status < 500)
    return result


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
