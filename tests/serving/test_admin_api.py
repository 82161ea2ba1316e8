"""The admin API: deployments read and changed over HTTP, the same transitions as
`keel deploy`, recorded with author and reason, served at once by the server that took them."""

from __future__ import annotations

from typing import Any

import pytest

from keel.deploy.records import get_deployment
from keel.errors import NotFoundError
from keel.serving.auth import ApiKeys, hash_api_key
from tests.serving import test_router
from tests.serving.test_app import Client
from tests.serving.test_router import Models, predictor, serve

models = test_router.models  # the module fixture: plain@1, plain@2, plain@3


def post(client: Client, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_a_rollout_driven_over_http(models: Models) -> None:
    project = models.project
    with serve(project, ["live"]) as client:
        base = "/v1/deployments/live"
        set_ = post(client, f"{base}/set", {"model": "plain@1", "reason": "first", "author": "ci"})
        assert (set_["spec"]["strategy"], set_["spec"]["primary"]) == ("single", "plain@1")

        shadow = post(client, f"{base}/shadow", {"model": "plain@2", "reason": "compare"})
        assert shadow["spec"]["strategy"] == "shadow"
        route = predictor(client).router.route("live")  # served at once, no refresh wait
        assert route.shadow is not None
        assert route.shadow.version.ref == "plain@2"

        canary = post(
            client,
            f"{base}/canary",
            {"model": "plain@2", "plan": [10, 50, 100], "hold_s": 0, "min_sample": 0},
        )
        assert canary["spec"]["canary"]["plan"] == [10, 50, 100]
        assert canary["spec"]["canary"]["step"] == 0
        assert post(client, f"{base}/pause", {})["spec"]["canary"]["status"] == "paused"
        assert post(client, f"{base}/resume", {})["spec"]["canary"]["status"] == "running"
        assert post(client, f"{base}/advance", {})["spec"]["canary"]["step"] == 1
        promoted = post(client, f"{base}/promote", {"reason": "good"})
        assert (promoted["spec"]["strategy"], promoted["spec"]["primary"]) == (
            "single",
            "plain@2",
        )
        assert predictor(client).router.route("live").primary.version.ref == "plain@2"

        shown = client.get(base).json()
        assert shown["version"] == promoted["version"]
        history = client.get(f"{base}/history").json()
        assert [e["action"] for e in history] == [
            "deploy",
            "start_shadow",
            "start_canary",
            "pause",
            "resume",
            "advance",
            "promote",
        ]
        assert (history[0]["author"], history[0]["reason"]) == ("ci", "first")
        assert history[1]["author"] == "api"
        report = client.get(f"{base}/report")
        assert report.status_code == 200, report.text
        assert report.json()["endpoint"] == "live"
    assert get_deployment(project, "live").spec.primary == "plain@2"


def test_ab_and_stop(models: Models) -> None:
    with serve(models.project, ["split"]) as client:
        base = "/v1/deployments/split"
        post(client, f"{base}/set", {"model": "plain@1"})
        arms = {"control": "plain@1", "treatment": "plain@2"}
        ab = post(
            client, f"{base}/ab", {"arms": arms, "weights": {"control": 0.7, "treatment": 0.3}}
        )
        assert ab["spec"]["strategy"] == "ab"
        assert ab["spec"]["ab"]["weights"] == {"control": 0.7, "treatment": 0.3}
        stopped = post(client, f"{base}/stop", {"reason": "enough"})
        assert stopped["spec"]["strategy"] == "single"


@pytest.mark.parametrize(
    ("path", "body", "status", "named"),
    [
        ("/v1/deployments/bad/canary", {}, 422, "'model'"),
        ("/v1/deployments/bad/ab", {"model": "plain@2"}, 422, "'arms'"),
        ("/v1/deployments/bad/launch", {"model": "plain@2"}, 422, "action"),
        ("/v1/deployments/bad/set", {"model": "plain@1", "colour": "red"}, 422, "colour"),
        ("/v1/deployments/bad/set", {"model": "nope@1"}, 404, "nope"),
        ("/v1/deployments/bad/promote", {}, 409, "promote"),
        ("/v1/deployments/bad/canary", {"model": "plain@2", "plan": [50, 10]}, 422, "plan"),
    ],
)
def test_bad_changes_get_a_4xx_naming_the_problem_and_change_nothing(
    models: Models, path: str, body: dict[str, Any], status: int, named: str
) -> None:
    with serve(models.project, ["bad"]) as client:
        post(client, "/v1/deployments/bad/set", {"model": "plain@1"})
        before = client.get("/v1/deployments/bad").json()
        response = client.post(path, json=body)
        assert response.status_code == status, response.text
        assert named in response.text
        assert client.get("/v1/deployments/bad").json() == before


def test_changes_need_an_admin_key(models: Models) -> None:
    keys = ApiKeys.from_values(predict=[hash_api_key("p")], admin=[hash_api_key("a")])
    with serve(models.project, ["guarded"], api_keys=keys) as client:
        body = {"model": "plain@1"}
        denied = client.post("/v1/deployments/guarded/set", json=body, headers={"X-API-Key": "p"})
        assert denied.status_code == 403
        with pytest.raises(NotFoundError):
            get_deployment(models.project, "guarded")  # nothing was written
        allowed = client.post("/v1/deployments/guarded/set", json=body, headers={"X-API-Key": "a"})
        assert allowed.status_code == 200, allowed.text
