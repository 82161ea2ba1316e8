"""Runs: lifecycle, failure capture, nesting, params, tags, artifacts, inputs, seeds, the fluent
API and the atexit hook. Storage tests run on SQLite and PostgreSQL (the `project` fixture)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from keel.errors import InvalidInputError, StateError
from keel.metadata.schema import experiments, params, run_artifacts, run_inputs, runs, tags
from keel.project import Project
from keel.tracking import fluent
from keel.tracking.fluent import active_run, start_run
from keel.tracking.run import Run


@pytest.fixture(autouse=True)
def _no_leftover_runs() -> Iterator[None]:
    """A test that fails half-way must not leave an active run behind for the next one."""
    yield
    for run in list(fluent._OPEN.values()):
        run.end("killed")
    fluent._ACTIVE.set(None)


def rows(project: Project, table: Any, **where: Any) -> list[dict[str, Any]]:
    query = select(table).where(*(table.c[key] == value for key, value in where.items()))
    with project.metadata.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def run_row(project: Project, run_id: str) -> dict[str, Any]:
    (row,) = rows(project, runs, id=run_id)
    return row


def kv(project: Project, table: Any, run_id: str) -> dict[str, str]:
    return {row["key"]: row["value"] for row in rows(project, table, run_id=run_id)}


# --- lifecycle ---------------------------------------------------------------------------------


def test_run_lifecycle_records_status_times_and_identity(project: Project) -> None:
    before = time.time() * 1000
    with start_run(
        experiment="fraud",
        name="baseline",
        params={"lr": 0.1, "depth": 6},
        tags={"team": "risk"},
        notes="first try",
        project=project,
    ) as run:
        during = run_row(project, run.id)
        assert during["status"] == "running"
        assert during["end_time"] is None
        assert active_run() is run
    after = run_row(project, run.id)
    assert after["status"] == "finished"
    assert before - 5 <= after["start_time"] <= after["end_time"] <= time.time() * 1000 + 5
    assert after["name"] == "baseline"
    assert after["notes"] == "first try"
    assert after["user"] == project.user
    assert after["error"] is None
    assert after["command"]
    assert after["environment_sha256"] is not None
    (exp,) = rows(project, experiments, name="fraud")
    assert after["experiment_id"] == exp["id"]
    assert run.experiment == "fraud"
    assert kv(project, params, run.id) == {"lr": "0.1", "depth": "6"}
    assert kv(project, tags, run.id) == {"team": "risk"}
    assert active_run() is None


def test_run_without_with_block_ends_explicitly(project: Project) -> None:
    run = start_run(project=project)
    assert active_run() is run
    run.end("killed")
    assert run_row(project, run.id)["status"] == "killed"
    first_end = run_row(project, run.id)["end_time"]
    run.end()  # ending again changes nothing
    assert run_row(project, run.id)["status"] == "killed"
    assert run_row(project, run.id)["end_time"] == first_end
    assert active_run() is None


def test_end_with_unknown_status_is_refused(sqlite_project: Project) -> None:
    run = start_run(project=sqlite_project)
    with pytest.raises(InvalidInputError, match="'done'"):
        run.end("done")
    assert run_row(sqlite_project, run.id)["status"] == "running"
    run.end()


def test_default_experiment_comes_from_config_and_is_created_once(project: Project) -> None:
    custom = Project(
        project.root,
        overrides={
            "metadata.url": project.config.metadata.url,
            "tracking.default_experiment": "sandbox",
        },
        environ={},
    )
    try:
        first = start_run(project=custom)
        first.end()
        second = start_run(project=custom)
        second.end()
    finally:
        custom.close()
    assert first.experiment == second.experiment == "sandbox"
    assert len(rows(project, experiments, name="sandbox")) == 1
    experiment_ids = {run_row(project, r.id)["experiment_id"] for r in (first, second)}
    assert len(experiment_ids) == 1


def test_raising_block_marks_run_failed_and_propagates(project: Project) -> None:
    def train(run: Run) -> None:
        run.log_metric("loss", 0.5)
        raise ValueError("boom")

    run = start_run(project=project)
    with pytest.raises(ValueError, match="boom"), run:
        train(run)
    row = run_row(project, run.id)
    assert row["status"] == "failed"
    assert row["end_time"] is not None
    assert row["error"].startswith("ValueError: boom")
    assert "Traceback (most recent call last)" in row["error"]
    assert "in train" in row["error"]
    assert active_run() is None


def test_keyboard_interrupt_marks_run_killed(project: Project) -> None:
    with pytest.raises(KeyboardInterrupt), start_run(project=project) as run:
        raise KeyboardInterrupt
    row = run_row(project, run.id)
    assert row["status"] == "killed"
    assert row["error"].startswith("KeyboardInterrupt")


@pytest.mark.parametrize(("code", "status"), [(0, "finished"), (None, "finished"), (2, "failed")])
def test_sys_exit_in_block_depends_on_the_exit_code(
    sqlite_project: Project, code: int | None, status: str
) -> None:
    run = start_run(project=sqlite_project)
    with pytest.raises(SystemExit), run:
        sys.exit(code)
    assert run_row(sqlite_project, run.id)["status"] == status


def test_invalid_start_arguments_write_nothing(project: Project) -> None:
    with pytest.raises(InvalidInputError, match="' lr'"):
        start_run(experiment="e", params={"ok": 1, " lr": 2}, project=project)
    with pytest.raises(InvalidInputError, match="seed 'numpy'"):
        start_run(experiment="e", seeds={"numpy": -1}, project=project)
    with pytest.raises(InvalidInputError, match="experiment name"):
        start_run(experiment="x" * 300, project=project)
    assert rows(project, runs) == []
    assert rows(project, experiments) == []
    assert active_run() is None


# --- nesting and the active run ----------------------------------------------------------------


def test_nested_runs_need_nested_true_and_restore_the_parent(project: Project) -> None:
    with start_run(experiment="outer", project=project) as parent:
        with pytest.raises(StateError, match=r"nested=True") as excinfo:
            start_run(project=project)
        assert parent.id in str(excinfo.value)
        with start_run(nested=True, project=project) as child:
            assert active_run() is child
            fluent.log_param("fold", 1)
        assert active_run() is parent
        fluent.log_param("folds", 5)
    assert active_run() is None
    assert run_row(project, child.id)["parent_run_id"] == parent.id
    assert run_row(project, parent.id)["parent_run_id"] is None
    assert kv(project, params, child.id) == {"fold": "1"}
    assert kv(project, params, parent.id) == {"folds": "5"}
    assert len(rows(project, runs)) == 2  # the refused start left nothing


def test_nested_true_without_active_run_starts_a_top_level_run(project: Project) -> None:
    with start_run(nested=True, project=project) as run:
        pass
    assert run_row(project, run.id)["parent_run_id"] is None


def test_ending_parent_before_child_keeps_active_run_consistent(project: Project) -> None:
    parent = start_run(project=project)
    child = start_run(nested=True, project=project)
    parent.end()
    assert active_run() is child
    child.end()
    assert active_run() is None


def test_active_run_is_per_thread(project: Project) -> None:
    seen: list[object] = []
    with start_run(project=project):
        thread = threading.Thread(target=lambda: seen.append(active_run()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_fluent_calls_without_active_run_raise_state_error() -> None:
    calls = [
        lambda: fluent.log_param("a", 1),
        lambda: fluent.log_params({"a": 1}),
        lambda: fluent.log_metric("a", 1.0),
        lambda: fluent.log_metrics({"a": 1.0}),
        lambda: fluent.set_tag("a", 1),
        lambda: fluent.set_tags({"a": 1}),
        lambda: fluent.log_artifact("x"),
        lambda: fluent.log_input("dataset", "x"),
    ]
    for call in calls:
        with pytest.raises(StateError, match=r"no active run; use `with keel.start_run\(\):`"):
            call()


def test_fluent_calls_act_on_the_active_run(project: Project, tmp_path: Path) -> None:
    file = tmp_path / "model.txt"
    file.write_text("weights")
    with start_run(project=project) as run:
        fluent.log_params({"a": 1})
        fluent.set_tags({"t": "x"})
        fluent.set_tag("u", "y")
        fluent.log_metric("m", 1.5)
        fluent.log_metrics({"n": 2.5}, step=3)
        fluent.log_artifact(file)
        fluent.log_input("training_set", "fp123")
    assert kv(project, params, run.id) == {"a": "1"}
    assert kv(project, tags, run.id) == {"t": "x", "u": "y"}
    assert [r["path"] for r in rows(project, run_artifacts, run_id=run.id)] == ["model.txt"]
    assert [r["ref"] for r in rows(project, run_inputs, run_id=run.id)] == ["fp123"]


# --- params, tags, notes, seeds ----------------------------------------------------------------


def test_params_are_immutable(project: Project) -> None:
    with start_run(project=project) as run:
        run.log_param("lr", 0.1)
        run.log_param("lr", 0.1)  # the same value again is fine
        run.log_params({"lr": "0.1", "depth": 3})
        with pytest.raises(InvalidInputError) as excinfo:
            run.log_param("lr", 0.2)
        message = str(excinfo.value)
        assert "'lr'" in message
        assert "'0.1'" in message
        assert "'0.2'" in message
        # all or nothing: the new key of a refused batch is not written either
        with pytest.raises(InvalidInputError, match="'lr'"):
            run.log_params({"batch": 32, "lr": 0.3})
    assert kv(project, params, run.id) == {"lr": "0.1", "depth": "3"}


def test_tags_may_change_and_be_set_after_end(project: Project) -> None:
    with start_run(project=project) as run:
        run.set_tag("stage", "dev")
        run.set_tag("stage", "review")
    run.set_tags({"stage": "done", "owner": "ana"})
    run.set_notes("looked good")
    assert kv(project, tags, run.id) == {"stage": "done", "owner": "ana"}
    assert run_row(project, run.id)["notes"] == "looked good"


def test_logging_to_an_ended_run_raises_state_error(sqlite_project: Project) -> None:
    with start_run(project=sqlite_project) as run:
        pass
    for call in (
        lambda: run.log_param("a", 1),
        lambda: run.log_metric("a", 1.0),
        lambda: run.log_text("x", "x.txt"),
        lambda: run.log_input("dataset", "abc"),
        lambda: run.set_seed(1),
    ):
        with pytest.raises(StateError, match="has ended"):
            call()


@pytest.mark.parametrize("key", ["", " lr", "lr ", "k" * 257, 7, None])
def test_bad_keys_are_refused_naming_the_key(sqlite_project: Project, key: Any) -> None:
    with start_run(project=sqlite_project) as run:
        for call in (
            lambda: run.log_param(key, 1),
            lambda: run.set_tag(key, 1),
            lambda: run.log_metric(key, 1.0),
        ):
            with pytest.raises(InvalidInputError, match="key"):
                call()
    assert kv(sqlite_project, params, run.id) == {}
    assert kv(sqlite_project, tags, run.id) == {}


def test_key_of_256_characters_is_accepted(sqlite_project: Project) -> None:
    with start_run(project=sqlite_project) as run:
        run.log_param("k" * 256, "v")
    assert kv(sqlite_project, params, run.id) == {"k" * 256: "v"}


def test_set_seed_seeds_random_and_numpy_and_records_it(project: Project) -> None:
    import numpy as np

    with start_run(seeds={"torch": 11}, project=project) as run:
        run.set_seed(7)
        got_py, got_np = random.random(), np.random.rand()
        run.set_seed(3, name="sampler")
    assert got_py == random.Random(7).random()
    assert got_np == np.random.RandomState(7).rand()
    assert run_row(project, run.id)["seeds"] == {"torch": 11, "global": 7, "sampler": 3}


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "7"])
def test_bad_seed_is_refused(sqlite_project: Project, seed: Any) -> None:
    with start_run(project=sqlite_project) as run, pytest.raises(InvalidInputError, match="seed"):
        run.set_seed(seed)


# --- artifacts -----------------------------------------------------------------------------------


def test_log_artifact_file_and_folder_are_stored_and_verifiable(
    project: Project, tmp_path: Path
) -> None:
    file = tmp_path / "model.bin"
    file.write_bytes(b"\x00weights\xff")
    folder = tmp_path / "plots"
    (folder / "sub").mkdir(parents=True)
    (folder / "roc.svg").write_text("<svg/>")
    (folder / "sub" / "pr.svg").write_text("<svg>pr</svg>")
    with start_run(project=project) as run:
        one = run.log_artifact(file)
        renamed = run.log_artifact(str(file), path="models/final.bin")
        many = run.log_artifact(folder)
    stored = {r["path"]: r for r in rows(project, run_artifacts, run_id=run.id)}
    assert set(stored) == {"model.bin", "models/final.bin", "plots/roc.svg", "plots/sub/pr.svg"}
    sources = {
        "model.bin": file,
        "models/final.bin": file,
        "plots/roc.svg": folder / "roc.svg",
        "plots/sub/pr.svg": folder / "sub" / "pr.svg",
    }
    for path, source in sources.items():
        data = source.read_bytes()
        assert stored[path]["sha256"] == hashlib.sha256(data).hexdigest()
        assert stored[path]["size"] == len(data)
        assert project.artifacts.get_bytes(stored[path]["sha256"]) == data
    assert [r.path for r in one] == ["model.bin"]
    assert [r.path for r in renamed] == ["models/final.bin"]
    assert [r.path for r in many] == ["plots/roc.svg", "plots/sub/pr.svg"]


def test_log_text_and_log_dict(project: Project) -> None:
    payload = {"threshold": 0.7, "classes": ["a", "b"], "name": "é"}
    with start_run(project=project) as run:
        text = run.log_text("# Report\nok", "reports/summary.md")
        as_json = run.log_dict(payload, "config.json")
        as_yaml = run.log_dict(payload, "config.yml")
        with pytest.raises(InvalidInputError, match=r"\.json, \.yaml or \.yml"):
            run.log_dict(payload, "config.txt")
        with pytest.raises(InvalidInputError, match="not serializable"):
            run.log_dict({"f": object()}, "bad.json")
        with pytest.raises(InvalidInputError, match="str"):
            run.log_text(b"bytes", "x.txt")  # type: ignore[arg-type]
    assert project.artifacts.get_bytes(text.sha256) == b"# Report\nok"
    assert json.loads(project.artifacts.get_bytes(as_json.sha256)) == payload
    assert yaml.safe_load(project.artifacts.get_bytes(as_yaml.sha256)) == payload
    paths = sorted(r["path"] for r in rows(project, run_artifacts, run_id=run.id))
    assert paths == ["config.json", "config.yml", "reports/summary.md"]


@pytest.mark.parametrize("path", ["../escape.txt", "/abs.txt", "a/../../b", "", "."])
def test_artifact_paths_must_stay_inside_the_run(sqlite_project: Project, path: str) -> None:
    with (
        start_run(project=sqlite_project) as run,
        pytest.raises(InvalidInputError, match="artifact path"),
    ):
        run.log_text("x", path)
    assert rows(sqlite_project, run_artifacts, run_id=run.id) == []


def test_log_artifact_of_missing_path_is_refused(sqlite_project: Project, tmp_path: Path) -> None:
    with start_run(project=sqlite_project) as run, pytest.raises(InvalidInputError, match="nope"):
        run.log_artifact(tmp_path / "nope")


# --- lineage inputs and models -------------------------------------------------------------------


def test_log_input_records_lineage(project: Project) -> None:
    with start_run(project=project) as run:
        run.log_input("dataset", "a" * 64, name="data/train.parquet", details={"rows": 10})
        run.log_input("feature_view", "user_stats@3f2a")
        with pytest.raises(InvalidInputError, match="'model'"):
            run.log_input("model", "x")
        with pytest.raises(InvalidInputError, match="ref"):
            run.log_input("dataset", "")
        with pytest.raises(InvalidInputError, match="JSON"):
            run.log_input("dataset", "b", details={"x": object()})
    got = {(r["kind"], r["ref"]): r for r in rows(project, run_inputs, run_id=run.id)}
    assert set(got) == {("dataset", "a" * 64), ("feature_view", "user_stats@3f2a")}
    assert got["dataset", "a" * 64]["name"] == "data/train.parquet"
    assert got["dataset", "a" * 64]["details"] == {"rows": 10}
    assert got["feature_view", "user_stats@3f2a"]["details"] is None


def test_log_model_flushes_metrics_then_delegates_to_the_registry(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.registry.versions as versions
    from keel.metadata.schema import metrics

    calls: list[dict[str, Any]] = []

    def fake_register(project: Project, model: Any, name: str, **kwargs: Any) -> str:
        calls.append({"project": project, "model": model, "name": name, **kwargs})
        calls[-1]["points"] = len(rows(project, metrics, run_id=kwargs["run_id"]))
        return "fraud@1"

    monkeypatch.setattr(versions, "register_model_version", fake_register)
    with start_run(project=sqlite_project) as run:
        run.log_metric("auc", 0.9)
        result = run.log_model("MODEL", "fraud", input_example=[1], description="d")
    assert result == "fraud@1"
    (call,) = calls
    assert call["project"] is sqlite_project
    assert (call["model"], call["name"], call["run_id"]) == ("MODEL", "fraud", run.id)
    assert (call["input_example"], call["flavor"], call["description"]) == ([1], None, "d")
    assert call["points"] == 1  # buffered metrics were written before registering


# --- the atexit hook -----------------------------------------------------------------------------

SCRIPT = """
import sys
from keel.project import Project
from keel.tracking import start_run
run = start_run(experiment="script", project=Project(sys.argv[1]))
run.log_metric("loss", 0.25)
print(run.id, flush=True)
if sys.argv[2] == "crash":
    raise RuntimeError("script crashed")
"""


@pytest.mark.parametrize(("mode", "status"), [("ok", "finished"), ("crash", "failed")])
def test_atexit_ends_runs_left_open(
    sqlite_project: Project, tmp_path: Path, mode: str, status: str
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    done = subprocess.run(
        [sys.executable, str(script), str(sqlite_project.root), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == (0 if mode == "ok" else 1), done.stderr
    run_id = done.stdout.split()[0]
    row = run_row(sqlite_project, run_id)
    assert row["status"] == status
    assert row["end_time"] is not None
    if mode == "crash":
        assert row["error"].startswith("RuntimeError: script crashed")
    from keel.metadata.schema import latest_metrics

    assert [r["value"] for r in rows(sqlite_project, latest_metrics, run_id=run_id)] == [0.25]
