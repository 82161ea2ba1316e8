"""Lineage backward (model version -> run -> code, environment, inputs, parents) and forward
(input -> runs -> nested runs -> model versions)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import insert

from keel.core.timeutil import now_ms
from keel.errors import InvalidInputError, NotFoundError
from keel.metadata.schema import experiments, params, run_inputs, runs
from keel.project import Project
from keel.registry import lineage, models_using, register_model_version, set_alias, transition
from keel.tracking.environment import capture_environment, record_environment

D1 = "d1" + "0" * 62  # the dataset the sweep (parent run) read
D2 = "d2" + "0" * 62  # a dataset only the unrelated run read
FP = "f" * 64  # training-set fingerprint
COMMIT = "4f2c9e1" + "0" * 33
DIFF = "e" * 64


def predict(frame: Any) -> Any:
    return [0] * len(frame)


def add_run(project: Project, *, parent: str | None = None, **fields: Any) -> str:
    """Insert a run (and its experiment) the way the tracking side stores one."""
    run_id = f"{now_ms():012x}{os.urandom(10).hex()}"
    with project.metadata.write() as conn:
        exp = conn.execute(
            insert(experiments)
            .values(name=f"exp-{run_id[-8:]}", created_at=now_ms())
            .returning(experiments.c.id)
        ).scalar_one()
        conn.execute(
            insert(runs).values(
                id=run_id,
                experiment_id=exp,
                status="finished",
                start_time=now_ms(),
                parent_run_id=parent,
                **fields,
            )
        )
    return run_id


def add_input(project: Project, run_id: str, kind: str, ref: str, name: str | None = None) -> None:
    with project.metadata.write() as conn:
        conn.execute(
            insert(run_inputs).values(
                run_id=run_id, kind=kind, ref=ref, name=name, details={}, created_at=now_ms()
            )
        )


@dataclass
class World:
    sweep: str  # parent run: read dataset D1
    trial: str  # nested run of the sweep: feature view, training set, params; trained fraud@1
    grandchild: str  # nested run of the trial: trained fraud@2
    other: str  # unrelated run: read D2, trained churn@1


@pytest.fixture
def world(project: Project) -> World:
    env = capture_environment()
    with project.metadata.write() as conn:
        record_environment(conn, env)
    sweep = add_run(project, name="sweep")
    add_input(project, sweep, "dataset", D1, "transactions.parquet")
    trial = add_run(
        project,
        parent=sweep,
        name="trial-3",
        git_commit=COMMIT,
        git_branch="main",
        git_dirty=True,
        git_diff_sha256=DIFF,
        environment_sha256=env.sha256,
    )
    add_input(project, trial, "feature_view", "user_stats@abc123", "user_stats")
    add_input(project, trial, "training_set", FP)
    with project.metadata.write() as conn:
        conn.execute(insert(params), [{"run_id": trial, "key": "lr", "value": "0.1"}])
    grandchild = add_run(project, parent=trial, name="refit")
    other = add_run(project, name="other")
    add_input(project, other, "dataset", D2)
    register_model_version(project, predict, "fraud", run_id=trial, flavor="pyfunc")
    register_model_version(project, predict, "fraud", run_id=grandchild, flavor="pyfunc")
    register_model_version(project, predict, "churn", run_id=other, flavor="pyfunc")
    register_model_version(project, predict, "orphan", flavor="pyfunc")
    return World(sweep, trial, grandchild, other)


def test_walks_back_to_run_code_environment_and_inputs(project: Project, world: World) -> None:
    trail = lineage(project, "fraud@1")
    assert trail.model.ref == "fraud@1"
    assert trail.run is not None
    assert trail.run.id == world.trial
    assert trail.code is not None
    assert (trail.code.commit, trail.code.branch, trail.code.dirty, trail.code.diff_sha256) == (
        COMMIT,
        "main",
        True,
        DIFF,
    )
    env = capture_environment()
    assert trail.environment is not None
    assert (trail.environment.sha256, trail.environment.python_version) == (
        env.sha256,
        env.python_version,
    )
    assert trail.environment.package_count == len(env.packages)
    assert trail.params == {"lr": "0.1"}
    assert [(d.ref, d.name, d.run_id) for d in trail.datasets] == [
        (D1, "transactions.parquet", world.sweep)  # recorded by the parent run
    ]
    assert [(f.ref, f.run_id) for f in trail.feature_views] == [("user_stats@abc123", world.trial)]
    assert [t.ref for t in trail.training_sets] == [FP]
    assert [p.id for p in trail.parents] == [world.sweep]


def test_parent_chain_of_a_grandchild(project: Project, world: World) -> None:
    trail = lineage(project, "fraud")  # latest: version 2, from the grandchild run
    assert trail.run is not None
    assert trail.run.id == world.grandchild
    assert [p.id for p in trail.parents] == [world.trial, world.sweep]
    assert [d.ref for d in trail.datasets] == [D1]
    assert [t.run_id for t in trail.training_sets] == [world.trial]
    assert trail.params == {}


def test_version_without_run(project: Project, world: World) -> None:
    trail = lineage(project, "orphan@1")
    assert (trail.run, trail.code, trail.parents, trail.datasets) == (None, None, [], [])
    assert trail.environment is not None  # captured at registration


def test_walks_forward_through_nested_runs(project: Project, world: World) -> None:
    set_alias(project, "fraud", "champion", 1)
    transition(project, "fraud", 2, "approved")
    found = models_using(project, dataset=D1)
    assert [(v.ref, v.aliases, v.state) for v in found] == [
        ("fraud@1", ["champion"], "candidate"),
        ("fraud@2", [], "approved"),
    ]
    assert [v.ref for v in models_using(project, dataset=D1[:8])] == ["fraud@1", "fraud@2"]
    assert [v.ref for v in models_using(project, dataset=D2)] == ["churn@1"]
    assert [v.ref for v in models_using(project, feature_view="user_stats")] == [
        "fraud@1",
        "fraud@2",
    ]
    assert [v.ref for v in models_using(project, feature_view="user_stats@abc123")] == [
        "fraud@1",
        "fraud@2",
    ]
    assert models_using(project, feature_view="user_stats@other") == []
    assert [v.ref for v in models_using(project, training_set=FP)] == ["fraud@1", "fraud@2"]
    assert models_using(project, dataset="9" * 64) == []


def test_forward_needs_exactly_one_input(sqlite_project: Project) -> None:
    with pytest.raises(InvalidInputError, match="exactly one"):
        models_using(sqlite_project)
    with pytest.raises(InvalidInputError, match="exactly one"):
        models_using(sqlite_project, dataset=D1, training_set=FP)


def test_unknown_model(project: Project, world: World) -> None:
    with pytest.raises(NotFoundError, match="no version 9"):
        lineage(project, "fraud@9")
    with pytest.raises(NotFoundError, match="'nope' is not registered"):
        lineage(project, "nope@1")
