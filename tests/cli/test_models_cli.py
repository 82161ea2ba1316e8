"""`keel models ...` and `keel lineage`, driven through keel.cli.main.main like a user would."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from keel.cli.main import main
from keel.core.timeutil import now_ms
from keel.metadata.schema import experiments, run_inputs, runs
from keel.project import Project
from keel.registry import register_model_version

DATASET = "ab" * 32


def predict(frame: Any) -> Any:
    return [1] * len(frame)


@pytest.fixture
def cli(project: Project, project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The test project, as the CLI finds it (KEEL_PROJECT_DIR + KEEL_METADATA_URL)."""
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(project_dir))
    monkeypatch.setenv("KEEL_METADATA_URL", project.config.metadata.url)
    monkeypatch.setenv("KEEL_USER", "cli-user")
    from keel.cli import output

    # Wide enough that no table cell is folded, so the assertions can look for whole phrases.
    monkeypatch.setattr(output.console, "width", 250)
    return project


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def add_run_with_dataset(project: Project) -> str:
    run_id = f"{now_ms():012x}" + "cd" * 10
    with project.metadata.write() as conn:
        exp = conn.execute(
            insert(experiments).values(name="cli", created_at=now_ms()).returning(experiments.c.id)
        ).scalar_one()
        conn.execute(
            insert(runs).values(id=run_id, experiment_id=exp, status="finished", start_time=1)
        )
        conn.execute(
            insert(run_inputs).values(
                run_id=run_id, kind="dataset", ref=DATASET, name="tx.parquet", created_at=1
            )
        )
    return run_id


def test_list_and_show(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    register_model_version(cli, predict, "fraud", flavor="pyfunc", description="v1")
    register_model_version(cli, predict, "fraud", flavor="pyfunc")
    register_model_version(cli, predict, "churn", flavor="pyfunc")

    models = run_json(capsys, "models", "list")
    assert [(m["name"], m["latest_version"]) for m in models] == [("churn", 1), ("fraud", 2)]
    versions = run_json(capsys, "models", "show", "fraud")
    assert [(v["version"], v["state"]) for v in versions] == [(1, "candidate"), (2, "candidate")]
    one = run_json(capsys, "models", "show", "fraud@1")
    assert (one["flavor"], one["description"], one["created_by"]) == ("pyfunc", "v1", cli.user)

    assert main(["models", "list"]) == 0
    assert "fraud" in capsys.readouterr().out
    assert main(["models", "show", "fraud@2"]) == 0
    out = capsys.readouterr().out
    assert "candidate" in out
    assert "pyfunc" in out
    assert main(["models", "show", "fraud"]) == 0
    assert "candidate" in capsys.readouterr().out


def test_alias_approve_archive_and_history(
    cli: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        register_model_version(cli, predict, "fraud", flavor="pyfunc")
    assert main(["models", "approve", "fraud", "1", "--reason", "reviewed"]) == 0
    assert "fraud@1 is now approved" in capsys.readouterr().out
    assert main(["models", "alias", "fraud", "champion", "1", "--reason", "first"]) == 0
    assert main(["models", "alias", "fraud", "champion", "2"]) == 0
    assert "was 1" in capsys.readouterr().out
    assert main(["models", "archive", "fraud", "1"]) == 0
    assert main(["models", "alias", "fraud", "champion", "--delete", "--reason", "bye"]) == 0
    assert "Removed fraud@champion" in capsys.readouterr().out

    moves = run_json(capsys, "models", "history", "fraud", "--alias", "champion")
    assert [(m["from_version"], m["to_version"], m["author"], m["reason"]) for m in moves] == [
        (None, 1, "cli-user", "first"),
        (1, 2, "cli-user", None),
        (2, None, "cli-user", "bye"),
    ]
    history = run_json(capsys, "models", "history", "fraud")
    assert len(history["aliases"]) == 3
    changes = [(s["action"], s["entity_ref"], s["details"].get("to")) for s in history["states"]]
    assert changes == [
        ("register", "fraud@1", None),
        ("register", "fraud@2", None),
        ("transition", "fraud@1", "approved"),
        ("transition", "fraud@1", "archived"),
    ]
    assert main(["models", "history", "fraud"]) == 0
    assert "approved -> archived" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["models", "show", "nope"], 3, "'nope' is not registered"),
        (["models", "show", "fraud@9"], 3, "no version 9"),
        (["models", "alias", "fraud", "champion"], 2, "or --delete"),
        (["models", "alias", "fraud", "Champion", "1"], 2, "lowercase"),
        (["models", "archive", "fraud", "1"], 1, "alias 'champion'"),
        (["models", "approve", "fraud", "7"], 3, "no version 7"),
        (["lineage"], 2, "exactly one of --dataset"),
    ],
)
def test_errors_are_one_line_with_exit_codes(
    cli: Project, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    register_model_version(cli, predict, "fraud", flavor="pyfunc")
    assert main(["models", "alias", "fraud", "champion", "1"]) == 0
    capsys.readouterr()
    assert main(args) == code
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert message in " ".join(err.split())


def test_lineage_tree_json_and_forward_table(
    cli: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = add_run_with_dataset(cli)
    register_model_version(cli, predict, "fraud", run_id=run_id, flavor="pyfunc")
    assert main(["models", "alias", "fraud", "champion", "1"]) == 0

    trail = run_json(capsys, "lineage", "fraud@champion")
    assert trail["model"]["version"] == 1
    assert trail["run"]["id"] == run_id
    assert [d["ref"] for d in trail["datasets"]] == [DATASET]

    assert main(["lineage", "fraud@1"]) == 0
    tree = capsys.readouterr().out
    assert "fraud@1" in tree
    assert "datasets" in tree
    assert "tx.parquet" in tree

    found = run_json(capsys, "lineage", "--dataset", DATASET[:10])
    assert [(v["name"], v["version"], v["aliases"]) for v in found] == [("fraud", 1, ["champion"])]
    assert main(["lineage", "--dataset", DATASET]) == 0
    assert "fraud" in capsys.readouterr().out
    assert main(["lineage", "--dataset", "ff" * 32]) == 0
    assert "No model version" in capsys.readouterr().out
