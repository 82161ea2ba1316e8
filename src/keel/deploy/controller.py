"""The canary controller: one analysis of a running canary, and a loop that repeats it.

``tick`` reads the prediction log of the canary's current step, runs the gates
(``keel.deploy.gates.evaluate_canary``) and acts on the decision:

- a failed gate rolls the canary back at once (the gate message is the event's reason);
- gates that pass advance the ramp once the step's hold has elapsed (the last step promotes);
- otherwise it waits, and its message says for what: rows, labels or hold time left.

Every change is a guarded ``apply_change``: inside the locked transaction the controller checks
that the deployment is still exactly the one it analysed, so several controllers (one per
server replica, a cron job, a person at the CLI) can tick the same endpoint and a step is never
advanced twice or rolled back after a person moved it. A restart needs nothing: the step, its
start and the plan live in the metadata store.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from keel.core.timeutil import at_ms, now_ms, to_ms
from keel.deploy.gates import CanaryDecision, GateConfig, evaluate_canary
from keel.deploy.records import Deployment, apply_change, get_deployment
from keel.deploy.spec import CanaryState, DeploymentSpec
from keel.errors import InvalidInputError, KeelError, StateError
from keel.metadata.schema import deployments

if TYPE_CHECKING:
    from keel.project import Project

__all__ = ["CONTROLLER", "TickResult", "gate_config", "running_canaries", "tick", "watch"]

#: The author of every change the controller makes, so the history tells them from people's.
CONTROLLER = "keel-controller"
#: Without labels a step could never pass the performance gate when min_sample is small.
_DEFAULT_MIN_LABELS = 200

Action = Literal["advanced", "promoted", "rolled_back", "waiting", "idle", "skipped", "error"]


@dataclass(frozen=True)
class TickResult:
    """What one tick did on ``endpoint`` and why; ``message`` always names what it waits for.

    Example:
        >>> TickResult("fraud", "waiting", "wait: sample: canary needs 40 more rows").action
        'waiting'
    """

    endpoint: str
    action: Action
    message: str
    version: int | None = None
    step: int | None = None
    percent: float | None = None
    hold_left_s: float | None = None
    decision: CanaryDecision | None = None

    @property
    def changed(self) -> bool:
        """True when this tick changed the deployment."""
        return self.action in ("advanced", "promoted", "rolled_back")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the gate results included)."""
        return {
            "endpoint": self.endpoint,
            "action": self.action,
            "message": self.message,
            "version": self.version,
            "step": self.step,
            "percent": self.percent,
            "hold_left_s": self.hold_left_s,
            "decision": None if self.decision is None else self.decision.to_dict(),
        }


class _StaleError(StateError):
    """The deployment changed between the analysis and the action."""


def tick(
    project: Project,
    endpoint: str,
    *,
    now: datetime | None = None,
    config: GateConfig | None = None,
) -> TickResult:
    """Analyse ``endpoint``'s running canary once and advance, roll back or wait.

    The rows analysed are those logged since the current step started (prediction log under
    ``serving.prediction_log``). ``now`` (aware; default: the clock) decides whether the hold
    has elapsed. ``config`` sets the gate thresholds; ``min_sample`` always comes from the
    canary's own settings (``keel deploy canary --min-sample``). An endpoint without a running
    canary is left alone (action ``"idle"``).

    Example:
        >>> result = tick(project, "fraud")  # doctest: +SKIP
        >>> result.action, result.message  # doctest: +SKIP
        ('waiting', 'wait: sample: canary needs 412 more rows (88 of 500); hold ends in 3540 s')
    """
    moment = _now_ms(now)
    deployment = get_deployment(project, endpoint)
    spec, canary = deployment.spec, deployment.spec.canary
    if spec.strategy != "canary" or canary is None:
        return TickResult(
            endpoint,
            "idle",
            f"endpoint {endpoint!r} runs a {spec.strategy} deployment; no canary to analyse",
            deployment.version,
        )
    if canary.status != "running":
        return _result(deployment, "idle", f"the canary is {canary.status}; nothing to do")
    gates = gate_config(config, canary)
    started = at_ms(canary.step_started_at)
    from keel.serving.predlog import read_predictions

    folder = project.root / project.config.serving.prediction_log
    table = read_predictions(folder, endpoint=endpoint, since=started)
    decision = evaluate_canary(table, since=started, config=gates)
    hold_left = max(0.0, canary.hold_s - (moment - canary.step_started_at) / 1000)
    where = f"step {canary.step + 1} of {len(canary.plan)} ({canary.percent:g} %)"
    if decision.decision == "rollback":
        reason = f"{decision.message} at {where}"
        return _act(project, deployment, "rollback", reason, decision)
    if decision.decision == "advance" and hold_left <= 0:
        reason = f"{decision.message} at {where} after a {_seconds(canary.hold_s)} hold"
        return _act(project, deployment, "advance", reason, decision)
    if decision.decision == "advance":
        message = f"wait: every gate passes at {where}; hold ends in {_seconds(hold_left)}"
    else:
        message = f"{decision.message} at {where}"
        if hold_left > 0:
            message += f"; hold ends in {_seconds(hold_left)}"
    return _result(deployment, "waiting", message, decision, hold_left)


def running_canaries(project: Project) -> list[str]:
    """The endpoints whose canary is running now, in name order."""
    with project.metadata.read() as conn:
        rows = conn.execute(select(deployments.c.endpoint, deployments.c.spec)).all()
    names = []
    for row in rows:
        spec = DeploymentSpec.from_dict(row.spec)
        if spec.canary is not None and spec.canary.status == "running":
            names.append(str(row.endpoint))
    return sorted(names)


def watch(
    project: Project,
    endpoints: Iterable[str],
    interval_s: float,
    stop_event: threading.Event,
    *,
    config: GateConfig | None = None,
    on_result: Callable[[TickResult], None] | None = None,
    max_rounds: int | None = None,
) -> int:
    """Tick ``endpoints`` (none: every running canary) every ``interval_s`` until ``stop_event``.

    An error on one endpoint (say, an unreadable log) is reported through ``on_result`` as
    action ``"error"`` and the loop goes on, so one endpoint never stops the others' rollbacks.
    ``max_rounds`` ends the loop after that many rounds. Returns the number of rounds run.

    Example:
        >>> stop = threading.Event()
        >>> watch(project, ["fraud"], 30.0, stop, on_result=print)  # doctest: +SKIP
    """
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise InvalidInputError(f"interval {interval_s!r} must be a positive number of seconds")
    if max_rounds is not None and max_rounds < 1:
        raise InvalidInputError(f"max_rounds {max_rounds!r} must be at least 1 (or None)")
    names = list(endpoints)
    rounds = 0
    while not stop_event.is_set():
        for endpoint in names or running_canaries(project):
            try:
                result = tick(project, endpoint, config=config)
            except KeelError as exc:
                result = TickResult(endpoint, "error", str(exc))
            if on_result is not None:
                on_result(result)
        rounds += 1
        if rounds == max_rounds or stop_event.wait(interval_s):
            break
    return rounds


def _act(
    project: Project,
    seen: Deployment,
    action: Literal["advance", "rollback"],
    reason: str,
    decision: CanaryDecision,
) -> TickResult:
    def change(current: DeploymentSpec | None, now: int) -> DeploymentSpec:
        # Re-checked under the row lock: act only on the deployment that was analysed.
        if current != seen.spec:
            raise _StaleError(f"the deployment of {seen.endpoint!r} changed during the analysis")
        if action == "rollback":
            return DeploymentSpec(seen.spec.primary)
        return _advanced(seen.spec, now)

    try:
        after = apply_change(project, seen.endpoint, action, change, CONTROLLER, reason)
    except _StaleError:
        latest = get_deployment(project, seen.endpoint)
        message = (
            f"the deployment changed to version {latest.version} while it was analysed "
            "(another controller or a person acted); the next tick analyses the new state"
        )
        return _result(latest, "skipped", message, decision)
    if action == "rollback":
        return _result(after, "rolled_back", reason, decision)
    kind: Action = "promoted" if after.spec.strategy == "single" else "advanced"
    fresh = None if after.spec.canary is None else after.spec.canary.hold_s
    return _result(after, kind, reason, decision, fresh)


def _advanced(spec: DeploymentSpec, now: int) -> DeploymentSpec:
    """The spec one step further; the step before 100 % promotes (as ``state.advance``)."""
    canary = spec.canary
    if canary is None or spec.candidate is None:
        raise StateError("only a canary deployment can advance")
    step = canary.step + 1
    if step >= len(canary.plan) - 1:
        return DeploymentSpec(spec.candidate)
    return replace(spec, canary=replace(canary, step=step, step_started_at=now))


def _result(
    deployment: Deployment,
    action: Action,
    message: str,
    decision: CanaryDecision | None = None,
    hold_left: float | None = None,
) -> TickResult:
    canary = deployment.spec.canary
    return TickResult(
        endpoint=deployment.endpoint,
        action=action,
        message=message,
        version=deployment.version,
        step=None if canary is None else canary.step,
        percent=None if canary is None else canary.percent,
        hold_left_s=None if canary is None else hold_left,
        decision=decision,
    )


def gate_config(config: GateConfig | None, canary: CanaryState) -> GateConfig:
    """The gate thresholds for ``canary``: ``config`` (or the defaults) with its min_sample.

    Without ``config`` a step needs as many labels as rows, at most 200, so a canary with a
    small min_sample is not held back by the default label count.

    Example:
        >>> from keel.deploy.spec import CanaryState
        >>> gate_config(None, CanaryState((50, 100), 0, 60.0, 100, 0)).min_labels
        100
    """
    # GateConfig needs at least one row; a canary started with --min-sample 0 needs one.
    need = max(1, canary.min_sample)
    if config is None:
        return GateConfig(min_sample=need, min_labels=min(_DEFAULT_MIN_LABELS, need))
    return replace(config, min_sample=need)


def _now_ms(now: datetime | None) -> int:
    if now is None:
        return now_ms()
    if now.tzinfo is None:
        raise InvalidInputError(
            f"now={now.isoformat()} has no time zone; pass an aware datetime such as "
            "datetime(..., tzinfo=UTC)"
        )
    return to_ms(now)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
