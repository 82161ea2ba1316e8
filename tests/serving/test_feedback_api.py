"""POST /v1/feedback: labels and outcomes joined to logged predictions by request id."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from keel.project import Project
from keel.serving.app import create_app
from keel.serving.predlog import PredictionLog, read_predictions


@pytest.fixture
def app(sqlite_project: Project) -> FastAPI:
    folder = sqlite_project.root / sqlite_project.config.serving.prediction_log
    log = PredictionLog(folder)
    for request_id in ("r1", "r2"):
        log.append(
            {
                "request_id": request_id,
                "time_us": 1_700_000_000_000_000,
                "endpoint": "fraud",
                "variant": "primary",
                "model": "fraud",
                "model_version": 1,
                "features": {"x": 1.0},
                "prediction": 0.4,
                "latency_us": 900,
                "status": 200,
            }
        )
    log.close()
    return create_app(sqlite_project, endpoints={})


async def post(app: FastAPI, body: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://keel") as client,
    ):
        return await client.post("/v1/feedback", json=body)


@pytest.mark.anyio
async def test_feedback_is_joined_to_its_prediction(app: FastAPI, sqlite_project: Project) -> None:
    response = await post(app, {"request_id": "r1", "label": 1})
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    batch = {"items": [{"request_id": "r2", "outcome": 12.5, "time": "2026-03-01T12:00:00Z"}]}
    assert (await post(app, batch)).json() == {"accepted": 1}
    folder = sqlite_project.root / sqlite_project.config.serving.prediction_log
    table = read_predictions(folder).sort_by("request_id").to_pydict()
    assert table["request_id"] == ["r1", "r2"]
    assert table["label"][0] == 1
    assert table["outcome"][1] == 12.5


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"request_id": "r1"}, "neither 'label' nor 'outcome'"),
        ({"label": 1}, "exactly one of"),
        ({"request_id": "r1", "label": 1, "time": "2026-03-01T12:00:00"}, "no time zone"),
        ({"request_id": "", "label": 1}, "request_id"),
        ({"request_id": "r1", "label": 1, "extra": 2}, "extra"),
    ],
)
async def test_bad_feedback_is_a_4xx_naming_the_problem(
    app: FastAPI, body: object, field: str
) -> None:
    response = await post(app, body)
    assert 400 <= response.status_code < 500
    assert field in response.text
