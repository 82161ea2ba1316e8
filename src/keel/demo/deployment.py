"""The demo's deployment act: the champion served by the model server, the challenger in
shadow on replayed traffic, then a retrained candidate ramped by a canary with second-long
holds, every step gated by the controller, and the endpoint's deployment history.

The server runs in-process (the same ASGI app `keel serve` runs) and receives the last day's
transactions as JSON requests; the prediction log and the deployment state are the project's
own, so `keel deploy report fraud` and `keel deploy history fraud` show the same afterwards.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from keel.deploy.controller import TickResult
    from keel.deploy.history import DeploymentEvent
    from keel.deploy.report import DeployReport
    from keel.project import Project

ENDPOINT = "fraud"
SERVICE = "fraud_features"
AUTHOR = "keel-demo"
CANARY_PLAN = (20, 50, 100)


@dataclass(frozen=True)
class DeploymentDemo:
    requests: int
    shadow: DeployReport
    ticks: list[TickResult]
    history: list[DeploymentEvent]


def run_deployment(
    project: Project, transactions: pd.DataFrame, champion: str, challenger: str, candidate: str
) -> DeploymentDemo:
    """Serve ``champion``, shadow ``challenger``, then canary ``candidate`` to 100 %."""
    return asyncio.run(_run(project, transactions, champion, challenger, candidate))


async def _run(
    project: Project, transactions: pd.DataFrame, champion: str, challenger: str, candidate: str
) -> DeploymentDemo:
    import httpx

    from keel.config import EndpointConfig
    from keel.deploy import state
    from keel.deploy.history import history
    from keel.deploy.report import report
    from keel.errors import StateError
    from keel.serving.app import create_app

    bodies = _requests(transactions)
    state.deploy(project, ENDPOINT, champion, author=AUTHOR, reason="serve the champion")
    state.start_shadow(
        project, ENDPOINT, challenger, author=AUTHOR, reason="compare the challenger live"
    )
    endpoints = {ENDPOINT: EndpointConfig(model=champion, features=SERVICE)}
    app = create_app(project, endpoints=endpoints, refresh_s=0.1)
    transport = httpx.ASGITransport(app=app)
    sent = 0
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://keel") as client,
    ):
        sent += await _replay(client, bodies[:300])
        # The shadow predicts off the request path, in a process of its own: wait for it.
        await asyncio.to_thread(app.state.predictor.shadow.join, 120.0)
        shadow = report(project, ENDPOINT, strategy="shadow")
        # Through the admin API, as an operator or a CI job would start it.
        started = await client.post(
            f"/v1/deployments/{ENDPOINT}/canary",
            json={
                "model": candidate,
                "plan": list(CANARY_PLAN),
                "hold_s": 1.0,
                "min_sample": 40,
                "author": AUTHOR,
                "reason": "ramp the retrained model (admin API)",
            },
        )
        if started.status_code != 200:
            raise StateError(f"the admin API refused the canary: {started.text}")
        ticks, more = await _ramp(project, client, bodies)
        sent += more
    return DeploymentDemo(sent, shadow, ticks, history(project, ENDPOINT))


async def _ramp(
    project: Project, client: Any, bodies: list[dict[str, Any]]
) -> tuple[list[Any], int]:
    """Replay traffic and tick the controller until the canary is promoted or rolled back."""
    from keel.deploy.controller import tick
    from keel.deploy.gates import GateConfig

    # Replayed traffic has no labels yet: the performance gate is left to production. With a
    # few hundred requests per step, the distributions are compared by a test that accounts
    # for the sample size (Kolmogorov-Smirnov) rather than PSI's fixed threshold.
    config = GateConfig(performance_metric="off", distribution_test="ks")
    ticks = []
    sent = 0
    for round_ in range(12):
        await asyncio.sleep(0.3)  # the server re-reads the deployment state
        start = (round_ * 250) % max(1, len(bodies) - 250)
        sent += await _replay(client, bodies[start : start + 250])
        await asyncio.sleep(1.0)  # the step's hold
        result = tick(project, ENDPOINT, config=config)
        ticks.append(result)
        if result.action in ("promoted", "rolled_back", "idle"):
            break
    return ticks, sent


async def _replay(client: Any, bodies: list[dict[str, Any]]) -> int:
    for body in bodies:
        response = await client.post(f"/v1/endpoints/{ENDPOINT}/predict", json=body)
        response.raise_for_status()
    return len(bodies)


def _requests(transactions: pd.DataFrame) -> list[dict[str, Any]]:
    """The last day's transactions as prediction requests (entity keys + request fields)."""
    end = transactions["event_timestamp"].max()
    last = transactions[transactions["event_timestamp"] > end - _day()].head(3000)
    return [
        {
            "row": {
                "user_id": int(u),
                "merchant_id": int(m),
                "amount": float(a),
                "channel": str(c),
                "event_timestamp": t.isoformat(),
            }
        }
        for u, m, a, c, t in zip(
            last["user_id"],
            last["merchant_id"],
            last["amount"],
            last["channel"],
            last["event_timestamp"],
            strict=True,
        )
    ]


def _day() -> Any:
    from datetime import timedelta

    return timedelta(days=1)
