"""`keel features apply/list/show/diff`, driven like a user would, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from keel.cli import features
from keel.errors import InvalidInputError, NotFoundError
from keel.project import Project
from tests.features.test_apply import write_data, write_defs, write_on_demand


@pytest.fixture
def cli(project: Project, project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    """A root app with the features group, on the test project (KEEL_PROJECT_DIR + URL).
    Registered here because cli/main.py registers it only once the lead adds the line."""
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(project_dir))
    monkeypatch.setenv("KEEL_METADATA_URL", project.config.metadata.url)
    monkeypatch.setenv("KEEL_USER", "cli-user")
    from keel.cli import output

    monkeypatch.setattr(output.console, "width", 250)
    write_data(project_dir)
    write_defs(project_dir)
    root = typer.Typer()
    root.callback()(lambda: None)
    root.add_typer(features.app, name="features")
    return root


def run(app: typer.Typer, *args: str) -> str:
    result = CliRunner().invoke(app, ["features", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_apply_list_show_diff(cli: typer.Typer, project_dir: Path) -> None:
    out = run(cli, "apply")
    assert "user_stats" in out
    assert "created" in out
    assert "unchanged" in run(cli, "apply", str(project_dir / "features.py"))
    applied = json.loads(run(cli, "apply", "--json"))
    assert applied[0]["status"] == "unchanged"
    first = applied[0]["version"]

    write_defs(project_dir, owner="fraud-team", ttl="4d")
    second = json.loads(run(cli, "apply", "--json"))[0]
    assert second["status"] == "updated"
    assert second["previous"] == first

    listed = json.loads(run(cli, "list", "--json"))
    assert [(v["name"], v["owner"], v["current_version"]) for v in listed] == [
        ("user_stats", "fraud-team", second["version"])
    ]
    assert "fraud-team" in run(cli, "list")
    assert "spend per user" in run(cli, "list")
    shown = run(cli, "show", "user_stats")
    assert second["version"] in shown
    assert first[:12] in shown
    assert "cli-user" in shown
    assert "amount:float64, amount_sum_2d:sum" in shown
    assert len(json.loads(run(cli, "show", "user_stats", "--json"))["versions"]) == 2

    diff = run(cli, "diff", "user_stats")
    assert "owner" in diff
    assert "fraud-team" in diff
    assert "ttl_seconds" in diff
    changes = json.loads(run(cli, "diff", "user_stats", first[:6], second["version"], "--json"))
    assert {c["path"]: c["new"] for c in changes} == {
        "owner": "fraud-team",
        "ttl_seconds": 4 * 86400.0,
    }
    assert "no differences" in run(cli, "diff", "user_stats", first[:6], first[:6])


def test_errors_are_keel_errors(cli: typer.Typer, project_dir: Path) -> None:
    write_defs(project_dir, owner="")
    with pytest.raises(InvalidInputError, match="has no owner"):
        CliRunner().invoke(cli, ["features", "apply"], catch_exceptions=False)
    with pytest.raises(NotFoundError, match="not registered"):
        CliRunner().invoke(cli, ["features", "show", "user_stats"], catch_exceptions=False)


def predict(frame: Any) -> Any:
    return [0] * len(frame)


def test_kinds_and_the_models_that_consume_a_view(
    cli: typer.Typer, project: Project, project_dir: Path
) -> None:
    from keel.registry import register_model_version, set_alias
    from keel.tracking.fluent import start_run

    write_on_demand(project_dir)
    applied = {r["name"]: r for r in json.loads(run(cli, "apply", "--json"))}
    assert {n: r["kind"] for n, r in applied.items()} == {
        "user_stats": "batch",
        "spend_share": "on_demand",
        "fraud": "service",
    }
    version = applied["user_stats"]["version"]
    for _ in range(2):
        with start_run(project=project) as training:
            training.log_input("feature_view", f"user_stats@{version}", name="user_stats")
            register_model_version(
                project, predict, "fraud_model", run_id=training.id, flavor="pyfunc"
            )
    set_alias(project, "fraud_model", "champion", 2)
    with start_run(project=project) as other:  # another view's consumer is not user_stats'
        other.log_input("feature_view", "spend_share@" + applied["spend_share"]["version"])
        register_model_version(project, predict, "churn", run_id=other.id, flavor="pyfunc")

    listed = {v["name"]: (v["kind"], v["models"]) for v in json.loads(run(cli, "list", "--json"))}
    assert listed == {
        "fraud": ("service", 0),
        "spend_share": ("on_demand", 1),
        "user_stats": ("batch", 2),
    }
    table = run(cli, "list")
    assert "on_demand" in table
    assert "models" in table

    shown = json.loads(run(cli, "show", "user_stats", "--json"))
    assert [
        (c["model"], c["version"], c["feature_version"], c["state"], c["aliases"])
        for c in shown["consumers"]
    ] == [
        ("fraud_model", 1, version, "candidate", []),
        ("fraud_model", 2, version, "candidate", ["champion"]),
    ]
    text = run(cli, "show", "user_stats")
    assert "Consumed by" in text
    assert "fraud_model" in text
    assert "champion" in text
    assert version[:12] in text
    assert "churn" not in text

    odfv = run(cli, "show", "spend_share")
    assert "On-demand feature view spend_share" in odfv
    assert "user_stats:amount, user_stats:amount_sum_2d" in odfv
    assert "price:float64" in odfv
    assert "share:float64" in odfv
    assert "churn" in odfv
    service = run(cli, "show", "fraud")
    assert "Feature service fraud" in service
    assert "user_stats, spend_share" in service
    assert "no model version consumes it" in service
