"""Deployment transitions: which model versions serve an endpoint, and how.

Each transition is one ``records.apply_change``: a locked, versioned write with an event that
records the author, the reason and the spec after the change.

Transitions (the strategy after each one in brackets):

    deploy        any state                    -> [single] model_ref is the primary
    start_shadow  single | shadow              -> [shadow] candidate gets a copy of traffic
    start_canary  single | shadow              -> [canary] at the first step of the plan
    advance       canary running               -> next step; the last step (100 %) promotes
    promote       canary | shadow              -> [single] the candidate becomes primary
    pause/resume  canary running <-> paused
    rollback      canary | shadow | ab         -> [single] the primary only
    start_ab      single | shadow              -> [ab] arms split by weight
    stop          shadow | canary | ab         -> [single] the primary only
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

from keel.core.ids import new_id
from keel.deploy.records import Deployment, apply_change, get_deployment, resolve_model
from keel.deploy.spec import (
    DEFAULT_HOLD_S,
    DEFAULT_MIN_SAMPLE,
    DEFAULT_PLAN,
    ABState,
    CanaryState,
    DeploymentSpec,
    validate_plan,
    validate_weights,
)
from keel.errors import InvalidInputError, NotFoundError, StateError

if TYPE_CHECKING:
    from keel.project import Project

__all__ = [
    "Deployment",
    "advance",
    "deploy",
    "get_deployment",
    "pause",
    "promote",
    "resume",
    "rollback",
    "start_ab",
    "start_canary",
    "start_shadow",
    "stop",
]


def deploy(
    project: Project,
    endpoint: str,
    model_ref: str,
    *,
    author: str | None = None,
    reason: str | None = None,
) -> Deployment:
    """Serve ``endpoint`` with one model version only, replacing whatever served it.

    Aliases are resolved now: the spec stores the concrete version, so a later alias move
    never changes what is served without a recorded deployment change.

    >>> deploy(project, "fraud", "fraud@champion", reason="first release").spec.primary
    ... # doctest: +SKIP
    'fraud@3'
    """
    ref = resolve_model(project, model_ref)
    return apply_change(
        project, endpoint, "deploy", lambda _c, _n: DeploymentSpec(ref), author, reason
    )


def start_shadow(
    project: Project,
    endpoint: str,
    model_ref: str,
    *,
    author: str | None = None,
    reason: str | None = None,
) -> Deployment:
    """Send a copy of ``endpoint``'s live traffic to ``model_ref``; only the primary answers.

    >>> start_shadow(project, "fraud", "fraud@4", reason="check v4 on live data")
    ... # doctest: +SKIP
    """
    ref = resolve_model(project, model_ref)

    def change(current: DeploymentSpec | None, _now: int) -> DeploymentSpec:
        base = _require(current, endpoint, ("single", "shadow"), "start a shadow")
        _distinct(base.primary, ref)
        return DeploymentSpec(base.primary, "shadow", candidate=ref)

    return apply_change(project, endpoint, "start_shadow", change, author, reason)


def start_canary(
    project: Project,
    endpoint: str,
    model_ref: str,
    *,
    plan: Sequence[float] = DEFAULT_PLAN,
    hold: float | timedelta = DEFAULT_HOLD_S,
    min_sample: int = DEFAULT_MIN_SAMPLE,
    salt: str | None = None,
    author: str | None = None,
    reason: str | None = None,
) -> Deployment:
    """Ramp ``model_ref`` up on ``endpoint`` through ``plan`` (percent of units per step).

    Each step is held ``hold`` (seconds or a timedelta) and needs ``min_sample`` requests
    before the gates may advance it. Units are hashed with ``salt`` (default: the endpoint).

    >>> start_canary(project, "fraud", "fraud@4", plan=[5, 50, 100], hold=3600)
    ... # doctest: +SKIP
    """
    ref = resolve_model(project, model_ref)
    steps = validate_plan(plan)
    hold_s = hold.total_seconds() if isinstance(hold, timedelta) else float(hold)
    if not hold_s >= 0:
        raise InvalidInputError(f"hold {hold!r} is negative; give seconds >= 0, e.g. 86400")
    if isinstance(min_sample, bool) or not isinstance(min_sample, int) or min_sample < 0:
        raise InvalidInputError(f"min_sample {min_sample!r} must be a whole number >= 0")

    def change(current: DeploymentSpec | None, now: int) -> DeploymentSpec:
        base = _require(current, endpoint, ("single", "shadow"), "start a canary")
        _distinct(base.primary, ref)
        canary = CanaryState(steps, 0, hold_s, min_sample, now, "running", salt or endpoint)
        return DeploymentSpec(base.primary, "canary", candidate=ref, canary=canary)

    return apply_change(project, endpoint, "start_canary", change, author, reason)


def advance(
    project: Project, endpoint: str, *, author: str | None = None, reason: str | None = None
) -> Deployment:
    """Move a running canary to its next step; reaching 100 % promotes the candidate.

    >>> advance(project, "fraud", reason="gates passed at 5 %")  # doctest: +SKIP
    """

    def change(current: DeploymentSpec | None, now: int) -> DeploymentSpec:
        canary = _canary(current, endpoint, "advance", ("running",))
        step = canary.step + 1
        if step >= len(canary.plan) - 1:
            return _promoted(current)
        moved = replace(canary, step=step, step_started_at=now)
        return replace(_spec(current), canary=moved)

    return apply_change(project, endpoint, "advance", change, author, reason)


def promote(
    project: Project, endpoint: str, *, author: str | None = None, reason: str | None = None
) -> Deployment:
    """Make the canary or shadow candidate the primary, ending the rollout."""

    def change(current: DeploymentSpec | None, _now: int) -> DeploymentSpec:
        spec = _require(current, endpoint, ("canary", "shadow"), "promote")
        return _promoted(spec)

    return apply_change(project, endpoint, "promote", change, author, reason)


def pause(
    project: Project, endpoint: str, *, author: str | None = None, reason: str | None = None
) -> Deployment:
    """Hold a running canary at its current share until ``resume``."""
    return _set_status(project, endpoint, "pause", "running", "paused", author, reason)


def resume(
    project: Project, endpoint: str, *, author: str | None = None, reason: str | None = None
) -> Deployment:
    """Resume a paused canary; the hold of its step starts again (the pause does not count)."""
    return _set_status(project, endpoint, "resume", "paused", "running", author, reason)


def rollback(
    project: Project, endpoint: str, *, author: str | None = None, reason: str | None = None
) -> Deployment:
    """Send all traffic back to the primary, dropping the canary, shadow or A/B arms."""
    return _primary_only(project, endpoint, "rollback", "roll back", author, reason)


def stop(
    project: Project, endpoint: str, *, author: str | None = None, reason: str | None = None
) -> Deployment:
    """End a shadow, canary or A/B test and serve the primary alone."""
    return _primary_only(project, endpoint, "stop", "stop", author, reason)


def _primary_only(
    project: Project,
    endpoint: str,
    action: str,
    verb: str,
    author: str | None,
    reason: str | None,
) -> Deployment:
    """Serve the primary alone (rollback and stop differ only in what the history says)."""

    def change(current: DeploymentSpec | None, _now: int) -> DeploymentSpec:
        spec = _require(current, endpoint, ("canary", "shadow", "ab"), verb)
        return DeploymentSpec(spec.primary)

    return apply_change(project, endpoint, action, change, author, reason)


def start_ab(
    project: Project,
    endpoint: str,
    arms: Mapping[str, str],
    *,
    weights: Mapping[str, float] | None = None,
    salt: str | None = None,
    author: str | None = None,
    reason: str | None = None,
) -> Deployment:
    """Split ``endpoint``'s units between ``arms`` (name -> model reference) by ``weights``.

    Weights default to equal shares and must sum to 1. Units are hashed with ``salt``; the
    default is fresh for every test, so units are reshuffled between experiments.

    >>> start_ab(project, "fraud", {"control": "fraud@3", "treatment": "fraud@4"},
    ...          weights={"control": 0.5, "treatment": 0.5})  # doctest: +SKIP
    """
    shares = dict(weights) if weights is not None else {arm: 1 / len(arms) for arm in arms}
    validate_weights(arms, shares)
    resolved = {arm: resolve_model(project, ref) for arm, ref in arms.items()}
    ab = ABState(resolved, shares, salt or new_id())

    def change(current: DeploymentSpec | None, _now: int) -> DeploymentSpec:
        primary = current.primary if current is not None else next(iter(resolved.values()))
        if current is not None:
            _require(current, endpoint, ("single", "shadow"), "start an A/B test")
        return DeploymentSpec(primary, "ab", ab=ab)

    return apply_change(project, endpoint, "start_ab", change, author, reason)


def _set_status(
    project: Project,
    endpoint: str,
    action: str,
    before: str,
    after: str,
    author: str | None,
    reason: str | None,
) -> Deployment:
    def change(current: DeploymentSpec | None, now: int) -> DeploymentSpec:
        canary = _canary(current, endpoint, action, (before,))
        started = now if after == "running" else canary.step_started_at
        moved = replace(canary, status=after, step_started_at=started)
        return replace(_spec(current), canary=moved)

    return apply_change(project, endpoint, action, change, author, reason)


def _require(
    current: DeploymentSpec | None, endpoint: str, strategies: tuple[str, ...], what: str
) -> DeploymentSpec:
    if current is None:
        raise NotFoundError(
            f"endpoint {endpoint!r} has no deployment to {what} on; "
            f"create one first with `keel deploy set {endpoint} MODEL@VERSION`"
        )
    if current.strategy not in strategies:
        raise StateError(
            f"cannot {what} on endpoint {endpoint!r}: it runs a {current.strategy} deployment "
            f"(allowed from {' or '.join(strategies)}); `keel deploy stop {endpoint}` ends it"
        )
    return current


def _canary(
    current: DeploymentSpec | None, endpoint: str, what: str, statuses: tuple[str, ...]
) -> CanaryState:
    spec = _require(current, endpoint, ("canary",), what)
    if spec.canary is None or spec.canary.status not in statuses:
        status = None if spec.canary is None else spec.canary.status
        hint = {
            "running": "it is already running",
            "paused": f"resume it first with `keel deploy resume {endpoint}`",
        }.get(status or "", "start a new canary")
        raise StateError(
            f"cannot {what} the canary of endpoint {endpoint!r}: it is {status}, "
            f"not {' or '.join(statuses)}; {hint}"
        )
    return spec.canary


def _promoted(current: DeploymentSpec | None) -> DeploymentSpec:
    spec = _spec(current)
    if spec.candidate is None:
        raise StateError(f"the {spec.strategy} deployment has no candidate to promote")
    return DeploymentSpec(spec.candidate)


def _spec(current: DeploymentSpec | None) -> DeploymentSpec:
    if current is None:  # callers check first; this keeps the types honest
        raise StateError("no deployment")
    return current


def _distinct(primary: str, candidate: str) -> None:
    if primary == candidate:
        raise InvalidInputError(
            f"{candidate} already is the primary; name a different version as the candidate"
        )
