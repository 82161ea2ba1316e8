"""Shadow traffic: the candidate's predictions are logged under the same request ids, off the
response path; a full queue drops and counts copies; a failing candidate changes nothing for
the client."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from keel.deploy.state import deploy, start_shadow
from keel.errors import InvalidInputError
from keel.serving.endpoints import Endpoint
from keel.serving.metrics import ServerMetrics
from keel.serving.predlog import read_predictions
from keel.serving.shadow import Shadow, ShadowJob, ShadowQueue, predict_copies
from keel.serving.shadow_process import ShadowProcess
from tests.serving.test_router import Client, Models, predict, predictor, rows_for, serve
from tests.serving.test_router import models as models  # the module fixture, re-exported


def shadow_of(client: Client) -> Shadow:
    queue = predictor(client).shadow
    assert queue is not None
    return queue


def by_variant(client: Client, request_ids: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    folder = client.app.state.predictor.log.folder
    wanted = set(request_ids)
    return {
        (row["request_id"], row["variant"]): row
        for row in read_predictions(folder).to_pylist()
        if row["request_id"] in wanted
    }


def dropped(client: Client, endpoint: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf'keel_shadow_dropped_total{{endpoint="{endpoint}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(params=[True, False], ids=["process", "thread"])
def shadowed(models: Models, request: pytest.FixtureRequest) -> Iterator[Client]:
    """An endpoint shadowed by plain@2 — in a separate process, or in a server thread."""
    deploy(models.project, "shadowed", "plain@1", reason="test")
    start_shadow(models.project, "shadowed", "plain@2", reason="compare v2")
    with serve(models.project, ["shadowed"], shadow_process=request.param) as client:
        yield client


@pytest.fixture
def shadowed_thread(models: Models) -> Iterator[Client]:
    """Shadowed in a server thread, where a test can swap the candidate's model."""
    deploy(models.project, "shadowed", "plain@1", reason="test")
    start_shadow(models.project, "shadowed", "plain@2", reason="compare v2")
    with serve(models.project, ["shadowed"], shadow_process=False) as client:
        yield client


def test_shadow_predictions_are_logged_under_the_same_request_ids(
    shadowed: Client, models: Models
) -> None:
    rows = rows_for([f"u{i}" for i in range(30)])
    ids: list[str] = []
    for start in range(0, 30, 10):
        body = predict(shadowed, "shadowed", rows[start : start + 10])
        assert body["variants"] == ["primary"] * 10
        assert body["model_versions"] == [1] * 10
        part = rows[start : start + 10]
        expected = [models.expected(1, r["a"], r["b"]) for r in part]
        assert body["predictions"] == pytest.approx(expected)
        ids += body["request_ids"]
    assert shadow_of(shadowed).join(timeout_s=60)
    records = by_variant(shadowed, ids)
    assert len(records) == 2 * len(ids)
    for request_id, row in zip(ids, rows, strict=True):
        primary, copy = records[request_id, "primary"], records[request_id, "shadow"]
        assert (primary["model_version"], copy["model_version"]) == (1, 2)
        assert copy["status"] == 200
        assert copy["prediction"] == pytest.approx(models.expected(2, row["a"], row["b"]))
    assert dropped(shadowed, "shadowed") == 0
    shadow_requests = 'keel_requests_total{endpoint="shadowed",model_version="2",status="ok",'
    shadow_requests += 'variant="shadow"} 3.0'
    assert shadow_requests in shadowed.get("/metrics").text  # counted in the server


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice values are Linux's here")
def test_the_shadow_process_runs_at_the_lowest_priority_and_ends_with_the_server(
    models: Models,
) -> None:
    deploy(models.project, "niced", "plain@1", reason="test")
    start_shadow(models.project, "niced", "plain@2", reason="compare v2")
    with serve(models.project, ["niced"], shadow_process=True) as client:
        shadow = shadow_of(client)
        assert isinstance(shadow, ShadowProcess)
        assert shadow.pid is not None  # started with the server, as the route has a shadow
        body = predict(client, "niced", rows_for(["n1", "n2"]))
        assert shadow.join(timeout_s=60)
        pid = shadow.pid
        assert pid is not None
        assert pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
        assert os.getpriority(os.PRIO_PROCESS, os.getpid()) < 19
        records = by_variant(client, body["request_ids"])
        assert {records[i, "shadow"]["status"] for i in body["request_ids"]} == {200}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped with the server


class Exploding:
    """A model that fails the way a broken candidate would."""

    def predict_proba(self, data: object) -> Any:
        raise RuntimeError("candidate crashed")


class Blocking:
    """A model that holds the shadow worker until released."""

    def __init__(self, release: threading.Event, real: Any) -> None:
        self.release = release
        self.real = real

    def predict_proba(self, data: object) -> Any:
        self.release.wait(30)
        return self.real.predict_proba(data)


def test_a_crashing_candidate_never_affects_responses(
    shadowed_thread: Client, models: Models
) -> None:
    shadowed = shadowed_thread
    candidate = predictor(shadowed).router.route("shadowed").shadow
    assert candidate is not None
    candidate.model = cast(Any, Exploding())
    candidate.fast = None  # the stand-in is called through predict_proba, not a matrix
    rows = rows_for(["x", "y", "z"])
    body = predict(shadowed, "shadowed", rows)
    assert body["predictions"] == pytest.approx([models.expected(1, r["a"], r["b"]) for r in rows])
    shadow_of(shadowed).join()
    records = by_variant(shadowed, body["request_ids"])
    assert [records[i, "shadow"]["status"] for i in body["request_ids"]] == [500] * 3
    assert all(records[i, "shadow"]["prediction"] is None for i in body["request_ids"])
    # The worker survived: a later copy is still predicted (and fails again, still logged).
    again = predict(shadowed, "shadowed", rows[:1])
    shadow_of(shadowed).join()
    assert by_variant(shadowed, again["request_ids"])[again["request_ids"][0], "shadow"]


def test_a_candidate_with_other_inputs_is_logged_as_refused(models: Models) -> None:
    deploy(models.project, "mismatch", "plain@1", reason="test")
    start_shadow(models.project, "mismatch", "plain@3", reason="needs column c")
    with serve(models.project, ["mismatch"], shadow_process=True) as client:
        rows = rows_for(["p", "q"])
        body = predict(client, "mismatch", rows)
        assert body["model_versions"] == [1, 1]
        shadow_of(client).join()
        records = by_variant(client, body["request_ids"])
    assert [records[i, "shadow"]["status"] for i in body["request_ids"]] == [422, 422]


def test_a_full_queue_drops_and_counts_and_never_blocks_responses(models: Models) -> None:
    deploy(models.project, "tiny", "plain@1", reason="test")
    start_shadow(models.project, "tiny", "plain@2", reason="load")
    release = threading.Event()
    with serve(models.project, ["tiny"], shadow_queue_size=1, shadow_process=False) as client:
        candidate = predictor(client).router.route("tiny").shadow
        assert candidate is not None
        candidate.model = cast(Any, Blocking(release, models.second))
        candidate.fast = None  # the stand-in is called through predict_proba, not a matrix
        ids = []
        for i in range(8):
            # Answered while the worker is stuck: responses never wait for the shadow.
            ids += predict(client, "tiny", rows_for([f"t{i}"]))["request_ids"]
        lost = dropped(client, "tiny")
        assert 6 <= lost <= 7  # at most one copy in the worker and one in the queue
        release.set()
        shadow_of(client).join()
        records = by_variant(client, ids)
    shadow_ids = {request_id for request_id, variant in records if variant == "shadow"}
    assert len(shadow_ids) == 8 - lost
    assert sum(variant == "primary" for _, variant in records) == 8


def test_the_queue_alone_drops_beyond_its_size() -> None:
    metrics = ServerMetrics()
    queue = ShadowQueue(None, metrics, size=3)  # not started: nothing is consumed
    candidate = cast(Endpoint, SimpleNamespace(name="ep"))
    job = ShadowJob(candidate, [{"a": 1}], {}, ["r"], 0)
    assert [queue.submit(job) for _ in range(10)] == [True] * 3 + [False] * 7
    text = metrics.render()[0].decode()
    assert 'keel_shadow_dropped_total{endpoint="ep"} 7.0' in text


@pytest.mark.parametrize("size", [0, -1, True, 2.5])
def test_a_bad_queue_size_is_refused(size: Any) -> None:
    with pytest.raises(InvalidInputError, match="whole number"):
        ShadowQueue(None, ServerMetrics(), size=size)


def test_a_server_without_a_shadow_starts_no_process(models: Models) -> None:
    deploy(models.project, "alone", "plain@1", reason="test")
    with serve(models.project, ["alone"], shadow_process=True) as client:
        predict(client, "alone", rows_for(["a1"]))
        shadow = shadow_of(client)
        assert isinstance(shadow, ShadowProcess)
        assert shadow.pid is None


class Records:
    """A prediction sink keeping what it is given."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)


def test_copies_predicted_together_are_each_logged_as_alone(
    shadowed_thread: Client, models: Models
) -> None:
    candidate = predictor(shadowed_thread).router.route("shadowed").shadow
    assert candidate is not None
    jobs = [
        ShadowJob(candidate, rows_for([f"g{i}", f"h{i}"]), {}, [f"m{i}a", f"m{i}b"], 1000 + i)
        for i in range(3)
    ]
    bad = ShadowJob(candidate, [{"a": 0.5}], {}, ["bad"], 2000)  # lacks column b
    together, alone = Records(), Records()
    outcomes = predict_copies(candidate, [*jobs, bad], together)
    for job in jobs:
        predict_copies(candidate, [job], alone)
    assert [(o.status, o.rows) for o in outcomes] == [(200, 2)] * 3 + [(422, 1)]
    assert together.records[:6] == [
        {**record, "latency_us": together.records[i]["latency_us"]}
        for i, record in enumerate(alone.records)
    ]
    by_id = {r["request_id"]: r for r in together.records}
    for job in jobs:
        for request_id, row in zip(job.request_ids, job.rows, strict=True):
            assert by_id[request_id]["time_us"] == job.time_us
            expected = models.expected(2, row["a"], row["b"])
            assert by_id[request_id]["prediction"] == pytest.approx(expected)
    assert (by_id["bad"]["status"], by_id["bad"]["prediction"]) == (422, None)
