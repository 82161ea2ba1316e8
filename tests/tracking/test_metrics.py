"""Metrics: default steps, batching, latest_metrics under any order and any batch sizes, value
validation. Storage tests run on SQLite and PostgreSQL (the `project` fixture)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from keel.errors import InvalidInputError, StateError
from keel.metadata.schema import latest_metrics, metrics
from keel.project import Project
from keel.tracking import fluent
from keel.tracking.fluent import start_run
from keel.tracking.metric_buffer import MetricBuffer, metric_value

BASE = datetime(2025, 1, 1, tzinfo=UTC)
BASE_MS = int(BASE.timestamp() * 1000)


@pytest.fixture(autouse=True)
def _no_leftover_runs() -> Iterator[None]:
    yield
    for run in list(fluent._OPEN.values()):
        run.end("killed")
    fluent._ACTIVE.set(None)


def tuned(project: Project, **tracking: Any) -> Project:
    """The same database, with other tracking settings."""
    overrides = {"metadata.url": project.config.metadata.url}
    overrides |= {f"tracking.{key}": value for key, value in tracking.items()}
    return Project(project.root, overrides=overrides, environ={})


def points(project: Project, run_id: str) -> list[tuple[str, float, int, int]]:
    query = select(metrics.c.key, metrics.c.value, metrics.c.step, metrics.c.timestamp).where(
        metrics.c.run_id == run_id
    )
    with project.metadata.read() as conn:
        return [tuple(row) for row in conn.execute(query.order_by(metrics.c.id))]  # type: ignore[misc]


def latest(project: Project, run_id: str) -> dict[str, tuple[float, int, int]]:
    query = select(latest_metrics).where(latest_metrics.c.run_id == run_id)
    with project.metadata.read() as conn:
        return {row.key: (row.value, row.step, row.timestamp) for row in conn.execute(query)}


def test_steps_default_to_the_next_step_of_each_key(project: Project) -> None:
    with start_run(project=project) as run:
        for value in (3.0, 2.0, 1.0):
            run.log_metric("loss", value)
        run.log_metric("acc", 0.5)
        run.log_metric("loss", 0.5, step=10)
        run.log_metric("loss", 0.4)  # one past the greatest step: 11
        run.log_metric("loss", 9.9, step=4)  # out of order: does not move the next step back
        run.log_metric("loss", 0.3)
        run.log_metrics({"acc": 0.6, "f1": 0.1})
        run.log_metrics({"acc": 0.7, "f1": 0.2}, step=50)
    got = [(key, value, step) for key, value, step, _ in points(project, run.id)]
    assert got == [
        ("loss", 3.0, 0),
        ("loss", 2.0, 1),
        ("loss", 1.0, 2),
        ("acc", 0.5, 0),
        ("loss", 0.5, 10),
        ("loss", 0.4, 11),
        ("loss", 9.9, 4),
        ("loss", 0.3, 12),
        ("acc", 0.6, 1),
        ("f1", 0.1, 0),
        ("acc", 0.7, 50),
        ("f1", 0.2, 50),
    ]
    summary = {key: (value, step) for key, (value, step, _) in latest(project, run.id).items()}
    assert summary == {"loss": (0.3, 12), "acc": (0.7, 50), "f1": (0.2, 50)}


def test_explicit_timestamps_are_stored_in_epoch_ms(project: Project) -> None:
    with start_run(project=project) as run:
        run.log_metric("m", 1.0, step=0, timestamp=BASE + timedelta(milliseconds=5))
    assert points(project, run.id) == [("m", 1.0, 0, BASE_MS + 5)]


def test_buffer_is_written_at_batch_size_and_on_flush_and_end(project: Project) -> None:
    batched = tuned(project, metric_batch_size=5, flush_seconds=3600)
    try:
        with start_run(project=batched) as run:
            for i in range(4):
                run.log_metric("m", float(i))
            assert points(project, run.id) == []
            run.log_metric("m", 4.0)  # the fifth point fills the batch
            assert len(points(project, run.id)) == 5
            run.log_metric("m", 5.0)
            run.log_metric("m", 6.0)
            assert len(points(project, run.id)) == 5
            run.flush()
            assert len(points(project, run.id)) == 7
            run.log_metric("m", 7.0)
            assert len(points(project, run.id)) == 7
        assert [value for _, value, _, _ in points(project, run.id)] == [float(i) for i in range(8)]
        assert latest(project, run.id)["m"][:2] == (7.0, 7)
    finally:
        batched.close()


def test_buffer_is_written_once_flush_seconds_have_passed(project: Project) -> None:
    timed = tuned(project, metric_batch_size=1000, flush_seconds=0.05)
    try:
        with start_run(project=timed) as run:
            run.log_metric("m", 1.0)
            assert points(project, run.id) == []
            time.sleep(0.06)
            run.log_metric("m", 2.0)  # checked on this call: no background thread
            assert [value for _, value, _, _ in points(project, run.id)] == [1.0, 2.0]
    finally:
        timed.close()


point_lists = st.lists(
    st.tuples(
        st.sampled_from(["loss", "acc"]),
        st.integers(min_value=-2, max_value=4),  # few steps: many ties and reorderings
        st.integers(min_value=0, max_value=2),  # few timestamps: ties on (step, timestamp)
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.booleans(),  # flush after this point
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(logged=point_lists, batch_size=st.integers(min_value=1, max_value=6))
def test_latest_metrics_hold_the_greatest_step_and_timestamp(
    project: Project, logged: list[tuple[str, int, int, float, bool]], batch_size: int
) -> None:
    batched = tuned(project, metric_batch_size=batch_size, flush_seconds=3600)
    try:
        with start_run(project=batched) as run:
            for key, step, offset, value, flush in logged:
                run.log_metric(
                    key, value, step=step, timestamp=BASE + timedelta(milliseconds=offset)
                )
                if flush:
                    run.flush()
    finally:
        batched.close()
    expected_points = sorted((k, v, s, BASE_MS + t) for k, s, t, v, _ in logged)
    assert sorted(points(project, run.id)) == expected_points
    expected_latest: dict[str, tuple[float, int, int]] = {}
    for key, step, offset, value, _ in logged:
        held = expected_latest.get(key)
        # The greatest (step, timestamp); on a tie the point logged last.
        if held is None or (step, BASE_MS + offset) >= (held[1], held[2]):
            expected_latest[key] = (value, step, BASE_MS + offset)
    assert latest(project, run.id) == expected_latest


@pytest.mark.parametrize("value", [math.inf, -math.inf, 0, -3, 1e308, 5e-324])
def test_finite_and_infinite_values_round_trip(project: Project, value: float) -> None:
    with start_run(project=project) as run:
        run.log_metric("m", value)
    assert points(project, run.id)[0][1] == value
    assert latest(project, run.id)["m"][0] == value


def test_numpy_values_are_accepted(sqlite_project: Project) -> None:
    import numpy as np

    with start_run(project=sqlite_project) as run:
        run.log_metric("a", np.float32(0.5))
        run.log_metric("b", np.int64(3))
        run.log_metric("c", np.array(2.5))
        run.log_metric("d", 1.5, step=np.int32(7))
    got = {key: (value, step) for key, value, step, _ in points(sqlite_project, run.id)}
    assert got == {"a": (0.5, 0), "b": (3.0, 0), "c": (2.5, 0), "d": (1.5, 7)}


@pytest.mark.parametrize("value", [True, "0.5", None, [1.0], 1j, math.nan, float("nan")])
def test_non_real_and_nan_values_are_refused_naming_the_key(
    sqlite_project: Project, value: Any
) -> None:
    with start_run(project=sqlite_project) as run:
        with pytest.raises(InvalidInputError, match="metric 'val_loss'"):
            run.log_metric("val_loss", value)
        with pytest.raises(InvalidInputError, match="metric 'val_loss'"):
            run.log_metrics({"ok": 1.0, "val_loss": value})
    assert points(sqlite_project, run.id) == []  # not even the valid "ok" point


def test_numpy_bool_and_nan_are_refused() -> None:
    import numpy as np

    with pytest.raises(InvalidInputError, match="bool"):
        metric_value("m", np.bool_(True))
    with pytest.raises(InvalidInputError, match="NaN"):
        metric_value("m", np.float64("nan"))


@pytest.mark.parametrize("step", ["1", 1.5, True, 2**63])
def test_bad_steps_are_refused(sqlite_project: Project, step: Any) -> None:
    with start_run(project=sqlite_project) as run, pytest.raises(InvalidInputError, match="step"):
        run.log_metric("m", 1.0, step=step)


def test_naive_or_non_datetime_timestamps_are_refused(sqlite_project: Project) -> None:
    with start_run(project=sqlite_project) as run:
        with pytest.raises(InvalidInputError, match="time zone"):
            run.log_metric("m", 1.0, timestamp=datetime(2025, 1, 1))
        with pytest.raises(InvalidInputError, match="datetime"):
            run.log_metric("m", 1.0, timestamp=1735689600)  # type: ignore[arg-type]
    assert points(sqlite_project, run.id) == []


def test_metrics_dict_must_be_a_mapping(sqlite_project: Project) -> None:
    with start_run(project=sqlite_project) as run, pytest.raises(InvalidInputError, match="dict"):
        run.log_metrics([("a", 1.0)])  # type: ignore[arg-type]


def test_metrics_after_end_raise_state_error(sqlite_project: Project) -> None:
    with start_run(project=sqlite_project) as run:
        pass
    with pytest.raises(StateError, match="has ended"):
        run.log_metrics({"a": 1.0})


# --- the buffer on its own ----------------------------------------------------------------------


def test_failed_write_keeps_the_points_for_the_next_try() -> None:
    written: list[list[Any]] = []
    failures = [RuntimeError("database is locked")]

    def write(batch: list[Any]) -> None:
        if failures:
            raise failures.pop()
        written.append(list(batch))

    buffer = MetricBuffer(write, batch_size=2, flush_seconds=3600)
    buffer.add("m", 1.0)
    with pytest.raises(RuntimeError, match="locked"):
        buffer.add("m", 2.0)
    assert len(buffer) == 2
    buffer.flush()
    assert [[value for _, value, _, _ in batch] for batch in written] == [[1.0, 2.0]]
    assert len(buffer) == 0


def test_time_based_flush_uses_the_clock_on_each_call() -> None:
    now = [0.0]
    written: list[int] = []
    buffer = MetricBuffer(
        lambda batch: written.append(len(batch)),
        batch_size=100,
        flush_seconds=2.0,
        clock=lambda: now[0],
    )
    buffer.add("m", 1.0)
    now[0] = 1.9
    buffer.add("m", 1.0)
    assert written == []
    now[0] = 2.0
    buffer.add("m", 1.0)
    assert written == [3]
    now[0] = 3.0
    buffer.add("m", 1.0)
    assert written == [3]
    assert buffer.next_step("m") == 4
