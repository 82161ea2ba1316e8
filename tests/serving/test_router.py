"""Deployment-aware routing in the model server, in-process: canary and A/B splits by unit,
sticky assignment, per-row variants in the response and the log, and a spec change picked up
while serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import given
from hypothesis import strategies as st

import keel
from keel.config import EndpointConfig
from keel.deploy.spec import CanaryState, DeploymentSpec, assign
from keel.deploy.state import deploy, get_deployment, start_ab, start_canary
from keel.errors import InvalidInputError, StoreError
from keel.project import Project
from keel.serving.app import create_app
from keel.serving.predict import Predictor
from keel.serving.predlog import PredictionLog
from keel.serving.router import split, unit_of
from tests.serving.test_app import PLAIN, Client, Served, build_project, logged

# plain@2: the same columns, the opposite labels, so its predictions differ from plain@1's.
FLIPPED = [1, 0, 1, 0, 1, 0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    served = build_project(tmp_path_factory.mktemp("router") / "proj")
    yield Models.build(served)
    served.project.close()


class Models:
    """The project of test_app plus plain@2 (flipped labels) and plain@3 (other columns)."""

    def __init__(self, served: Served, second: Any) -> None:
        self.served = served
        self.project: Project = served.project
        self.first = served.plain
        self.second = second

    @classmethod
    def build(cls, served: Served) -> Models:
        from sklearn.linear_model import LogisticRegression

        frame = pd.DataFrame(PLAIN, columns=["a", "b"])
        second = LogisticRegression().fit(frame, FLIPPED)
        with keel.start_run("plain2", project=served.project) as run:
            run.log_model(second, "plain", input_example=frame.head(2))
        other = pd.DataFrame(PLAIN, columns=["a", "c"])
        with keel.start_run("plain3", project=served.project) as run:
            run.log_model(LogisticRegression().fit(other, FLIPPED), "plain", input_example=other)
        return cls(served, second)

    def expected(self, version: int, a: float, b: float) -> float:
        model = self.first if version == 1 else self.second
        return float(model.predict_proba(pd.DataFrame({"a": [a], "b": [b]}))[0, 1])


@contextmanager
def serve(
    project: Project,
    names: list[str],
    configs: dict[str, EndpointConfig] | None = None,
    **settings: Any,
) -> Iterator[Client]:
    """An app serving plain@1 under each of ``names`` (or ``configs``), lifespan running."""
    endpoints = configs or {name: EndpointConfig(model="plain@1") for name in names}
    log = PredictionLog(project.root / "predictions")
    app = create_app(project, endpoints=endpoints, log=log, **settings)
    lifespan = app.router.lifespan_context(app)
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(lifespan):
        client = Client(portal, app)
        yield client
        portal.call(client.http.aclose)
    log.close()


def predictor(client: Client) -> Predictor:
    found: Predictor = client.app.state.predictor
    return found


def rows_for(units: list[str]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    return [
        {"a": float(a), "b": float(b), "unit": u}
        for u, (a, b) in zip(units, rng.random((len(units), 2)), strict=True)
    ]


def predict(client: Client, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post(f"/v1/endpoints/{name}/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_canary_share_is_sticky_per_unit_and_logged(models: Models) -> None:
    project = models.project
    deploy(project, "canary25", "plain@1", reason="test")
    start_canary(project, "canary25", "plain@2", plan=[25, 100], hold=0, min_sample=0)
    spec = get_deployment(project, "canary25").spec
    units = [f"user-{i}" for i in range(2000)]
    rows = rows_for(units)
    with serve(project, ["canary25"]) as client:
        body = predict(client, "canary25", rows)
        variants = body["variants"]
        assert set(variants) == {"primary", "canary"}
        assert variants == [assign(spec, json.dumps([u])) for u in units]
        share = variants.count("canary") / len(units)
        assert 0.21 <= share <= 0.29
        assert body["model_versions"] == [2 if v == "canary" else 1 for v in variants]
        assert body["variant"] == variants[0]
        assert body["model_version"] == body["model_versions"][0]
        # Each row answered by its variant's model.
        for row, version, prediction in list(
            zip(rows, body["model_versions"], body["predictions"], strict=True)
        )[:200]:
            assert prediction == pytest.approx(models.expected(version, row["a"], row["b"]))
        # The same units, in another order and other batches, keep their variants.
        again = {}
        for start in (1500, 0, 700):
            part = rows[start : start + 800][::-1]
            answer = predict(client, "canary25", part)
            again.update({r["unit"]: v for r, v in zip(part, answer["variants"], strict=True)})
        assert again == dict(zip(units, variants, strict=True))
        records = logged(project.root / "predictions", body["request_ids"])
    assert len(records) == len(units)
    for request_id, variant, version, unit in zip(
        body["request_ids"], variants, body["model_versions"], units, strict=True
    ):
        assert (records[request_id]["variant"], records[request_id]["model_version"]) == (
            variant,
            version,
        )
        # The unit is logged too, for analyses that count and compare units.
        assert json.loads(records[request_id]["extra_json"])["unit"] == json.dumps([unit])


def test_ab_arms_split_by_weight_and_answer_with_their_models(models: Models) -> None:
    project = models.project
    arms = {"control": "plain@1", "treatment": "plain@2"}
    start_ab(project, "abtest", arms, weights={"control": 0.3, "treatment": 0.7}, salt="s1")
    units = [f"visitor-{i}" for i in range(1000)]
    rows = rows_for(units)
    with serve(project, ["abtest"]) as client:
        body = predict(client, "abtest", rows)
        served = {r["unit"]: v for r, v in zip(rows, body["variants"], strict=True)}
        assert set(served.values()) == {"control", "treatment"}
        assert 0.25 <= list(served.values()).count("control") / len(units) <= 0.35
        assert body["model_versions"] == [1 if v == "control" else 2 for v in body["variants"]]
        for row, version, prediction in list(
            zip(rows, body["model_versions"], body["predictions"], strict=True)
        )[:100]:
            assert prediction == pytest.approx(models.expected(version, row["a"], row["b"]))
        records = logged(project.root / "predictions", body["request_ids"])
        assert {records[i]["variant"] for i in body["request_ids"]} == {"control", "treatment"}
        # V2 reports the first row's variant and model version.
        v2 = client.post(
            "/v2/models/abtest/infer",
            json={
                "inputs": [
                    {"name": "a", "shape": [1], "datatype": "FP64", "data": [rows[0]["a"]]},
                    {"name": "b", "shape": [1], "datatype": "FP64", "data": [rows[0]["b"]]},
                    {"name": "unit", "shape": [1], "datatype": "BYTES", "data": [rows[0]["unit"]]},
                ]
            },
        )
        assert v2.status_code == 200, v2.text
        assert v2.json()["parameters"]["variant"] == served[units[0]]


def test_a_spec_change_is_picked_up_on_refresh_without_errors(
    models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = models.project
    row = {"a": 0.3, "b": 0.6}
    with serve(project, ["switch"], refresh_s=3600) as client:
        router = predictor(client).router
        assert router.route("switch").source == "config"
        assert predict(client, "switch", [row])["model_versions"] == [1]
        deploy(project, "switch", "plain@2", reason="release v2")
        # Not re-read yet: the loaded route keeps serving.
        assert predict(client, "switch", [row])["model_versions"] == [1]
        assert router.refresh() == ["switch"]
        body = predict(client, "switch", [row])
        assert body["model_versions"] == [2]
        assert body["predictions"] == pytest.approx([models.expected(2, 0.3, 0.6)])
        ready = client.get("/ready").json()
        assert ready["endpoints"]["switch"] == "plain@2"
        assert router.refresh() == []  # unchanged: nothing reloaded
        # A spec whose model cannot load leaves the old route serving.
        deploy(project, "switch", "plain@1", reason="back")

        def broken(*_args: Any) -> Any:
            raise StoreError("artifact store unreachable")

        monkeypatch.setattr(router.registry, "load_endpoint", broken)
        assert router.refresh() == []
        assert predict(client, "switch", [row])["model_versions"] == [2]
        monkeypatch.undo()
        assert router.refresh() == ["switch"]
        assert predict(client, "switch", [row])["model_versions"] == [1]


def test_the_periodic_refresh_switches_a_serving_app(
    models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from keel.serving.router import Router

    built_on: list[int] = []
    real_build = Router._build

    def build(self: Router, *args: Any) -> Any:
        built_on.append(threading.get_ident())
        return real_build(self, *args)

    monkeypatch.setattr(Router, "_build", build)
    project = models.project
    with serve(project, ["periodic"], refresh_s=0.02) as client:
        loop_thread = client.portal.call(threading.get_ident)
        assert predict(client, "periodic", [{"a": 0.1, "b": 0.2}])["model_versions"] == [1]
        built_on.clear()
        deploy(project, "periodic", "plain@2", reason="release")
        versions: list[int] = []
        for _ in range(500):  # waits for the background task, bounded so a bug cannot hang
            versions = predict(client, "periodic", [{"a": 0.1, "b": 0.2}])["model_versions"]
            if versions == [2]:
                break
            time.sleep(0.01)
        assert versions == [2]
    # The new model was loaded on a worker thread, not on the loop serving the requests.
    assert built_on
    assert loop_thread not in built_on


def test_entity_keys_make_the_unit(models: Models) -> None:
    project = models.project
    start_ab(project, "fraud", {"control": "fraud@1", "treatment": "fraud@1"}, salt="k")
    spec = get_deployment(project, "fraud").spec
    endpoints = {"fraud": EndpointConfig(model="fraud@live", features="fraud")}
    with serve(project, [], endpoints) as client:
        assert predictor(client).router.route("fraud").primary.keys == ["user_id"]
        rows = [{"user_id": 1, "amount": 5.0}, {"user_id": 2, "amount": 7.0}] * 3
        body = predict(client, "fraud", rows)
    expected = [assign(spec, unit_of(r, ["user_id"], "x")) for r in rows]
    assert body["variants"] == expected
    assert body["predictions"] == pytest.approx(
        [models.served.expected_fraud(r["user_id"], r["amount"]) for r in rows]
    )


def test_unit_of_is_typed_and_falls_back_to_the_request() -> None:
    assert unit_of({"user_id": 7}, ["user_id"], "r") == "[7]"
    assert unit_of({"user_id": "7"}, ["user_id"], "r") == '["7"]'
    assert unit_of({"k": 1, "j": "x", "unit": "u"}, ["k", "j"], "r") == '[1,"x"]'
    assert unit_of({"unit": 5}, [], "r") == "[5]"
    assert unit_of({"a": 1.0}, [], "req-1") == "req-1"


@given(st.lists(st.sampled_from(["primary", "canary", "control", "treatment"]), max_size=50))
def test_split_partitions_rows_in_order(variants: list[str]) -> None:
    groups = split(variants)
    assert sorted(i for positions in groups.values() for i in positions) == list(
        range(len(variants))
    )
    for variant, positions in groups.items():
        assert positions == sorted(positions)
        assert all(variants[i] == variant for i in positions)
    assert list(groups) == list(dict.fromkeys(variants))


@given(st.text(max_size=20))
def test_the_same_unit_always_gets_the_same_variant(unit: str) -> None:
    canary = CanaryState((25.0, 100.0), 0, 0.0, 0, 0, salt="s")
    spec = DeploymentSpec("m@1", "canary", candidate="m@2", canary=canary)
    first = assign(spec, unit_of({"unit": unit}, [], "r1"))
    assert assign(spec, unit_of({"unit": unit, "a": 1}, [], "r2")) == first


@pytest.mark.parametrize("refresh_s", [0.0, -1.0, float("nan")])
def test_a_bad_refresh_interval_is_refused(models: Models, refresh_s: float) -> None:
    with pytest.raises(InvalidInputError, match="refresh_s"):
        create_app(
            models.project, endpoints={"x": EndpointConfig(model="plain@1")}, refresh_s=refresh_s
        )
