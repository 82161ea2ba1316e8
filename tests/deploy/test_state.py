"""Deployment state: transitions, events, 'what served at T', concurrency and assignment."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.timeutil import at_ms
from keel.deploy.history import history, served_at
from keel.deploy.spec import ABState, CanaryState, DeploymentSpec, assign
from keel.deploy.state import (
    advance,
    deploy,
    get_deployment,
    pause,
    promote,
    resume,
    rollback,
    start_ab,
    start_canary,
    start_shadow,
    stop,
)
from keel.errors import InvalidInputError, NotFoundError, StateError
from keel.project import Project
from keel.registry import register_model_version, set_alias, transition

T0 = 1_800_000_000_000  # a fixed epoch-ms origin for scripted clocks


def predict(frame: Any) -> list[int]:
    return [0] * len(frame)


@pytest.fixture
def fraud(project: Project) -> Project:
    """The project with model 'fraud' at versions 1-4 and 'champion' on version 2."""
    for _ in range(4):
        register_model_version(project, predict, "fraud", flavor="pyfunc")
    set_alias(project, "fraud", "champion", 2)
    return project


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A settable clock for deployment changes: every change made now happens at clock[0] ms."""
    now = [T0]
    monkeypatch.setattr("keel.deploy.records.now_ms", lambda: now[0])
    return now


def test_deploy_resolves_alias_and_records_event(fraud: Project) -> None:
    result = deploy(fraud, "fraud-ep", "fraud@champion", reason="first", author="ann")
    assert result.spec == DeploymentSpec("fraud@2")
    assert result.version == 1
    assert get_deployment(fraud, "fraud-ep") == result
    set_alias(fraud, "fraud", "champion", 3)  # an alias move changes nothing that is served
    assert get_deployment(fraud, "fraud-ep").spec.primary == "fraud@2"
    (event,) = history(fraud, "fraud-ep")
    assert (event.version, event.action, event.author, event.reason) == (
        1,
        "deploy",
        "ann",
        "first",
    )
    assert event.spec == result.spec
    latest = deploy(fraud, "fraud-ep", "fraud")
    assert (latest.spec.primary, latest.version) == ("fraud@4", 2)
    assert history(fraud, "fraud-ep")[1].author == fraud.user


def test_canary_ramp_to_promotion(fraud: Project, clock: list[int]) -> None:
    deploy(fraud, "ep", "fraud@1")
    clock[0] = T0 + 10
    started = start_canary(fraud, "ep", "fraud@2", plan=[5, 50, 100], hold=timedelta(hours=1))
    canary = started.spec.canary
    assert canary == CanaryState((5.0, 50.0, 100.0), 0, 3600.0, 500, T0 + 10, "running", "ep")
    assert (started.spec.strategy, started.spec.candidate) == ("canary", "fraud@2")
    clock[0] = T0 + 20
    stepped = advance(fraud, "ep", reason="gates passed")
    assert stepped.spec.canary is not None
    assert (stepped.spec.canary.step, stepped.spec.canary.percent) == (1, 50.0)
    assert stepped.spec.canary.step_started_at == T0 + 20
    with pytest.raises(StateError, match="runs a canary deployment"):
        start_canary(fraud, "ep", "fraud@3")  # a canary runs: stop it first
    done = advance(fraud, "ep")  # the next step is 100 %: promotion
    assert done.spec == DeploymentSpec("fraud@2")
    assert done.version == 4
    events = history(fraud, "ep")
    assert [e.action for e in events] == ["deploy", "start_canary", "advance", "advance"]
    assert [e.version for e in events] == [1, 2, 3, 4]
    assert events[2].reason == "gates passed"
    with pytest.raises(StateError, match="single"):
        advance(fraud, "ep")


def test_pause_resume_rollback(fraud: Project, clock: list[int]) -> None:
    deploy(fraud, "ep", "fraud@1")
    clock[0] = T0 + 1
    start_canary(fraud, "ep", "fraud@3")
    clock[0] = T0 + 2
    paused = pause(fraud, "ep", reason="weekend")
    assert paused.spec.canary is not None
    assert paused.spec.canary.status == "paused"
    assert paused.spec.canary.step_started_at == T0 + 1
    with pytest.raises(StateError, match="resume it first"):
        advance(fraud, "ep")
    with pytest.raises(StateError, match="paused, not running"):
        pause(fraud, "ep")
    clock[0] = T0 + 3
    resumed = resume(fraud, "ep")
    assert resumed.spec.canary is not None
    assert resumed.spec.canary.status == "running"
    assert resumed.spec.canary.step_started_at == T0 + 3  # the hold starts again
    with pytest.raises(StateError, match="already running"):
        resume(fraud, "ep")
    back = rollback(fraud, "ep", reason="p99 too high")
    assert back.spec == DeploymentSpec("fraud@1")
    assert history(fraud, "ep")[-1].reason == "p99 too high"


def test_shadow_promote_and_ab_stop(fraud: Project) -> None:
    deploy(fraud, "ep", "fraud@1")
    shadow = start_shadow(fraud, "ep", "fraud@champion")
    assert shadow.spec == DeploymentSpec("fraud@1", "shadow", candidate="fraud@2")
    assert promote(fraud, "ep").spec == DeploymentSpec("fraud@2")
    ab = start_ab(
        fraud,
        "ep",
        {"control": "fraud@2", "treatment": "fraud@4"},
        weights={"control": 0.3, "treatment": 0.7},
        salt="exp-1",
    )
    expected = ABState(
        {"control": "fraud@2", "treatment": "fraud@4"}, {"control": 0.3, "treatment": 0.7}, "exp-1"
    )
    assert ab.spec == DeploymentSpec("fraud@2", "ab", ab=expected)
    assert ab.spec.model_for("treatment") == "fraud@4"
    with pytest.raises(StateError, match="ab deployment"):
        promote(fraud, "ep")
    assert stop(fraud, "ep").spec == DeploymentSpec("fraud@2")
    with pytest.raises(StateError, match="stop"):
        stop(fraud, "ep")
    default = start_ab(fraud, "ep", {"a": "fraud@1", "b": "fraud@2", "c": "fraud@3"})
    assert default.spec.ab is not None
    assert default.spec.ab.weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert default.spec.ab.salt  # a fresh salt per test
    actions = [e.action for e in history(fraud, "ep")]
    assert actions == ["deploy", "start_shadow", "promote", "start_ab", "stop", "start_ab"]


BAD_CALLS: list[tuple[Any, type[Exception], str]] = [
    (lambda p: deploy(p, "ep2", "fraud@9"), NotFoundError, "version 9"),
    (lambda p: deploy(p, "ep2", "nope@1"), NotFoundError, "'nope' is not registered"),
    (lambda p: deploy(p, "bad name", "fraud@1"), InvalidInputError, "endpoint name"),
    (
        lambda p: start_canary(p, "ep", "fraud@2", plan=[5, 1, 100]),
        InvalidInputError,
        "increasing",
    ),
    (lambda p: start_canary(p, "ep", "fraud@2", plan=[1, 50]), InvalidInputError, "end at 100"),
    (
        lambda p: start_canary(p, "ep", "fraud@2", plan=[0, 100]),
        InvalidInputError,
        r"\(0, 100\]",
    ),
    (lambda p: start_canary(p, "ep", "fraud@2", hold=-1), InvalidInputError, "negative"),
    (lambda p: start_canary(p, "ep", "fraud@1"), InvalidInputError, "already is the primary"),
    (lambda p: start_canary(p, "nowhere", "fraud@2"), NotFoundError, "keel deploy set"),
    (lambda p: start_shadow(p, "ep", "fraud@1"), InvalidInputError, "already is the primary"),
    (
        lambda p: start_ab(
            p,
            "ep",
            {"control": "fraud@1", "treatment": "fraud@2"},
            weights={"control": 0.5, "treatment": 0.6},
        ),
        InvalidInputError,
        "sum to 1.1, not 1",
    ),
    (
        lambda p: start_ab(p, "ep", {"control": "fraud@1", "shadow": "fraud@2"}),
        InvalidInputError,
        "arm name 'shadow'",
    ),
    (lambda p: start_ab(p, "ep", {"control": "fraud@1"}), InvalidInputError, "two arms"),
    (lambda p: advance(p, "ep"), StateError, "single deployment"),
    (lambda p: pause(p, "ep"), StateError, "single deployment"),
    (lambda p: rollback(p, "ep"), StateError, "single deployment"),
    (lambda p: get_deployment(p, "nowhere"), NotFoundError, "deployed endpoints: ep"),
    (lambda p: history(p, "nowhere"), NotFoundError, "no deployment"),
]


def test_bad_transitions_name_the_fix(fraud: Project) -> None:
    deploy(fraud, "ep", "fraud@1")
    for call, error, message in BAD_CALLS:
        with pytest.raises(error, match=message):
            call(fraud)
    assert get_deployment(fraud, "ep").version == 1  # nothing was written
    assert len(history(fraud, "ep")) == 1


def test_archived_version_cannot_be_deployed(fraud: Project) -> None:
    transition(fraud, "fraud", 4, "archived", reason="bad")
    with pytest.raises(StateError, match="fraud@4 is archived"):
        deploy(fraud, "ep", "fraud@4")


def test_served_at_answers_for_any_time(fraud: Project, clock: list[int]) -> None:
    deploy(fraud, "ep", "fraud@1")
    clock[0] = T0 + 1_000
    start_canary(fraud, "ep", "fraud@2", plan=[10, 100])
    clock[0] = T0 + 2_000
    advance(fraud, "ep")
    clock[0] = T0 + 3_000
    deploy(fraud, "ep", "fraud@3")

    def at(ms: int) -> DeploymentSpec | None:
        return served_at(fraud, "ep", at_ms(ms))

    assert at(T0 - 1) is None
    assert at(T0) == DeploymentSpec("fraud@1")  # a change at exactly T is in force at T
    assert at(T0 + 999) == DeploymentSpec("fraud@1")
    during = at(T0 + 1_500)
    assert during is not None
    assert (during.strategy, during.candidate) == ("canary", "fraud@2")
    assert at(T0 + 2_000) == DeploymentSpec("fraud@2")
    assert at(T0 + 10**9) == DeploymentSpec("fraud@3")
    with pytest.raises(InvalidInputError, match="time zone"):
        served_at(fraud, "ep", datetime(2030, 1, 1))
    with pytest.raises(NotFoundError):
        served_at(fraud, "other", datetime(2030, 1, 1, tzinfo=UTC))


WORKERS, EACH = 4, 5


def _worker(root: str, url: str, worker: int) -> list[int]:
    """Runs in a fresh process: EACH changes of endpoint 'race' (the first may create it)."""
    project = Project(root, overrides={"metadata.url": url}, environ={})
    try:
        return [
            deploy(project, "race", f"fraud@{1 + (worker + i) % 4}", author=f"w{worker}").version
            for i in range(EACH)
        ]
    finally:
        project.close()


@pytest.mark.slow
def test_concurrent_changes_serialize(fraud: Project, project_dir: Path) -> None:
    url = fraud.config.metadata.url
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as pool:
        results = pool.starmap(_worker, [(str(project_dir), url, w) for w in range(WORKERS)])
    everyone = sorted(v for versions in results for v in versions)
    assert everyone == list(range(1, WORKERS * EACH + 1))  # no gap, no duplicate
    for versions in results:
        assert versions == sorted(versions)
    events = history(fraud, "race")
    assert [e.version for e in events] == everyone
    assert Counter(e.author for e in events) == {f"w{w}": EACH for w in range(WORKERS)}
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))
    assert get_deployment(fraud, "race").spec == events[-1].spec


def test_racing_first_deployments_all_land(fraud: Project) -> None:
    """Creators of a new endpoint race on its primary key (no row to lock yet): all land."""
    for round_ in range(5):
        endpoint = f"new-{round_}"
        barrier = threading.Barrier(3)
        errors: list[BaseException] = []

        def create(
            barrier: threading.Barrier = barrier,
            endpoint: str = endpoint,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                deploy(fraud, endpoint, "fraud@1")
            except BaseException as exc:  # surfaced below, with the test's own assertion
                errors.append(exc)

        threads = [threading.Thread(target=create) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert [e.version for e in history(fraud, endpoint)] == [1, 2, 3]


# --- assignment (pure) ------------------------------------------------------------------------


def _canary(percent: float, salt: str = "ep") -> DeploymentSpec:
    state = CanaryState(
        (percent, 100.0) if percent < 100 else (100.0,), 0, 1.0, 1, 0, "running", salt
    )
    return DeploymentSpec("m@1", "canary", candidate="m@2", canary=state)


def _ab(weights: dict[str, float], salt: str = "s") -> DeploymentSpec:
    arms = {arm: f"m@{i + 1}" for i, arm in enumerate(weights)}
    return DeploymentSpec("m@1", "ab", ab=ABState(arms, weights, salt))


units = st.text(min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(unit=units, low=st.floats(0.5, 99), high=st.floats(0.5, 99), salt=st.text(max_size=10))
def test_canary_assignment_is_sticky_and_monotone(
    unit: str, low: float, high: float, salt: str
) -> None:
    low, high = sorted((low, high))
    small, large = _canary(low, salt), _canary(high, salt)
    assert assign(small, unit) == assign(DeploymentSpec.from_dict(small.to_dict()), unit)
    if assign(small, unit) == "canary":
        assert assign(large, unit) == "canary"  # a ramp never moves a unit back out


@settings(max_examples=200, deadline=None)
@given(unit=units, first=st.floats(0, 1))
def test_ab_assignment_is_sticky_and_lands_in_an_arm(unit: str, first: float) -> None:
    spec = _ab({"control": first, "treatment": 1 - first})
    variant = assign(spec, unit)
    assert variant == assign(spec, unit) == assign(DeploymentSpec.from_dict(spec.to_dict()), unit)
    assert variant in {arm for arm, w in spec.ab.weights.items() if w > 0}  # type: ignore[union-attr]


def test_single_and_shadow_serve_the_primary() -> None:
    assert assign(DeploymentSpec("m@1"), "u") == "primary"
    assert assign(DeploymentSpec("m@1", "shadow", candidate="m@2"), "u") == "primary"


@pytest.mark.parametrize("percent", [1, 5, 10, 25, 50])
def test_canary_share_matches_step(percent: int) -> None:
    spec = _canary(percent)
    share = sum(assign(spec, f"user-{i}") == "canary" for i in range(20_000)) / 20_000
    assert abs(share - percent / 100) <= 0.015


def test_ab_shares_match_weights() -> None:
    weights = {"control": 0.2, "treatment": 0.5, "holdout": 0.3}
    counts = Counter(assign(_ab(weights, "exp"), f"user-{i}") for i in range(20_000))
    for arm, weight in weights.items():
        assert abs(counts[arm] / 20_000 - weight) <= 0.015
    other = Counter(assign(_ab(weights, "exp-2"), f"user-{i}") for i in range(2_000))
    assert other != Counter(assign(_ab(weights, "exp"), f"user-{i}") for i in range(2_000))
