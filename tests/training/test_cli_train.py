"""`keel train` from the command line: progress, the summary, JSON, and errors before work."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from keel.cli import training
from keel.errors import InvalidInputError, NotFoundError
from keel.project import Project
from tests.training.test_train import make_training_project


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = make_training_project(tmp_path / "proj")
    yield proj
    proj.close()


@pytest.fixture
def cli(project: Project, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(project.root))
    from keel.cli import output

    monkeypatch.setattr(output.console, "width", 200)
    root = typer.Typer()
    root.callback()(lambda: None)
    training.register(root)
    return root


def invoke(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, ["train", *args])


def test_train_prints_a_summary_and_registers(cli: typer.Typer, project: Project) -> None:
    from keel.registry.versions import get_model_version

    result = invoke(cli, "fraud-forest", "--param", "max_depth=3", "--seed", "4")
    assert result.exit_code == 0, result.output
    version = get_model_version(project, "fraud-forest@1")
    out = result.output
    assert "keel train fraud-forest" in out
    assert "fraud-forest@1" in out
    assert version.artifact_sha256 in out
    assert "max_depth=3" in out
    assert "Validation metrics" in out
    assert "auc" in out
    assert "before 2026-02-15T00:00:00+00:00" in out


def test_train_json_no_register_and_output(
    cli: typer.Typer, project: Project, tmp_path: Path
) -> None:
    from keel.registry.versions import list_models

    out_dir = tmp_path / "out"
    result = invoke(
        cli,
        "fraud-lgbm",
        "-p",
        "num_leaves=5",
        "--no-register",
        "--output",
        str(out_dir),
        "--experiment",
        "nightly",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model_version"] is None
    assert data["train"]["params"] == {"num_leaves": 5}
    assert (
        data["artifact_sha256"]
        == json.loads((out_dir / "result.json").read_text())["artifact_sha256"]
    )
    assert set(data["metrics"]) == {"auc", "log_loss", "average_precision", "accuracy"}
    assert list_models(project) == []
    from keel.tracking.query import get_run

    assert get_run(project, data["run_id"]).experiment == "nightly"


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["nope"], NotFoundError, "the trainers are: fraud-forest, fraud-lgbm"),
        (["fraud-forest", "-p", "max_depth=deep"], InvalidInputError, "not a valid int"),
        (["fraud-forest", "-p", "max_depth"], InvalidInputError, "is not KEY=VALUE"),
        (["fraud-forest", "--data-rev", "v9"], InvalidInputError, "git revision 'v9' not found"),
    ],
)
def test_bad_input_is_a_clear_error_and_starts_no_run(
    cli: typer.Typer, project: Project, args: list[str], error: type[Exception], message: str
) -> None:
    from keel.tracking.query import list_runs

    result = invoke(cli, *args)
    assert result.exit_code != 0
    assert isinstance(result.exception, error)
    assert message in str(result.exception)
    assert list_runs(project) == []
