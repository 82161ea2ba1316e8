"""The model server in-process (httpx ASGI transport): the native, V2 and MLflow protocols over
a real project — a feature view, an on-demand function, a service, a model trained on the
training set and served by alias — plus errors, the size limit, metrics and the log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keel
from keel.config import EndpointConfig
from keel.features.registry import apply_definitions
from keel.features.store import FeatureStore
from keel.project import Project, init_project
from keel.registry.aliases import set_alias
from keel.serving.app import create_app
from keel.serving.auth import ApiKeys, hash_api_key
from keel.serving.predlog import PredictionLog, read_predictions
from tests.features.store.test_store_on_demand import DEFINITIONS
from tests.support.servers import uvicorn_in_thread

T1 = datetime(2026, 3, 1, tzinfo=UTC)
T2 = datetime(2026, 3, 2, tzinfo=UTC)
SPEND = {1: 9.0, 2: 3.0}
VISITS = {1: 4, 2: 5}
PLAIN = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1], [0.1, 0.7], [0.8, 0.3]])


@dataclass
class Served:
    """A served project: its fraud model (features + request field) and a plain model."""

    project: Project
    fraud: Any  # the sklearn estimator behind fraud@live
    plain: Any  # the sklearn estimator behind plain@1

    def expected_fraud(self, user_id: int, amount: float) -> float:
        ratio = amount / (SPEND[user_id] + 1.0)
        frame = pd.DataFrame(
            {"visits": [VISITS[user_id]], "amount_ratio": [ratio], "amount": [amount]}
        )
        return float(self.fraud.predict_proba(frame)[0, 1])


def build_project(root: Path) -> Served:
    """Feature view + on-demand ratio + service 'fraud'; fraud@1 (alias live) trained inside a
    run on the service's training set; plain@1 on two columns without features."""
    from sklearn.linear_model import LogisticRegression

    init_project(root)
    project = Project(root, environ={})
    (root / "data" / "users").mkdir(parents=True)
    table = pa.table(
        {
            "user_id": pa.array([1, 2], pa.int64()),
            "event_ts": pa.array([T1, T1], pa.timestamp("us", "UTC")),
            "spend": [SPEND[1], SPEND[2]],
            "visits": pa.array([VISITS[1], VISITS[2]], pa.int64()),
        }
    )
    pq.write_table(table, root / "data" / "users" / "a.parquet")
    (root / "features.py").write_text(DEFINITIONS)
    apply_definitions(project)
    amounts = [1.0, 30.0, 2.0, 25.0, 3.0, 40.0, 1.5, 35.0]
    entities = pa.table(
        {
            "user_id": pa.array([1, 2] * 4, pa.int64()),
            "ts": pa.array([T2] * 8, pa.timestamp("us", "UTC")),
            "amount": amounts,
        }
    )
    labels = [0, 1, 0, 1, 0, 1, 0, 1]
    with FeatureStore(project) as store:
        store.materialize(start=T1, end=T2)
        with keel.start_run("fraud", project=project) as run:
            training = store.get_training_set(entities, service="fraud", timestamp_column="ts")
            frame = training.table.to_pandas()[["visits", "amount_ratio", "amount"]]
            fraud = LogisticRegression().fit(frame, labels)
            run.log_model(fraud, "fraud", input_example=frame.head(2))
    plain_frame = pd.DataFrame(PLAIN, columns=["a", "b"])
    plain = LogisticRegression().fit(plain_frame, [0, 1, 0, 1, 0, 1])
    with keel.start_run("plain", project=project) as run:
        run.log_model(plain, "plain", input_example=plain_frame.head(2))
    set_alias(project, "fraud", "live", 1, reason="test")
    return Served(project, fraud, plain)


ENDPOINTS = {
    "fraud": EndpointConfig(model="fraud@live", features="fraud"),
    "plain": EndpointConfig(model="plain@1"),
}


class Client:
    """Sync calls into an app running its lifespan on a portal's event loop."""

    def __init__(self, portal: BlockingPortal, app: FastAPI) -> None:
        self.portal = portal
        self.app = app
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self.http.get(url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self.http.post(url, **kwargs))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    result = build_project(tmp_path_factory.mktemp("serve") / "proj")
    yield result
    result.project.close()


@pytest.fixture(scope="module")
def log_folder(served: Served) -> Path:
    return served.project.root / "predictions"


@pytest.fixture(scope="module")
def client(served: Served, log_folder: Path) -> Iterator[Client]:
    log = PredictionLog(log_folder)
    app = create_app(served.project, endpoints=ENDPOINTS, log=log)
    with start_blocking_portal() as portal:
        lifespan = portal.wrap_async_context_manager(app.router.lifespan_context(app))
        with lifespan:
            c = Client(portal, app)
            yield c
            portal.call(c.http.aclose)


@contextmanager
def real_server(served: Served) -> Iterator[int]:
    """The served project's app behind a real uvicorn server on loopback; yields its port."""
    log = PredictionLog(served.project.root / "predictions")
    app = create_app(served.project, endpoints=ENDPOINTS, log=log)
    with uvicorn_in_thread(app) as port:
        yield port


def logged(folder: Path, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    table = read_predictions(folder).to_pylist()
    return {row["request_id"]: row for row in table if row["request_id"] in request_ids}


# -- native ------------------------------------------------------------------------------------


def test_native_batch_uses_online_features_and_logs_every_row(
    client: Client, served: Served, log_folder: Path
) -> None:
    rows = [{"user_id": 1, "amount": 20.0}, {"user_id": 2, "amount": 8.0}]
    response = client.post("/v1/endpoints/fraud/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 1
    assert body["model"] == "fraud"
    assert body["variant"] == "primary"
    expected = [served.expected_fraud(1, 20.0), served.expected_fraud(2, 8.0)]
    assert body["predictions"] == pytest.approx(expected)
    assert len(set(body["request_ids"])) == 2
    records = logged(log_folder, body["request_ids"])
    first = records[body["request_ids"][0]]
    assert first["endpoint"] == "fraud"
    assert first["model_version"] == 1
    assert first["status"] == 200
    assert json.loads(first["features_json"]) == {
        "visits": 4,
        "amount_ratio": 2.0,
        "amount": 20.0,
    }
    assert first["prediction"] == pytest.approx(expected[0])


def test_native_single_row_without_features(client: Client, served: Served) -> None:
    response = client.post("/v1/endpoints/plain/predict", json={"row": {"a": 0.9, "b": 0.1}})
    assert response.status_code == 200, response.text
    expected = served.plain.predict_proba(pd.DataFrame({"a": [0.9], "b": [0.1]}))[0, 1]
    assert response.json()["predictions"] == pytest.approx([expected])


@pytest.mark.parametrize(
    ("url", "body", "status", "named"),
    [
        ("/v1/endpoints/nope/predict", {"row": {"a": 1}}, 404, "'nope'"),
        ("/v1/endpoints/plain/predict", {"row": {"a": 1.0}}, 422, "'b'"),
        ("/v1/endpoints/plain/predict", {"row": {"a": "x", "b": 1.0}}, 422, "'a'"),
        ("/v1/endpoints/fraud/predict", {"row": {"amount": 1.0}}, 422, "user_id"),
        ("/v1/endpoints/fraud/predict", {"row": {"user_id": [1], "amount": 1.0}}, 422, "user_id"),
        ("/v1/endpoints/fraud/predict", {"row": {"user_id": 1}}, 422, "amount"),
        ("/v1/endpoints/plain/predict", {"rows": []}, 422, "rows"),
        ("/v1/endpoints/plain/predict", {"rows": [1, 2]}, 422, "rows.0"),
        ("/v1/endpoints/plain/predict", {}, 422, "'rows'"),
        ("/v1/endpoints/plain/predict", {"row": {"a": 1}, "rows": []}, 422, "'rows'"),
        ("/v1/endpoints/plain/predict", {"row": {"a": None, "b": 1.0}}, 422, "plain@1"),
    ],
)
def test_bad_native_requests_get_a_4xx_naming_the_field(
    client: Client, url: str, body: dict[str, Any], status: int, named: str
) -> None:
    response = client.post(url, json=body)
    assert response.status_code == status, response.text
    assert named in response.json()["error"]


def test_malformed_json_is_a_422(client: Client) -> None:
    response = client.post(
        "/v1/endpoints/plain/predict",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert "invalid request" in response.json()["error"]


def test_a_body_over_the_limit_is_refused_with_413(client: Client, served: Served) -> None:
    limit = served.project.config.serving.max_request_bytes
    rows = [{"a": 0.5, "b": 0.5}] * (limit // 10)
    response = client.post("/v1/endpoints/plain/predict", json={"rows": rows})
    assert response.status_code == 413
    assert str(limit) in response.json()["error"]

    async def chunks() -> Any:  # no content-length: the limit still holds
        for _ in range(limit // 1000 + 2):
            yield b" " * 1000

    streamed = client.post("/v1/endpoints/plain/predict", content=chunks())
    assert streamed.status_code == 413


# -- V2 ----------------------------------------------------------------------------------------


def test_v2_health_metadata_and_infer(client: Client, served: Served) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/fraud/ready").status_code == 200
    meta = client.get("/v2/models/fraud").json()
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "user_id", "datatype": "INT64", "shape": [-1]},
        {"name": "amount", "datatype": "FP64", "shape": [-1]},
    ]
    assert meta["outputs"] == [{"name": "probability", "datatype": "FP64", "shape": [-1]}]
    request = {
        "id": "req-1",
        "inputs": [
            {"name": "user_id", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]},
            {"name": "amount", "shape": [2], "datatype": "FP64", "data": [20.0, 8.0]},
        ],
    }
    answer = client.post("/v2/models/fraud/versions/1/infer", json=request).json()
    assert answer["id"] == "req-1"
    assert answer["model_version"] == "1"
    [output] = answer["outputs"]
    assert output["name"] == "probability"
    assert output["shape"] == [2]
    expected = [served.expected_fraud(1, 20.0), served.expected_fraud(2, 8.0)]
    assert output["data"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("url", "body", "status", "named"),
    [
        ("/v2/models/nope/infer", {"inputs": []}, 404, "'nope'"),
        ("/v2/models/plain/versions/9/infer", {"inputs": []}, 404, "9"),
        ("/v2/models/plain/infer", {"inputs": "x"}, 400, "inputs"),
        (
            "/v2/models/plain/infer",
            {"inputs": [{"name": "a", "shape": [3], "datatype": "FP64", "data": [1.0]}]},
            400,
            "'a'",
        ),
        (
            "/v2/models/plain/infer",
            {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
            400,
            "'b'",
        ),
    ],
)
def test_bad_v2_requests_get_a_4xx(
    client: Client, url: str, body: dict[str, Any], status: int, named: str
) -> None:
    response = client.post(url, json=body)
    assert response.status_code == status, response.text
    assert named in response.json()["error"]


# -- MLflow ------------------------------------------------------------------------------------

PLAIN_ROWS = [{"a": 0.9, "b": 0.1}, {"a": 0.1, "b": 0.8}]


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[0.9, 0.1], [0.1, 0.8]]}},
        {"dataframe_records": PLAIN_ROWS},
        {"instances": PLAIN_ROWS},
        {"instances": [[0.9, 0.1], [0.1, 0.8]]},
        {"inputs": {"a": [0.9, 0.1], "b": [0.1, 0.8]}},
        {"inputs": PLAIN_ROWS},
    ],
)
def test_invocations_accepts_every_mlflow_form(
    client: Client, served: Served, body: dict[str, Any]
) -> None:
    response = client.post("/invocations?endpoint=plain", json=body)
    assert response.status_code == 200, response.text
    expected = served.plain.predict_proba(pd.DataFrame(PLAIN_ROWS))[:, 1]
    assert response.json()["predictions"] == pytest.approx(list(expected))


def test_invocations_picks_the_endpoint_by_header(client: Client, served: Served) -> None:
    body = {"dataframe_records": [{"user_id": 2, "amount": 8.0}]}
    response = client.post("/invocations", json=body, headers={"X-Keel-Endpoint": "fraud"})
    assert response.json()["predictions"] == pytest.approx([served.expected_fraud(2, 8.0)])


@pytest.mark.parametrize(
    ("url", "body", "status", "named"),
    [
        ("/invocations", {"instances": PLAIN_ROWS}, 422, "?endpoint=NAME"),
        ("/invocations?endpoint=nope", {"instances": PLAIN_ROWS}, 404, "'nope'"),
        ("/invocations?endpoint=plain", {"rows": PLAIN_ROWS}, 422, "dataframe_split"),
        ("/invocations?endpoint=plain", {"instances": [[1.0]]}, 422, "instances[0]"),
        (
            "/invocations?endpoint=plain",
            {"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}},
            422,
            "dataframe_split.data[0]",
        ),
    ],
)
def test_bad_invocations_get_a_4xx(
    client: Client, url: str, body: dict[str, Any], status: int, named: str
) -> None:
    response = client.post(url, json=body)
    assert response.status_code == status, response.text
    assert named in response.json()["message"]


# -- health, metrics, logs, openapi -----------------------------------------------------------


def test_health_ready_and_openapi(client: Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["endpoints"] == {"fraud": "fraud@1", "plain": "plain@1"}
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/endpoints/{name}/predict" in paths
    assert "/invocations" in paths


def test_metrics_count_requests_errors_and_rows(client: Client) -> None:
    def sample(text: str, name: str, **labels: str) -> float:
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(name + "{") and all(p in line for p in wanted.split(",")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = client.get("/metrics").text
    labels = {"endpoint": "plain", "variant": "primary", "model_version": "1"}
    client.post("/v1/endpoints/plain/predict", json={"rows": PLAIN_ROWS})
    client.post("/v1/endpoints/plain/predict", json={"row": {"a": 1.0}})
    after = client.get("/metrics").text
    for name, extra, delta in [
        ("keel_requests_total", {"status": "ok"}, 1),
        ("keel_requests_total", {"status": "error"}, 1),
        ("keel_request_errors_total", {"code": "422"}, 1),
        ("keel_predictions_total", {}, 2),
        ("keel_request_latency_seconds_count", {}, 1),
        ("keel_model_seconds_count", {}, 1),
        ("keel_feature_lookup_seconds_count", {}, 1),
    ]:
        grown = sample(after, name, **labels, **extra) - sample(before, name, **labels, **extra)
        assert grown == delta, name


def test_access_log_is_one_json_line_per_request(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="keel.serving.access"):
        client.get("/v1/endpoints/plain/predict")  # wrong method: 405
    [entry] = [json.loads(r.message) for r in caplog.records if r.name == "keel.serving.access"]
    assert entry["method"] == "GET"
    assert entry["path"] == "/v1/endpoints/plain/predict"
    assert entry["status"] == 405


# -- never a 500 for user input --------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
ROWS = st.lists(
    st.dictionaries(st.sampled_from(["a", "b", "user_id", "amount", "x"]), JSON_VALUES),
    max_size=3,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=ROWS,
    endpoint=st.sampled_from(["fraud", "plain"]),
    form=st.sampled_from(["native", "v2", "records", "split", "raw"]),
    raw=JSON_VALUES,
)
def test_arbitrary_json_never_gets_a_5xx(
    client: Client, rows: list[dict[str, Any]], endpoint: str, form: str, raw: Any
) -> None:
    if form == "native":
        response = client.post(f"/v1/endpoints/{endpoint}/predict", json={"rows": rows})
    elif form == "v2":
        inputs = [
            {"name": k, "shape": [1], "datatype": "FP64", "data": [v]}
            for row in rows
            for k, v in row.items()
        ]
        response = client.post(f"/v2/models/{endpoint}/infer", json={"inputs": inputs})
    elif form == "records":
        response = client.post(f"/invocations?endpoint={endpoint}", json={"instances": rows})
    elif form == "split":
        body = {"dataframe_split": {"columns": ["a", "b"], "data": raw}}
        response = client.post(f"/invocations?endpoint={endpoint}", json=body)
    else:
        response = client.post(f"/v1/endpoints/{endpoint}/predict", json=raw)
    assert response.status_code < 500, response.text


# -- API keys ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(served: Served, log_folder: Path) -> Iterator[Client]:
    keys = ApiKeys.from_values(predict=[hash_api_key("p-key")], admin=["a-key"])
    app = create_app(
        served.project, endpoints={"plain": ENDPOINTS["plain"]}, log=None, api_keys=keys
    )
    app.state.predictor.log = PredictionLog(log_folder)
    with start_blocking_portal() as portal:
        lifespan = portal.wrap_async_context_manager(app.router.lifespan_context(app))
        with lifespan:
            c = Client(portal, app)
            yield c
            portal.call(c.http.aclose)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-API-Key": hash_api_key("p-key")}, 401),  # the stored hash is not a key
        ({"Authorization": "Bearer p-key"}, 200),
        ({"X-API-Key": "p-key"}, 200),
        ({"X-API-Key": "a-key"}, 200),  # an admin key may predict too
    ],
)
def test_prediction_needs_a_known_key(keyed: Client, headers: dict[str, str], status: int) -> None:
    response = keyed.post(
        "/v1/endpoints/plain/predict", json={"row": {"a": 1.0, "b": 0.0}}, headers=headers
    )
    assert response.status_code == status, response.text
    if status == 401:
        assert "API key" in response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_probes_are_open_and_admin_routes_need_an_admin_key(keyed: Client) -> None:
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/ready").status_code == 200
    assert keyed.get("/v2/health/ready").status_code == 200
    assert keyed.get("/v2/models/plain").status_code == 401
    denied = keyed.post("/v1/deployments/plain", headers={"X-API-Key": "p-key"})
    assert denied.status_code == 403
    assert "admin key" in denied.json()["error"]
    # An admin key passes the check: the route answers (plain has no deployment yet).
    allowed = keyed.get("/v1/deployments/plain", headers={"X-API-Key": "a-key"})
    assert allowed.status_code == 404
    assert "plain" in allowed.json()["error"]


def test_a_malformed_key_hash_is_a_config_error() -> None:
    from keel.errors import ConfigError

    with pytest.raises(ConfigError, match="sha256"):
        ApiKeys.from_values(predict=["sha256:abc"], admin=[])


def test_before_the_models_load_nothing_is_ready(served: Served) -> None:
    import anyio

    app = create_app(served.project, endpoints=ENDPOINTS, log=None)  # lifespan not run

    async def calls() -> list[tuple[int, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            responses = [
                await http.get("/health"),
                await http.get("/ready"),
                await http.get("/v2/health/ready"),
                await http.post("/v1/endpoints/plain/predict", json={"row": {"a": 1, "b": 1}}),
            ]
        return [(r.status_code, r.json()) for r in responses]

    health, ready, v2_ready, predict = anyio.run(calls)
    assert health[0] == 200
    assert ready == (503, {"ready": False, "endpoints": {}})
    assert v2_ready == (503, {"ready": False})
    assert predict[0] == 503
    assert "still loading" in predict[1]["error"]
