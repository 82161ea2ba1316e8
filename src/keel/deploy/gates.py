"""Canary analysis: gates comparing the canary with the primary over the prediction log.

``evaluate_canary`` reads the rows of one ramp step (``since`` its start) and answers with a
``CanaryDecision``: ``"advance"`` when every gate passes on enough traffic, ``"rollback"`` as
soon as one gate fails, and ``"wait"`` — with the number of rows or labels still missing —
otherwise. A gate without enough data waits; it never passes on too little evidence.

Gates, in order:

- ``sample``: each variant has at least ``min_sample`` rows.
- ``error_rate``: the canary's error rate (status 0 or >= 500) exceeds the primary's by at most
  ``max_error_rate_increase``. It fails before the sample is reached when the canary's errors
  so far already exceed what ``min_sample`` rows could absorb.
- ``latency_p99``: canary p99 latency / primary p99 latency is at most ``max_p99_latency_ratio``.
- ``prediction_distribution``: PSI of the canary's predictions against the primary's is at most
  ``max_psi`` (or, with ``distribution_test="ks"``, the KS p-value is at least ``min_ks_p_value``).
- ``performance``: once each variant has ``min_labels`` labelled rows, AUC (0/1 labels) or
  log loss / RMSE is not worse than the primary's by more than ``max_performance_drop``.

The error-rate and performance gates fail only when the canary is worse than the limit AND
the worsening is significant (one-sided z-test at ``alpha``); worse-looking but within noise,
they wait for more data. So label noise in a small sample neither rolls back a good canary nor
lets a bad one through.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.deploy.gates_checks import (
    GateResult,
    GateStatus,
    Variant,
    distribution_gate,
    error_rate_gate,
    latency_gate,
    performance_gate,
    sample_gate,
)
from keel.errors import InvalidInputError

__all__ = ["CanaryDecision", "GateConfig", "GateResult", "GateStatus", "evaluate_canary"]

Decision = Literal["advance", "rollback", "wait"]
PerformanceMetric = Literal["auto", "auc", "log_loss", "rmse", "off"]

_REQUIRED = ("variant", "status", "latency_us", "prediction")


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the canary gates; every default is what a ramp step uses unless told.

    Example:
        >>> GateConfig(min_sample=100, max_p99_latency_ratio=2.0).min_labels
        200
    """

    min_sample: int = 500
    max_error_rate_increase: float = 0.01
    max_p99_latency_ratio: float = 1.5
    distribution_test: Literal["psi", "ks"] = "psi"
    max_psi: float = 0.2
    min_ks_p_value: float = 0.001
    psi_bins: int = 10
    min_labels: int = 200
    performance_metric: PerformanceMetric = "auto"
    max_performance_drop: float = 0.05
    alpha: float = 0.01
    primary: str = "primary"
    canary: str = "canary"

    def __post_init__(self) -> None:
        for name in ("min_sample", "min_labels"):
            if getattr(self, name) < 1:
                raise InvalidInputError(
                    f"GateConfig.{name} must be at least 1, got {getattr(self, name)}"
                )
        for name in ("max_error_rate_increase", "max_psi", "max_performance_drop"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidInputError(
                    f"GateConfig.{name} must be a finite number >= 0, got {value!r}"
                )
        if not (math.isfinite(self.max_p99_latency_ratio) and self.max_p99_latency_ratio >= 1):
            raise InvalidInputError(
                f"GateConfig.max_p99_latency_ratio must be >= 1 (canary p99 / primary p99), "
                f"got {self.max_p99_latency_ratio!r}; the default is 1.5"
            )
        if not 0 < self.alpha < 1:
            raise InvalidInputError(
                f"GateConfig.alpha must be in (0, 1), got {self.alpha!r}; the default is 0.01"
            )
        if not 0 < self.min_ks_p_value < 1:
            raise InvalidInputError(
                f"GateConfig.min_ks_p_value must be in (0, 1), got {self.min_ks_p_value!r}; "
                "the default is 0.001"
            )
        if self.distribution_test not in ("psi", "ks"):
            raise InvalidInputError(
                f"GateConfig.distribution_test {self.distribution_test!r} is unknown; "
                "use 'psi' or 'ks'"
            )
        if self.performance_metric not in ("auto", "auc", "log_loss", "rmse", "off"):
            raise InvalidInputError(
                f"GateConfig.performance_metric {self.performance_metric!r} is unknown; "
                "use 'auto', 'auc', 'log_loss', 'rmse' or 'off'"
            )
        if self.psi_bins < 2:
            raise InvalidInputError(f"GateConfig.psi_bins must be at least 2, got {self.psi_bins}")
        if self.primary == self.canary:
            raise InvalidInputError(
                f"GateConfig.primary and .canary are both {self.primary!r}; "
                "name two different variants"
            )


@dataclass(frozen=True)
class CanaryDecision:
    """The outcome of one canary analysis: the decision, each gate, and the counts behind them.

    Example:
        >>> decision = evaluate_canary(pa.table({"variant": pa.array([], pa.string()),
        ...     "status": pa.array([], pa.int32()), "latency_us": pa.array([], pa.int64()),
        ...     "prediction": pa.array([], pa.float64())}))
        >>> decision.decision
        'wait'
    """

    decision: Decision
    message: str
    gates: tuple[GateResult, ...]
    rows: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        """Names of the gates that failed (the reasons for a rollback)."""
        return [gate.name for gate in self.gates if gate.status == "fail"]

    @property
    def waiting(self) -> list[str]:
        """Names of the gates still waiting for traffic or labels."""
        return [gate.name for gate in self.gates if gate.status == "waiting"]

    def gate(self, name: str) -> GateResult:
        """The result of the gate called ``name``."""
        for gate in self.gates:
            if gate.name == name:
                return gate
        known = ", ".join(gate.name for gate in self.gates)
        raise InvalidInputError(f"no gate named {name!r}; the gates are {known}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (non-finite values become null)."""
        gates = []
        for gate in self.gates:
            entry = asdict(gate)
            if entry["value"] is not None and not math.isfinite(entry["value"]):
                entry["value"] = None
            gates.append(entry)
        return {
            "decision": self.decision,
            "message": self.message,
            "gates": gates,
            "rows": dict(self.rows),
            "labels": dict(self.labels),
        }


def evaluate_canary(
    predictions: pa.Table,
    *,
    since: datetime | None = None,
    config: GateConfig | None = None,
) -> CanaryDecision:
    """Compare the canary with the primary on ``predictions`` (a prediction-log table).

    ``predictions`` has the columns of ``keel.serving.predlog.read_predictions`` (at least
    variant, status, latency_us and prediction; ``time`` when ``since`` is given; ``label``
    for the performance gate; ``prediction_json`` to compare non-numeric outputs). Rows of
    other variants are ignored; ``since`` (an aware datetime, inclusive) keeps only the rows
    of the current ramp step.

    Example:
        >>> rows = 600
        >>> table = pa.table({"variant": ["primary", "canary"] * rows,
        ...     "status": [200] * (2 * rows), "latency_us": [900, 950] * rows,
        ...     "prediction": [i // 2 % 10 / 10 for i in range(2 * rows)]})
        >>> evaluate_canary(table, config=GateConfig(performance_metric="off")).decision
        'advance'
    """
    config = config or GateConfig()
    table = _select(predictions, since)
    primary = _variant(table, config.primary)
    canary = _variant(table, config.canary)
    gates = [
        sample_gate(primary, canary, config),
        error_rate_gate(primary, canary, config),
        latency_gate(primary, canary, config),
        distribution_gate(primary, canary, config),
    ]
    if config.performance_metric != "off":
        gates.append(performance_gate(primary, canary, config))
    results = tuple(gates)
    return CanaryDecision(
        decision=_decide(results),
        message=_message(results),
        gates=results,
        rows={config.primary: primary.rows, config.canary: canary.rows},
        labels={config.primary: primary.labelled, config.canary: canary.labelled},
    )


def _select(predictions: pa.Table, since: datetime | None) -> pa.Table:
    missing = [name for name in _REQUIRED if name not in predictions.column_names]
    if since is not None and "time" not in predictions.column_names:
        missing.append("time")
    if missing:
        raise InvalidInputError(
            f"the predictions table lacks column(s) {', '.join(missing)}; pass a table from "
            "keel.serving.predlog.read_predictions"
        )
    if since is None:
        return predictions
    if since.tzinfo is None:
        raise InvalidInputError(
            f"since={since.isoformat()} has no time zone; pass an aware datetime such as "
            "datetime(..., tzinfo=UTC)"
        )
    time_type = predictions.schema.field("time").type
    return predictions.filter(pc.greater_equal(predictions["time"], pa.scalar(since, time_type)))


def _variant(table: pa.Table, name: str) -> Variant:
    rows = table.filter(pc.equal(table["variant"], name))
    status = _floats(rows["status"], fill=0.0)
    latency = _floats(rows["latency_us"], fill=math.nan)
    prediction = _floats(rows["prediction"], fill=math.nan)
    ok = (status > 0) & (status < 500)
    texts: list[str | None] = (
        rows["prediction_json"].to_pylist() if "prediction_json" in rows.column_names else []
    )
    label: np.ndarray[Any, np.dtype[np.float64]] | None = None
    present = np.zeros(rows.num_rows, dtype=bool)
    if "label" in rows.column_names:
        column = rows["label"]
        present = pc.is_valid(column).to_numpy(zero_copy_only=False).astype(bool)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            label = _floats(column, fill=math.nan)
    return Variant(
        name=name,
        status=status,
        latency=latency,
        prediction=prediction,
        ok=ok,
        prediction_text=texts,
        label=label,
        label_present=present,
    )


def _floats(column: pa.ChunkedArray, *, fill: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    if column.type == pa.null():
        return np.full(len(column), fill, dtype=np.float64)
    values = pc.fill_null(pc.cast(column, pa.float64()), fill)
    result: np.ndarray[Any, np.dtype[np.float64]] = np.asarray(values, dtype=np.float64)
    return result


def _decide(gates: tuple[GateResult, ...]) -> Decision:
    if any(gate.status == "fail" for gate in gates):
        return "rollback"
    if any(gate.status == "waiting" for gate in gates):
        return "wait"
    return "advance"


def _message(gates: tuple[GateResult, ...]) -> str:
    failed = [gate for gate in gates if gate.status == "fail"]
    if failed:
        return "roll back: " + "; ".join(f"{gate.name} failed ({gate.detail})" for gate in failed)
    waiting = [gate for gate in gates if gate.status == "waiting"]
    if waiting:
        return "wait: " + "; ".join(f"{gate.name}: {gate.detail}" for gate in waiting)
    return "advance: every gate passed (" + ", ".join(gate.name for gate in gates) + ")"
