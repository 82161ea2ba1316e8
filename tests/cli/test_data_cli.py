"""`keel data add|status|checkout|install-hooks` end to end through keel.cli.main.main."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.cli.main import main
from keel.project import Project
from tests.data.gitrepo import commit_all, git, git_env, init_repo
from tests.data.helpers import write


@pytest.fixture
def cli(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Project]:
    """The CLI working in the test project (cwd inside it), with the data commands."""
    from keel.cli import output

    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(sqlite_project.root))
    monkeypatch.chdir(sqlite_project.root)
    monkeypatch.setattr(output.console, "width", 250)
    git_env(monkeypatch, tmp_path)
    init_repo(sqlite_project.root)
    write(sqlite_project.root / "data" / "train.csv", b"a,b\n1,2\n")
    for i in range(3):
        write(sqlite_project.root / "data" / "images" / f"{i}.png", bytes([i]) * 100)
    return sqlite_project


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_status_checkout(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "data", "add", "data/train.csv", "data/images")
    assert code == 0
    assert "data/train.csv.keel" in out
    assert "3 files" in out
    assert "git add data/train.csv.keel data/images.keel" in out
    assert (cli.root / "data" / "images.keel").is_file()

    code, out, _ = run(capsys, "data", "status")
    assert (code, out.strip()) == (0, "2 tracked path(s) up to date in workspace and cache.")

    (cli.root / "data" / "images" / "1.png").unlink()
    write(cli.root / "data" / "train.csv", b"changed")
    code, out, _ = run(capsys, "data", "status")
    assert code == 0
    assert "data/images" in out
    assert "modified 1 deleted" in out
    assert "keel data add PATH" in out
    code, _, _ = run(capsys, "data", "status", "--check")
    assert code == 1

    code, out, _ = run(capsys, "data", "status", "--json")
    report: dict[str, Any] = json.loads(out)
    assert report["clean"] is False
    assert {p["path"]: p["state"] for p in report["paths"]} == {
        "data/images": "modified",
        "data/train.csv": "modified",
    }

    code, _, err = run(capsys, "data", "checkout")
    assert code == 1  # a StateError: unsaved edits are not overwritten
    assert "keel data add" in err
    assert "--force" in err

    code, out, _ = run(capsys, "data", "checkout", "--force")
    assert code == 0
    assert "restored data/images, data/train.csv" in out
    assert (cli.root / "data" / "images" / "1.png").read_bytes() == bytes([1]) * 100
    assert (cli.root / "data" / "train.csv").read_bytes() == b"a,b\n1,2\n"


def test_checkout_rev_and_hooks(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "data", "add", "data/train.csv")[0] == 0
    first = commit_all(cli.root, "one")
    write(cli.root / "data" / "train.csv", b"two")
    assert run(capsys, "data", "add", "data/train.csv")[0] == 0
    commit_all(cli.root, "two")

    code, out, _ = run(capsys, "data", "checkout", "--rev", first)
    assert code == 0
    assert "restored data/train.csv" in out
    assert (cli.root / "data" / "train.csv").read_bytes() == b"a,b\n1,2\n"
    git(cli.root, "checkout", "-q", "--", "data/train.csv.keel")

    code, out, _ = run(capsys, "data", "install-hooks")
    assert code == 0
    assert "post-checkout" in out
    assert "post-merge" in out
    git(cli.root, "checkout", "-q", first)
    assert (cli.root / "data" / "train.csv").read_bytes() == b"a,b\n1,2\n"
    git(cli.root, "checkout", "-q", "main")
    assert (cli.root / "data" / "train.csv").read_bytes() == b"two"
    code, out, _ = run(capsys, "data", "install-hooks")
    assert out.strip() == "hooks already installed"


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["data", "add", "/etc/hostname"], 2, "outside the project"),
        (["data", "add", "nothing.csv"], 2, "does not exist"),
        (["data", "checkout", "--rev", "no-such-rev"], 2, "git revision 'no-such-rev' not found"),
        (["data", "status", "--remote", "nowhere"], 2, "data remote 'nowhere' is not configured"),
        # the same mistake gets the same answer from every command
        (["data", "push", "nope"], 3, "no pointer file for nope in the workspace"),
        (["data", "push", "nope.keel"], 3, "no pointer file for nope in the workspace"),
        (["data", "pull", "nope"], 3, "no pointer file for nope in the workspace"),
        (["data", "checkout", "nope"], 3, "no pointer file for nope in the workspace"),
    ],
)
def test_errors_are_one_line(
    cli: Project,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
    exit_code: int,
    message: str,
) -> None:
    if args[1] in ("push", "pull"):  # a remote is configured: only the path is wrong
        config = cli.root / "keel.yaml"
        remote = f"  remote: shared\n  remotes:\n    shared: {{url: '{tmp_path / 'remote'}'}}"
        config.write_text(config.read_text().replace("  remotes: {}", remote))
    code, _out, err = run(capsys, *args)
    assert code == exit_code
    assert err.startswith("error:")
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_hash_bar_starts_only_for_enough_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.cli import data

    bar = data._HashBar("hashing")
    bar(0, data.BAR_MIN_BYTES - 1)
    assert bar._progress is None  # small jobs finish before a bar would be worth drawing
    bar(0, data.BAR_MIN_BYTES)
    bar(data.BAR_MIN_BYTES, data.BAR_MIN_BYTES)
    assert bar._progress is not None
    assert bar._task is not None
    task = bar._progress.tasks[0]
    assert (task.completed, task.total) == (data.BAR_MIN_BYTES, data.BAR_MIN_BYTES)
    bar.close()
    assert bar._progress is None
