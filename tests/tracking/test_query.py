"""Reading runs: get (with id prefixes), list, compare, metric history, experiments, and batched
hydration. Rows are inserted straight into the tables; every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from keel.errors import InvalidInputError, NotFoundError
from keel.metadata import schema
from keel.project import Project
from keel.tracking.query import (
    compare_runs,
    get_environment,
    get_run,
    list_experiments,
    list_runs,
    metric_history,
    search_runs,
)
from keel.tracking.records import ArtifactRecord, MetricPoint, RunInput

T0 = 1_700_000_000_000
SHA = "ab" * 32


def add_run(project: Project, run_id: str, experiment: str = "fraud", **fields: Any) -> str:
    """Insert one run and what it logged; ``fields`` holds run columns plus params, metrics
    (latest values), history ({key: [(step, value)]}), tags, artifacts and inputs."""
    logged = {k: fields.pop(k, {}) for k in ("params", "metrics", "history", "tags")}
    artifacts, inputs = fields.pop("artifacts", []), fields.pop("inputs", [])
    with project.metadata.write() as conn:
        exp_id = conn.execute(
            schema.experiments.select().where(schema.experiments.c.name == experiment)
        ).first()
        if exp_id is None:
            insert = schema.experiments.insert().values(name=experiment, created_at=T0)
            exp_id = conn.execute(insert).inserted_primary_key
        row = {"status": "finished", "start_time": T0, **fields}
        conn.execute(schema.runs.insert().values(id=run_id, experiment_id=exp_id[0], **row))
        for table, values in ((schema.params, logged["params"]), (schema.tags, logged["tags"])):
            for key, value in values.items():
                conn.execute(table.insert().values(run_id=run_id, key=key, value=value))
        for key, value in logged["metrics"].items():
            conn.execute(
                schema.latest_metrics.insert().values(
                    run_id=run_id, key=key, value=value, step=0, timestamp=T0
                )
            )
        for key, points in logged["history"].items():
            conn.execute(
                schema.metrics.insert(),
                [
                    {"run_id": run_id, "key": key, "value": v, "step": s, "timestamp": T0 + i}
                    for i, (s, v) in enumerate(points)
                ],
            )
        for path, size in artifacts:
            conn.execute(
                schema.run_artifacts.insert().values(
                    run_id=run_id, path=path, sha256=SHA, size=size, created_at=T0
                )
            )
        for kind, ref, created in inputs:
            conn.execute(
                schema.run_inputs.insert().values(
                    run_id=run_id,
                    kind=kind,
                    ref=ref,
                    name=f"{kind} input",
                    details={"rows": 10},
                    created_at=created,
                )
            )
    return run_id


def rid(prefix: str, n: int) -> str:
    return f"{prefix}{n:0{32 - len(prefix)}x}"


def test_get_run_hydrates_everything(project: Project) -> None:
    with project.metadata.write() as conn:
        conn.execute(
            schema.environments.insert().values(
                sha256=SHA,
                python_version="3.11.7",
                platform="Linux-x86_64",
                packages={"numpy": "2.4.0"},
                created_at=T0,
            )
        )
    parent = add_run(project, rid("0a", 1))
    run_id = add_run(
        project,
        rid("0b", 2),
        name="lgbm",
        status="failed",
        start_time=T0,
        end_time=T0 + 90_500,
        parent_run_id=parent,
        user="ana",
        error="ValueError: x",
        notes="baseline",
        git_commit="c0ffee",
        git_branch="main",
        git_dirty=True,
        git_diff_sha256=SHA,
        environment_sha256=SHA,
        command="python train.py",
        seeds={"python": 1, "numpy": 2},
        params={"model": "lgbm", "lr": "0.1"},
        metrics={"auc": 0.91, "loss": 0.3},
        tags={"team": "risk"},
        artifacts=[("model/model.pkl", 2048), ("a.txt", 3)],
        inputs=[("dataset", "sha-1", T0 + 5), ("feature_view", "user_stats@3", T0 + 1)],
    )
    run = get_run(project, run_id)
    assert (run.id, run.experiment, run.name, run.status) == (run_id, "fraud", "lgbm", "failed")
    assert run.start_time == datetime.fromtimestamp(T0 / 1000, tz=UTC)
    assert run.duration_seconds == 90.5
    assert (run.parent_run_id, run.user, run.error, run.notes) == (
        parent,
        "ana",
        "ValueError: x",
        "baseline",
    )
    assert (run.git_commit, run.git_branch, run.git_dirty, run.git_diff_sha256) == (
        "c0ffee",
        "main",
        True,
        SHA,
    )
    assert (run.environment_sha256, run.command, run.seeds) == (
        SHA,
        "python train.py",
        {"python": 1, "numpy": 2},
    )
    assert run.params == {"lr": "0.1", "model": "lgbm"}
    assert run.metrics == {"auc": 0.91, "loss": 0.3}
    assert run.tags == {"team": "risk"}
    assert run.artifacts == [
        ArtifactRecord("a.txt", SHA, 3),
        ArtifactRecord("model/model.pkl", SHA, 2048),
    ]
    assert run.inputs == [
        RunInput("feature_view", "user_stats@3", "feature_view input", {"rows": 10}),
        RunInput("dataset", "sha-1", "dataset input", {"rows": 10}),
    ]
    bare = get_run(project, parent)
    assert (bare.params, bare.metrics, bare.artifacts, bare.seeds, bare.end_time) == (
        {},
        {},
        [],
        {},
        None,
    )
    env = get_environment(project, SHA)
    assert (env.python_version, env.platform, env.packages) == (
        "3.11.7",
        "Linux-x86_64",
        {"numpy": "2.4.0"},
    )
    with pytest.raises(NotFoundError, match="no environment 'nope'"):
        get_environment(project, "nope")


def test_get_run_by_prefix(project: Project) -> None:
    one = add_run(project, rid("0190ab3f2c1d", 1))
    two = add_run(project, rid("0190ab3f2c1e", 2))
    other = add_run(project, rid("ffee99", 3))
    assert get_run(project, one).id == one
    assert get_run(project, "ffee99").id == other
    assert get_run(project, f"  {two[:-1]} ").id == two
    with pytest.raises(InvalidInputError) as info:
        get_run(project, "0190ab3f")
    assert str(info.value) == (
        f"run id prefix '0190ab3f' matches several runs: {one}, {two}; give more characters"
    )
    with pytest.raises(InvalidInputError, match=r"'ffee9' is too short .* at least 6 characters"):
        get_run(project, "ffee9")
    with pytest.raises(NotFoundError) as missing:
        get_run(project, "123456789")
    assert str(missing.value) == "no run with id '123456789'; `keel runs list` shows the runs"
    with pytest.raises(NotFoundError):
        get_run(project, "FFEE99")  # ids are case-sensitive on both databases
    with pytest.raises(NotFoundError):
        get_run(project, "0190ab%")  # no wildcards


def test_list_runs_newest_first_with_filters(project: Project) -> None:
    ids = [
        add_run(
            project,
            rid("01", i),
            experiment="churn" if i % 2 else "fraud",
            status="failed" if i == 3 else "finished",
            start_time=T0 + i * 1000,
        )
        for i in range(1, 6)
    ]
    assert [r.id for r in list_runs(project)] == ids[::-1]
    assert [r.id for r in list_runs(project, limit=2)] == [ids[4], ids[3]]
    assert [r.id for r in list_runs(project, experiment="fraud")] == [ids[3], ids[1]]
    assert [r.id for r in list_runs(project, experiment="churn", status="failed")] == [ids[2]]
    assert list_runs(project, status="running") == []
    with pytest.raises(NotFoundError, match=r"no experiment named 'x'; experiments: churn, fraud"):
        list_runs(project, experiment="x")
    with pytest.raises(InvalidInputError, match="unknown status 'done'; valid statuses: failed"):
        list_runs(project, status="done")
    with pytest.raises(InvalidInputError, match="limit must be a positive whole number, got 0"):
        list_runs(project, limit=0)
    with pytest.raises(InvalidInputError, match="max_results must be a positive"):
        search_runs(project, "", max_results=-1)
    with pytest.raises(NotFoundError, match="no experiment named 'nope'"):
        search_runs(project, "", experiments=["fraud", "nope"])


def test_compare_runs(project: Project) -> None:
    a = add_run(
        project,
        rid("0a", 1),
        params={"model": "lgbm", "lr": "0.1"},
        metrics={"auc": 0.9, "loss": 0.3},
    )
    b = add_run(
        project,
        rid("0b", 2),
        params={"model": "lgbm", "lr": "0.2", "depth": "6"},
        metrics={"auc": 0.9},
    )
    comparison = compare_runs(project, [a, b[:8]])
    assert [r.id for r in comparison.runs] == [a, b]
    assert comparison.params == {
        "depth": [None, "6"],
        "lr": ["0.1", "0.2"],
        "model": ["lgbm", "lgbm"],
    }
    assert comparison.metrics == {"auc": [0.9, 0.9], "loss": [0.3, None]}
    assert comparison.differing_params == ["depth", "lr"]
    assert comparison.differing_metrics == ["loss"]
    with pytest.raises(InvalidInputError, match="at least two run ids, got 1"):
        compare_runs(project, [a])
    with pytest.raises(InvalidInputError, match=f"run {a} is given more than once"):
        compare_runs(project, [a, a[:10]])
    with pytest.raises(NotFoundError, match="no run with id 'cccccc'"):
        compare_runs(project, [a, "cccccc"])


def test_metric_history(project: Project) -> None:
    run_id = add_run(
        project,
        rid("0a", 1),
        metrics={"loss": 0.2, "auc": 0.9},
        history={"loss": [(2, 0.2), (0, 0.7), (1, 0.4)], "auc": [(0, 0.9)]},
    )
    points = metric_history(project, run_id[:8], "loss")
    assert [(p.step, p.value) for p in points] == [(0, 0.7), (1, 0.4), (2, 0.2)]
    assert points[0] == MetricPoint("loss", 0.7, 0, datetime.fromtimestamp((T0 + 1) / 1000, UTC))
    with pytest.raises(
        NotFoundError, match=f"run {run_id} has no metric 'f1'; it logged auc, loss"
    ):
        metric_history(project, run_id, "f1")
    empty = add_run(project, rid("0b", 2))
    with pytest.raises(NotFoundError, match="it logged no metrics"):
        metric_history(project, empty, "f1")


def test_list_experiments(project: Project) -> None:
    add_run(project, rid("0a", 1), experiment="fraud", start_time=T0 + 5000)
    add_run(project, rid("0b", 2), experiment="fraud", start_time=T0 + 9000)
    with project.metadata.write() as conn:
        conn.execute(schema.experiments.insert().values(name="empty", created_at=T0))
    found = {e.name: e for e in list_experiments(project)}
    assert list(found) == ["empty", "fraud"]
    assert (found["fraud"].run_count, found["empty"].run_count) == (2, 0)
    assert found["fraud"].last_run_at == datetime.fromtimestamp((T0 + 9000) / 1000, UTC)
    assert found["empty"].last_run_at is None


@contextmanager
def counted_queries(project: Project) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = project.metadata.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_hydration_is_batched_not_one_query_per_run(project: Project) -> None:
    for i in range(40):
        add_run(
            project,
            rid("0c", i),
            start_time=T0 + i,
            params={"p": str(i)},
            metrics={"m": float(i)},
            tags={"t": "x"},
            artifacts=[("f", i)],
            inputs=[("dataset", f"d{i}", T0)],
        )
    with counted_queries(project) as few:
        assert len(search_runs(project, "metrics.m >= 37")) == 3
    with counted_queries(project) as many:
        found = search_runs(project, "metrics.m >= 0", order_by="params.p")
    assert len(found) == 40
    assert len(many) == len(few) <= 8  # experiments + runs + five batched lookups
    assert found[5].params == {"p": "5"}
    assert found[5].artifacts[0].size == 5
