"""The canary controller over synthetic prediction logs: ramps, rollbacks, waits, restarts."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keel.core.timeutil import at_ms
from keel.deploy import controller
from keel.deploy.controller import CONTROLLER, TickResult, running_canaries, tick, watch
from keel.deploy.gates import GateConfig
from keel.deploy.history import history
from keel.deploy.spec import DeploymentSpec
from keel.deploy.state import deploy, get_deployment, pause, start_canary
from keel.errors import InvalidInputError
from keel.project import Project
from keel.registry import register_model_version
from keel.serving.feedback import FeedbackLog
from keel.serving.predlog import PredictionLog

T0 = 1_800_000_000_000  # epoch ms of the scripted clock
EP = "fraud-ep"
ROWS = 150  # per variant and step; the canaries below need 100


def predict(frame: Any) -> list[int]:
    return [0] * len(frame)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Deployment changes happen at clock[0] ms, so a step's start is known exactly."""
    now = [T0]
    monkeypatch.setattr("keel.deploy.records.now_ms", lambda: now[0])
    return now


def canary_project(
    project: Project, *, hold: float = 2.0, plan: tuple[float, ...] = (10, 50, 100)
) -> Project:
    for _ in range(2):
        register_model_version(project, predict, "fraud", flavor="pyfunc")
    deploy(project, EP, "fraud@1", reason="launch")
    start_canary(project, EP, "fraud@2", plan=plan, hold=hold, min_sample=100)
    return project


def log_step(
    project: Project,
    start_ms: int,
    *,
    seed: int,
    n: int = ROWS,
    errors: float = 0.0,
    slow: float = 1.0,
    shift: float = 0.0,
    informative: bool = True,
    labels: bool = True,
) -> None:
    """``n`` rows per variant logged just after ``start_ms``, labelled through feedback.

    A good canary (the defaults) behaves exactly like the primary; each keyword spoils one
    aspect of the canary only.
    """
    folder = project.root / project.config.serving.prediction_log
    predictions, feedback = PredictionLog(folder), FeedbackLog(folder)
    rng = np.random.default_rng(seed)
    truth = rng.beta(2, 5, n)
    outcome = (rng.random(n) < truth).astype(int)
    latency = rng.lognormal(math.log(2000), 0.3, n)
    for variant in ("primary", "canary"):
        canary = variant == "canary"
        scores = truth if informative or not canary else rng.permutation(truth)
        scores = np.clip(scores + (shift if canary else 0.0), 0.0, 1.0)
        failed = rng.random(n) < (errors if canary else 0.0)
        for i in range(n):
            rid = f"{seed}-{variant}-{i}"
            predictions.append(
                {
                    "request_id": rid,
                    "time_us": (start_ms + 1) * 1000 + i,
                    "endpoint": EP,
                    "variant": variant,
                    "model": "fraud",
                    "model_version": 2 if canary else 1,
                    "features": {"amount": float(i)},
                    "prediction": None if failed[i] else float(scores[i]),
                    "latency_us": int(latency[i] * (slow if canary else 1.0)),
                    "status": 500 if failed[i] else 200,
                }
            )
            if labels:
                feedback.attach(rid, label=int(outcome[i]))
    predictions.close()
    feedback.close()


def step_start(project: Project) -> int:
    canary = get_deployment(project, EP).spec.canary
    assert canary is not None
    return canary.step_started_at


def test_good_canary_is_advanced_step_by_step_to_promotion(
    project: Project, clock: list[int]
) -> None:
    canary_project(project)
    log_step(project, T0, seed=1)
    early = tick(project, EP, now=at_ms(T0 + 500))
    assert early.action == "waiting"
    assert early.message == "wait: every gate passes at step 1 of 3 (10 %); hold ends in 1.5 s"
    assert early.hold_left_s == pytest.approx(1.5)
    assert get_deployment(project, EP).version == 2  # waiting changes nothing

    clock[0] = T0 + 5_000
    first = tick(project, EP, now=at_ms(T0 + 2_000))
    assert (first.action, first.step, first.percent, first.version) == ("advanced", 1, 50, 3)
    assert step_start(project) == T0 + 5_000
    # Idempotent: the new step has no rows yet, so a second tick waits and says so.
    again = tick(project, EP, now=at_ms(T0 + 5_000))
    assert again.action == "waiting"
    assert "canary needs 100 more rows (0 of 100)" in again.message
    assert "hold ends in 2.0 s" in again.message

    log_step(project, T0 + 5_000, seed=2)
    clock[0] = T0 + 9_000
    last = tick(project, EP, now=at_ms(T0 + 7_000))
    assert last.action == "promoted"
    assert last.changed
    assert get_deployment(project, EP).spec == DeploymentSpec("fraud@2")
    events = history(project, EP)
    assert [(e.action, e.author) for e in events[2:]] == [
        ("advance", CONTROLLER),
        ("advance", CONTROLLER),
    ]
    assert events[2].reason is not None
    assert events[2].reason.startswith("advance: every gate passed (sample, error_rate")
    assert "at step 1 of 3 (10 %) after a 2.0 s hold" in events[2].reason
    assert tick(project, EP).action == "idle"


@pytest.mark.parametrize(
    ("spoil", "gate"),
    [
        ({"errors": 0.4}, "error_rate"),
        ({"slow": 4.0}, "latency_p99"),
        ({"shift": 0.4}, "prediction_distribution"),
        ({"informative": False}, "performance"),
    ],
)
def test_failing_candidate_is_rolled_back_naming_the_gate(
    sqlite_project: Project, clock: list[int], spoil: dict[str, Any], gate: str
) -> None:
    project = canary_project(sqlite_project, hold=3600)
    log_step(project, T0, seed=3, **spoil)
    clock[0] = T0 + 1_000
    result = tick(project, EP, now=at_ms(T0 + 1_000))  # long before the hold ends
    assert result.action == "rolled_back", result.message
    assert result.decision is not None
    assert result.decision.failed == [gate]
    assert get_deployment(project, EP).spec == DeploymentSpec("fraud@1")
    event = history(project, EP)[-1]
    assert (event.action, event.author) == ("rollback", CONTROLLER)
    assert event.reason is not None
    assert event.reason.startswith(f"roll back: {gate} failed (")
    assert event.reason.endswith("at step 1 of 3 (10 %)")


def test_too_little_traffic_or_no_labels_waits_and_says_so(
    sqlite_project: Project, clock: list[int]
) -> None:
    project = canary_project(sqlite_project)
    log_step(project, T0, seed=4, n=30)
    thin = tick(project, EP, now=at_ms(T0 + 60_000))
    assert thin.action == "waiting"
    assert "primary needs 70 more rows (30 of 100)" in thin.message
    assert "canary needs 70 more rows (30 of 100)" in thin.message
    assert "hold ends" not in thin.message  # the hold is over; only traffic is missing

    log_step(project, T0 + 10, seed=5, labels=False)
    unlabelled = tick(project, EP, now=at_ms(T0 + 60_000))
    assert unlabelled.action == "waiting"
    assert unlabelled.decision is not None
    assert unlabelled.decision.waiting == ["performance"]
    assert "canary needs 70 more labels (30 of 100)" in unlabelled.message
    # Turning the performance gate off lets the same traffic advance the ramp.
    off = tick(project, EP, now=at_ms(T0 + 60_000), config=GateConfig(performance_metric="off"))
    assert off.action == "advanced"
    assert get_deployment(project, EP).version == 3


def test_restart_mid_ramp_resumes_from_the_stored_step(
    project: Project, project_dir: Path, clock: list[int]
) -> None:
    canary_project(project)
    log_step(project, T0, seed=6)
    clock[0] = T0 + 3_000
    assert tick(project, EP, now=at_ms(T0 + 3_000)).action == "advanced"
    url = project.config.metadata.url
    project.close()

    restarted = Project(project_dir, overrides={"metadata.url": url}, environ={})
    try:
        resumed = tick(restarted, EP, now=at_ms(T0 + 3_500))
        assert (resumed.action, resumed.step, resumed.percent) == ("waiting", 1, 50)
        log_step(restarted, T0 + 3_000, seed=7)
        clock[0] = T0 + 6_000
        assert tick(restarted, EP, now=at_ms(T0 + 6_000)).action == "promoted"
        assert get_deployment(restarted, EP).spec.primary == "fraud@2"
    finally:
        restarted.close()


def test_a_change_during_the_analysis_is_never_overwritten(
    sqlite_project: Project, clock: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = canary_project(sqlite_project)
    log_step(project, T0, seed=8)
    real = controller.evaluate_canary

    def evaluate_then_pause(*args: Any, **kwargs: Any) -> Any:
        decision = real(*args, **kwargs)
        pause(project, EP, reason="a person looks into it")  # lands between read and act
        return decision

    monkeypatch.setattr(controller, "evaluate_canary", evaluate_then_pause)
    result = tick(project, EP, now=at_ms(T0 + 3_000))
    assert result.action == "skipped"
    assert "changed to version 3" in result.message
    spec = get_deployment(project, EP).spec
    assert spec.canary is not None
    assert (spec.canary.status, spec.canary.step) == ("paused", 0)
    monkeypatch.setattr(controller, "evaluate_canary", real)
    assert tick(project, EP).message == "the canary is paused; nothing to do"


def test_concurrent_ticks_advance_a_step_once(sqlite_project: Project, clock: list[int]) -> None:
    project = canary_project(sqlite_project, plan=(10, 20, 50, 100))
    log_step(project, T0, seed=9)
    clock[0] = T0 + 3_000
    barrier = threading.Barrier(3)
    results: list[TickResult] = []

    def run() -> None:
        barrier.wait()
        results.append(tick(project, EP, now=at_ms(T0 + 3_000)))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.action for r in results).count("advanced") == 1
    assert {r.action for r in results} <= {"advanced", "skipped", "waiting"}
    assert [e.action for e in history(project, EP)].count("advance") == 1
    spec = get_deployment(project, EP).spec
    assert spec.canary is not None
    assert spec.canary.step == 1


def test_watch_ticks_running_canaries_until_stopped(
    sqlite_project: Project, clock: list[int]
) -> None:
    project = canary_project(sqlite_project, hold=0)
    deploy(project, "other", "fraud@1")
    assert running_canaries(project) == [EP]
    log_step(project, T0, seed=10, errors=0.5)
    stop = threading.Event()
    seen: list[TickResult] = []

    def record(result: TickResult) -> None:
        seen.append(result)
        stop.set()

    assert watch(project, [], 0.01, stop, on_result=record) == 1
    assert [(r.endpoint, r.action) for r in seen] == [(EP, "rolled_back")]
    assert running_canaries(project) == []

    stop.clear()
    errors: list[TickResult] = []
    watch(project, ["no-such"], 0.01, stop, on_result=lambda r: (errors.append(r), stop.set()))
    assert errors[0].action == "error"
    assert "no deployment" in errors[0].message
    with pytest.raises(InvalidInputError, match="interval 0"):
        watch(project, [], 0, stop)


def test_tick_refuses_a_naive_now(sqlite_project: Project, clock: list[int]) -> None:
    from datetime import datetime

    project = canary_project(sqlite_project)
    with pytest.raises(InvalidInputError, match="no time zone"):
        tick(project, EP, now=datetime(2027, 1, 1))
