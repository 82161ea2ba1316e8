"""`keel runs list|show|search|compare` end to end through keel.cli.main.main, on SQLite and
PostgreSQL. Rows are inserted straight into the tables (no dependency on the write side)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console

from keel.cli import output
from keel.cli.main import main
from keel.metadata import schema
from keel.project import Project

T0 = 1_700_000_000_000
SHA = "cd" * 32
A = "018bcfe56800" + "a" * 20
B = "018bcfe56800" + "b" * 20
C = "018bcfe5a000" + "c" * 20


@pytest.fixture
def cli(project: Project, metadata_url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The CLI pointed at ``project`` (same database), printing wide and without colour."""
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(project.root))
    monkeypatch.setenv("KEEL_METADATA_URL", metadata_url)
    monkeypatch.setattr(output, "console", Console(width=250, color_system=None))
    monkeypatch.setattr(output, "err_console", Console(width=250, color_system=None, stderr=True))
    with project.metadata.write() as conn:
        conn.execute(
            schema.experiments.insert(),
            [
                {"id": 1, "name": "fraud", "created_at": T0},
                {"id": 2, "name": "churn", "created_at": T0},
            ],
        )
        conn.execute(
            schema.environments.insert().values(
                sha256=SHA,
                python_version="3.11.7",
                platform="Linux-6.1-x86_64",
                packages={},
                created_at=T0,
            )
        )
        conn.execute(
            schema.runs.insert(),
            [
                run_row(
                    A,
                    1,
                    "lgbm-[bold]a",
                    T0,
                    git_commit="c0ffee",
                    git_branch="main",
                    git_dirty=False,
                    environment_sha256=SHA,
                    command="python train.py",
                    seeds={"python": 7},
                    notes="first try",
                ),
                run_row(B, 1, "xgb-b", T0 + 1000, status="failed", error="ValueError: NaN"),
                run_row(C, 2, "lgbm-c", T0 + 2000),
            ],
        )
        conn.execute(
            schema.params.insert(),
            [
                {"run_id": A, "key": "model", "value": "lgbm"},
                {"run_id": A, "key": "lr", "value": "0.1"},
                {"run_id": B, "key": "model", "value": "xgb"},
                {"run_id": B, "key": "lr", "value": "0.1"},
                {"run_id": C, "key": "model", "value": "lgbm"},
            ],
        )
        conn.execute(
            schema.latest_metrics.insert(),
            [
                {"run_id": r, "key": "auc", "value": v, "step": 0, "timestamp": T0}
                for r, v in ((A, 0.93), (B, 0.88), (C, 0.95))
            ],
        )
        conn.execute(schema.tags.insert().values(run_id=A, key="team", value="risk"))
        conn.execute(
            schema.run_artifacts.insert().values(
                run_id=A, path="model/model.pkl", sha256=SHA, size=4096, created_at=T0
            )
        )
        conn.execute(
            schema.run_inputs.insert().values(
                run_id=A,
                kind="dataset",
                ref="sha256:" + SHA[:12],
                name="transactions.parquet",
                created_at=T0,
            )
        )
    return project


def run_row(run_id: str, experiment: int, name: str, start: int, **extra: Any) -> dict[str, Any]:
    row = {
        "id": run_id,
        "experiment_id": experiment,
        "name": name,
        "status": "finished",
        "start_time": start,
        "end_time": start + 65_000,
        "user": "ana",
        "parent_run_id": None,
        "error": None,
        "notes": None,
        "git_commit": None,
        "git_branch": None,
        "git_dirty": None,
        "git_diff_sha256": None,
        "environment_sha256": None,
        "command": None,
        "seeds": None,
    }
    return {**row, **extra}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["runs", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = [line for line in out.splitlines() if "018bcfe5" in line]
    assert [line.split()[1] for line in lines] == [C[:16], B[:16], A[:16]]  # newest first
    assert "lgbm-[bold]a" in out  # user text is not read as markup
    assert "1m05s" in out
    code, out, err = run(capsys, "list", "--experiment", "fraud", "--status", "failed", "-n", "1")
    assert code == 0
    assert B[:16] in out
    assert A[:16] not in out
    assert "showing the newest 1" in err
    code, out, _ = run(capsys, "list", "--json")
    assert [r["id"] for r in json.loads(out)] == [C, B, A]


def test_show(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", A[:14])
    assert code == 0
    for expected in (
        f"run {A}",
        "lgbm-[bold]a",
        "c0ffee on main (clean)",
        f"{SHA} (python 3.11.7, Linux-6.1-x86_64)",
        "python train.py",
        "python=7",
        "first try",
        "model/model.pkl",
        "4.0 KiB",
        "transactions.parquet",
        "0.93",
        "risk",
    ):
        assert expected in out, expected
    code, out, _ = run(capsys, "show", B, "--json")
    data = json.loads(out)
    assert (data["id"], data["status"], data["error"], data["environment"]) == (
        B,
        "failed",
        "ValueError: NaN",
        None,
    )
    assert data["params"] == {"lr": "0.1", "model": "xgb"}
    assert data["duration_seconds"] == 65.0
    assert json.loads(run(capsys, "show", A, "--json")[1])["environment"]["python_version"] == (
        "3.11.7"
    )


def test_search(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "search",
        "metrics.auc > 0.9 and params.model = 'lgbm'",
        "--order-by",
        "metrics.auc DESC",
        "-o",
        "params.lr",
    )
    assert code == 0
    header = next(line for line in out.splitlines() if "run id" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == [
        "run id",
        "experiment",
        "name",
        "status",
        "start",
        "duration",
        "metrics.auc",
        "params.model",
        "params.lr",
    ]
    rows = [line for line in out.splitlines() if "018bcfe5" in line]
    assert [line.split()[1] for line in rows] == [C[:16], A[:16]]
    assert "0.95" in rows[0]
    assert "0.1" in rows[1]
    code, out, _ = run(capsys, "search", "", "--experiment", "churn", "--json")
    assert [r["id"] for r in json.loads(out)] == [C]
    code, out, _ = run(capsys, "search", "params.lr = 0.1", "-o", "start_time", "-n", "1", "--json")
    assert [r["id"] for r in json.loads(out)] == [A]


def test_compare(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compare", A[:12] + "a", B)
    assert code == 0
    rows = {
        next(w for w in line.split() if w.startswith(("params.", "metrics."))): line
        for line in out.splitlines()
        if "params." in line or "metrics." in line
    }
    assert "≠" in rows["params.model"]
    assert "lgbm" in rows["params.model"]
    assert "≠" in rows["metrics.auc"]
    assert "≠" not in rows["params.lr"]
    assert A[:16] in out
    assert B[:16] in out
    code, out, _ = run(capsys, "compare", A, B, C, "--json")
    data = json.loads(out)
    assert data["runs"] == [A, B, C]
    assert data["params"]["model"] == ["lgbm", "xgb", "lgbm"]
    assert data["params"]["lr"] == ["0.1", "0.1", None]
    assert data["differing_params"] == ["lr", "model"]
    assert data["differing_metrics"] == ["auc"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["search", "metrics.auc > "],
            2,
            "filter: expected a value after '>' at column 15: metrics.auc >",
        ),
        (["search", "bogus = 1"], 2, "unknown attribute 'bogus'"),
        (["search", "", "--order-by", "metrics.auc sideways"], 2, "order by: expected ASC"),
        (["search", "", "--experiment", "nope"], 3, "no experiment named 'nope'"),
        (["show", "ffffffffff"], 3, "no run with id 'ffffffffff'; `keel runs list`"),
        (["show", "018bcfe568"], 2, "matches several runs"),
        (["show", "abc"], 2, "too short"),
        (["compare", A], 2, "compare needs at least two run ids"),
        (["list", "--status", "done"], 2, "unknown status 'done'"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    cli: Project, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    got, out, err = run(capsys, *args)
    assert got == code
    assert message in err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    assert out == ""
