"""`keel deploy ...`, driven through keel.cli.main.main like a user would."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from keel.cli import deploy as deploy_cli
from keel.cli.main import app, main
from keel.project import Project
from keel.registry import register_model_version, set_alias


def predict(frame: Any) -> list[int]:
    return [0] * len(frame)


@pytest.fixture
def cli(project: Project, project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The test project as the CLI finds it, with model 'fraud' at versions 1-3."""
    if not any(group.name == "deploy" for group in app.registered_groups):
        deploy_cli.register(app)  # until the root app wires the group itself
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(project_dir))
    monkeypatch.setenv("KEEL_METADATA_URL", project.config.metadata.url)
    monkeypatch.setenv("KEEL_USER", "cli-user")
    from keel.cli import output

    monkeypatch.setattr(output.console, "width", 250)
    for _ in range(3):
        register_model_version(project, predict, "fraud", flavor="pyfunc")
    set_alias(project, "fraud", "champion", 2)
    return project


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main(["deploy", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_canary_lifecycle_and_history(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    first = run_json(capsys, "set", "ep", "fraud@champion", "--reason", "launch")
    assert first["version"] == 1
    assert first["spec"]["primary"] == "fraud@2"
    canary = run_json(
        capsys,
        "canary",
        "ep",
        "fraud@3",
        "--plan",
        "10,50,100",
        "--hold",
        "90s",
        "--min-sample",
        "20",
    )
    assert canary["spec"]["strategy"] == "canary"
    assert canary["spec"]["canary"]["plan"] == [10, 50, 100]
    assert canary["spec"]["canary"]["hold_s"] == 90
    assert canary["spec"]["canary"]["min_sample"] == 20
    assert run_json(capsys, "pause", "ep")["spec"]["canary"]["status"] == "paused"
    assert run_json(capsys, "resume", "ep")["spec"]["canary"]["status"] == "running"
    assert run_json(capsys, "advance", "ep")["spec"]["canary"]["step"] == 1
    promoted = run_json(capsys, "promote", "ep", "--reason", "all gates green")
    assert promoted["spec"] == {
        "primary": "fraud@3",
        "strategy": "single",
        "candidate": None,
        "canary": None,
        "ab": None,
    }
    events = run_json(capsys, "history", "ep")
    assert [e["action"] for e in events] == [
        "deploy",
        "start_canary",
        "pause",
        "resume",
        "advance",
        "promote",
    ]
    assert {e["author"] for e in events} == {"cli-user"}
    assert events[-1]["reason"] == "all gates green"
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5, 6]

    before = run_json(capsys, "history", "ep", "--at", "2000-01-01T00:00:00Z")
    assert before["spec"] is None
    now = run_json(capsys, "history", "ep", "--at", events[-1]["at"])
    assert now["spec"]["primary"] == "fraud@3"
    during = run_json(capsys, "history", "ep", "--at", events[1]["at"])
    assert during["spec"]["candidate"] == "fraud@3"

    capsys.readouterr()
    assert main(["deploy", "history", "ep"]) == 0
    table = capsys.readouterr().out
    assert "fraud@2 + canary fraud@3 at 10 % (running)" in table
    assert "all gates green" in table
    assert main(["deploy", "show", "ep"]) == 0
    assert "fraud@3" in capsys.readouterr().out


def test_shadow_ab_and_stop(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    run_json(capsys, "set", "ep", "fraud@1")
    shadow = run_json(capsys, "shadow", "ep", "fraud@2")
    assert (shadow["spec"]["strategy"], shadow["spec"]["candidate"]) == ("shadow", "fraud@2")
    assert run_json(capsys, "rollback", "ep")["spec"]["strategy"] == "single"
    ab = run_json(
        capsys,
        "ab",
        "ep",
        "control=fraud@1",
        "treatment=fraud@champion",
        "--weights",
        "30,70",
        "--salt",
        "x1",
    )
    assert ab["spec"]["ab"] == {
        "arms": {"control": "fraud@1", "treatment": "fraud@2"},
        "weights": {"control": 0.3, "treatment": 0.7},
        "salt": "x1",
    }
    capsys.readouterr()
    assert main(["deploy", "show", "ep"]) == 0
    shown = capsys.readouterr().out
    assert "control=fraud@1 (30 %)" in shown
    assert "treatment=fraud@2 (70 %)" in shown
    assert run_json(capsys, "stop", "ep")["spec"]["primary"] == "fraud@1"
    assert run_json(capsys, "show", "ep")["version"] == 5


ERRORS: list[tuple[list[str], int, str]] = [
    (["advance", "ep"], 1, "single deployment"),
    (["set", "ep", "fraud@7"], 3, "version 7"),
    (["show", "nowhere"], 3, "no deployment"),
    (["canary", "ep", "fraud@2", "--plan", "5,1,100"], 2, "increasing"),
    (["canary", "ep", "fraud@2", "--hold", "soon"], 2, "duration 'soon'"),
    (
        ["ab", "ep", "control=fraud@1", "treatment=fraud@2", "--weights", "60,60"],
        2,
        "sum to 100",
    ),
    (["ab", "ep", "control=fraud@1", "fraud@2"], 2, "ARM=MODEL@REF"),
    (["history", "ep", "--at", "2026-01-01T00:00:00"], 2, "with a zone"),
]


def test_errors_exit_non_zero_with_the_fix(
    cli: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "set", "ep", "fraud@1"]) == 0
    for args, code, message in ERRORS:
        capsys.readouterr()
        assert main(["deploy", *args]) == code, args
        assert message in capsys.readouterr().err.replace("\n", " "), args
    assert run_json(capsys, "show", "ep")["version"] == 1


def test_duration_parsing() -> None:
    assert deploy_cli.parse_duration("24h") == 86_400
    assert deploy_cli.parse_duration("1.5m") == 90
    assert deploy_cli.parse_duration("250ms") == 0.25
    assert deploy_cli.parse_duration("2d") == 172_800
    assert deploy_cli.parse_duration("45") == 45
