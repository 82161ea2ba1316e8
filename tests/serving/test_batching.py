"""Requests predicted together (keel.serving.batching): each answered with its own rows, ids
and errors, logged and counted per request, as if it had been predicted alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keel.errors import InvalidInputError, KeelError, NotFoundError
from keel.serving.batching import Batcher
from keel.serving.predict import Predictor, Served
from keel.serving.predlog import read_predictions
from tests.serving import test_app
from tests.serving.test_app import Client
from tests.serving.test_app import Served as ServedProject

# The served project and in-process server of test_app, built once for this module too.
served = test_app.served
log_folder = test_app.log_folder
client = test_app.client

REQUESTS: list[list[dict[str, Any]]] = [
    [{"user_id": 1, "amount": 20.0}],
    [{"user_id": 2, "amount": 8.0}, {"user_id": 1, "amount": 3.0}],
    [{"user_id": 2, "amount": 50.0}],
]


def predictor_of(client: Client) -> Predictor:
    predictor: Predictor = client.app.state.predictor
    return predictor


def counter(client: Client, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_a_merged_pass_answers_each_request_with_its_own_rows(
    client: Client, served: ServedProject, log_folder: Path
) -> None:
    before = counter(client, "keel_requests_total", endpoint="fraud", status="ok")
    results = predictor_of(client).predict_batch("fraud", REQUESTS)
    assert all(isinstance(result, Served) for result in results)
    answers = [result for result in results if isinstance(result, Served)]
    for rows, answer in zip(REQUESTS, answers, strict=True):
        expected = [served.expected_fraud(r["user_id"], r["amount"]) for r in rows]
        assert answer.predictions == pytest.approx(expected, rel=1e-12)
        assert len(answer.request_ids) == len(rows)
        assert answer.variants == ["primary"] * len(rows)
        assert answer.endpoint.version.ref == "fraud@1"
    ids = [i for answer in answers for i in answer.request_ids]
    assert len(set(ids)) == 4
    logged = [r for r in read_predictions(log_folder).to_pylist() if r["request_id"] in ids]
    assert sorted(r["request_id"] for r in logged) == sorted(ids)  # each row once
    after = counter(client, "keel_requests_total", endpoint="fraud", status="ok")
    assert after - before == 3  # requests, not passes


def test_a_bad_request_fails_alone(client: Client, served: ServedProject) -> None:
    errors_before = counter(client, "keel_requests_total", endpoint="fraud", status="error")
    ok_before = counter(client, "keel_requests_total", endpoint="fraud", status="ok")
    batch: list[object] = [
        REQUESTS[0],
        [{"user_id": "seven", "amount": 1.0}],  # a join key of the wrong type
        REQUESTS[2],
        [],  # no rows
    ]
    results = predictor_of(client).predict_batch("fraud", batch)
    assert [type(r).__name__ for r in results] == [
        "Served",
        "InvalidInputError",
        "Served",
        "InvalidInputError",
    ]
    assert "user_id" in str(results[1])
    first, third = results[0], results[2]
    assert isinstance(first, Served)
    assert isinstance(third, Served)
    assert first.predictions == pytest.approx([served.expected_fraud(1, 20.0)], rel=1e-12)
    assert third.predictions == pytest.approx([served.expected_fraud(2, 50.0)], rel=1e-12)
    errors = counter(client, "keel_requests_total", endpoint="fraud", status="error")
    ok = counter(client, "keel_requests_total", endpoint="fraud", status="ok")
    assert (errors - errors_before, ok - ok_before) == (2, 2)


def test_requests_waiting_together_are_predicted_in_one_pass(
    client: Client, served: ServedProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = predictor_of(client)
    passes: list[int] = []
    original = predictor.predict_batch

    def recording(name: str, requests: Any) -> list[Served | KeelError]:
        passes.append(len(requests))
        return original(name, requests)

    monkeypatch.setattr(predictor, "predict_batch", recording)
    batcher = Batcher(predictor)
    requests: list[list[dict[str, Any]]] = [
        [{"user_id": 1 + i % 2, "amount": float(i)}] for i in range(12)
    ]
    requests[5] = [{"user_id": 1}]  # lacks the request field 'amount'

    async def all_at_once() -> list[Served | BaseException]:
        calls = [batcher.predict("fraud", rows) for rows in requests]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = client.portal.call(all_at_once)
    assert passes == [12]
    for i, (rows, result) in enumerate(zip(requests, results, strict=True)):
        if i == 5:
            assert isinstance(result, InvalidInputError)
            assert "amount" in str(result)
            continue
        assert isinstance(result, Served)
        row = rows[0]
        expected = served.expected_fraud(row["user_id"], row["amount"])
        assert result.predictions == pytest.approx([expected], rel=1e-12)

    async def alone() -> Served:
        return await batcher.predict("fraud", requests[0])

    assert isinstance(client.portal.call(alone), Served)
    assert passes == [12, 1]  # nothing else waiting: predicted at once, alone


def test_an_unknown_endpoint_fails_every_waiting_request(client: Client) -> None:
    batcher = Batcher(predictor_of(client))

    async def both() -> list[Served | BaseException]:
        calls = [batcher.predict("nope", [{"a": 1}]) for _ in range(2)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = client.portal.call(both)
    assert all(isinstance(result, NotFoundError) for result in results)


def test_concurrent_http_requests_each_get_their_own_answer(
    client: Client, served: ServedProject
) -> None:
    bodies: list[dict[str, dict[str, Any]]] = [
        {"row": {"user_id": 1 + i % 2, "amount": float(i + 1)}} for i in range(16)
    ]

    async def send_all() -> list[Any]:
        calls = [client.http.post("/v1/endpoints/fraud/predict", json=b) for b in bodies]
        return list(await asyncio.gather(*calls))

    responses = client.portal.call(send_all)
    ids: set[str] = set()
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        row = body["row"]
        expected = served.expected_fraud(row["user_id"], row["amount"])
        assert response.json()["predictions"] == pytest.approx([expected], rel=1e-12)
        ids.update(response.json()["request_ids"])
    assert len(ids) == 16
