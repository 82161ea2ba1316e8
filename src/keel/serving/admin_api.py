"""The admin API: an endpoint's deployment read and changed live over HTTP.

The same transitions as `keel deploy` (keel.deploy.state), with the same checks, recorded with
an author and a reason; when the server has API keys these routes need an admin key
(keel.serving.auth). The server that takes a change serves it at once; other replicas pick it
up at their next refresh (``serving.refresh_s``).

    GET  /v1/deployments/fraud                  the deployment in force
    GET  /v1/deployments/fraud/history          every change, with author and reason
    GET  /v1/deployments/fraud/report           shadow agreement, canary gates or A/B analysis
    POST /v1/deployments/fraud/canary  {"model": "fraud@4", "plan": [1, 5, 25, 100],
                                        "hold_s": 3600, "reason": "retrained on May"}
    POST /v1/deployments/fraud/rollback {"reason": "p99 doubled"}
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from keel.errors import InvalidInputError, StateError

if TYPE_CHECKING:
    from keel.deploy.records import Deployment
    from keel.project import Project

router = APIRouter(tags=["deployments"])

DEFAULT_AUTHOR = "api"
T = TypeVar("T")


class Action(StrEnum):
    set = "set"
    shadow = "shadow"
    canary = "canary"
    ab = "ab"
    advance = "advance"
    promote = "promote"
    pause = "pause"
    resume = "resume"
    rollback = "rollback"
    stop = "stop"


class ChangeRequest(BaseModel):
    """What a change needs: ``model`` for set, shadow and canary; ``arms`` (and optionally
    ``weights``, fractions summing to 1) for ab; the plan, hold and sample of a canary."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, examples=["fraud@4"])
    arms: dict[str, str] | None = Field(default=None, examples=[{"control": "fraud@3"}])
    weights: dict[str, float] | None = None
    plan: list[float] | None = Field(default=None, examples=[[1, 5, 10, 25, 50, 100]])
    hold_s: float | None = Field(default=None, ge=0)
    min_sample: int | None = Field(default=None, ge=0)
    salt: str | None = None
    author: str | None = None
    reason: str | None = None


@router.get("/v1/deployments/{endpoint}")
async def show(endpoint: str, request: Request) -> dict[str, Any]:
    """The deployment in force on ``endpoint``."""
    from keel.deploy.records import get_deployment

    return get_deployment(_project(request), endpoint).to_dict()


@router.get("/v1/deployments/{endpoint}/history")
async def history(endpoint: str, request: Request) -> list[dict[str, Any]]:
    """Every change of ``endpoint``'s deployment, oldest first."""
    from keel.deploy.history import history as events_of

    return [event.to_dict() for event in events_of(_project(request), endpoint)]


@router.get("/v1/deployments/{endpoint}/report")
async def report(endpoint: str, request: Request) -> dict[str, Any]:
    """What `keel deploy report` shows: shadow agreement, canary gates or the A/B analysis,
    and each variant's traffic (read from the prediction log, off the event loop)."""
    import asyncio

    from keel.deploy.report import report as report_of

    found = await asyncio.to_thread(report_of, _project(request), endpoint)
    return found.to_dict()


@router.post("/v1/deployments/{endpoint}/{action}", response_model=None)
async def change(
    endpoint: str, action: Action, body: ChangeRequest, request: Request
) -> dict[str, Any] | JSONResponse:
    """Apply ``action`` to ``endpoint``'s deployment; the deployment after it. A transition
    the current state does not allow (promoting without a candidate...) is a 409."""
    apply = _transition(action, body)
    try:
        deployment = apply(_project(request), endpoint, body.author or DEFAULT_AUTHOR)
    except StateError as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
    # This server serves the change now (loading a model on a worker thread, not on the
    # event loop serving requests); the others at their next refresh.
    await asyncio.to_thread(request.app.state.predictor.router.refresh)
    return deployment.to_dict()


def _project(request: Request) -> Project:
    project: Project = request.app.state.project
    return project


def _transition(action: Action, body: ChangeRequest) -> Callable[[Project, str, str], Deployment]:
    from keel.deploy import state

    reason = body.reason
    if action in (Action.set, Action.shadow, Action.canary):
        model = _required(body.model, "model", action, '"fraud@4"')
        if action is Action.set:
            return lambda p, e, a: state.deploy(p, e, model, author=a, reason=reason)
        if action is Action.shadow:
            return lambda p, e, a: state.start_shadow(p, e, model, author=a, reason=reason)
        options: dict[str, Any] = {"salt": body.salt}
        if body.plan is not None:
            options["plan"] = body.plan
        if body.hold_s is not None:
            options["hold"] = body.hold_s
        if body.min_sample is not None:
            options["min_sample"] = body.min_sample
        return lambda p, e, a: state.start_canary(p, e, model, author=a, reason=reason, **options)
    if action is Action.ab:
        arms = _required(body.arms, "arms", action, '{"control": "fraud@3", "treatment": ...}')
        weights, salt = body.weights, body.salt
        return lambda p, e, a: state.start_ab(
            p, e, arms, weights=weights, salt=salt, author=a, reason=reason
        )
    simple = {
        Action.advance: state.advance,
        Action.promote: state.promote,
        Action.pause: state.pause,
        Action.resume: state.resume,
        Action.rollback: state.rollback,
        Action.stop: state.stop,
    }[action]
    return lambda p, e, a: simple(p, e, author=a, reason=reason)


def _required(value: T | None, name: str, action: Action, example: str) -> T:
    if value is None:
        raise InvalidInputError(
            f"{action.value} needs '{name}' in the request body, e.g. {{\"{name}\": {example}}}"
        )
    return value
