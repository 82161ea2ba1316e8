"""Automatic capture: git state and diff in a temporary repository, the environment record, the
command line, and what a run stores of them (on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from keel.metadata.schema import environments, runs
from keel.project import Project
from keel.tracking import environment, fluent
from keel.tracking.environment import (
    GitState,
    capture_environment,
    capture_git,
    record_environment,
)
from keel.tracking.fluent import start_run

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")


@pytest.fixture(autouse=True)
def _no_leftover_runs() -> Iterator[None]:
    yield
    for run in list(fluent._OPEN.values()):
        run.end("killed")
    fluent._ACTIVE.set(None)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def make_repo(root: Path) -> Path:
    """A repository with one commit on 'main': tracked.py, data.bin and a .gitignore."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "commit.gpgsign", "false")
    (root / "tracked.py").write_text("x = 1\n")
    (root / "data.bin").write_bytes(b"\x00\x01\x02")
    gitignore = root / ".gitignore"
    existing = gitignore.read_text() if gitignore.exists() else ""
    gitignore.write_text(existing + "*.log\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def run_row(project: Project, run_id: str) -> dict[str, Any]:
    with project.metadata.read() as conn:
        return dict(conn.execute(select(runs).where(runs.c.id == run_id)).mappings().one())


# --- capture_git -------------------------------------------------------------------------------


def test_outside_a_repository_everything_is_none(tmp_path: Path) -> None:
    assert capture_git(tmp_path) == GitState(None, None, None, None)


def test_without_git_binary_everything_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert capture_git(repo) == GitState()


def test_clean_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    state = capture_git(repo)
    assert state.commit == git(repo, "rev-parse", "HEAD")
    assert state.branch == "main"
    assert state.dirty is False
    assert state.diff is None


def test_dirty_repository_diff_has_changes_and_untracked_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "tracked.py").write_text("x = 1\ny = 'changed here'\n")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "new_module.py").write_text("NEW = 'untracked content'\n")
    (repo / "blob.dat").write_bytes(b"\x00\xffbinary")
    (repo / "debug.log").write_text("ignored content\n")
    index_before = (repo / ".git" / "index").read_bytes()

    state = capture_git(repo / "pkg")  # any folder inside the repository

    assert state.commit == git(repo, "rev-parse", "HEAD")
    assert state.branch == "main"
    assert state.dirty is True
    assert state.diff is not None
    diff = state.diff.decode()
    assert "+y = 'changed here'" in diff
    assert "diff --git a/pkg/new_module.py b/pkg/new_module.py" in diff
    assert "+NEW = 'untracked content'" in diff
    assert "blob.dat" in diff
    assert "GIT binary patch" in diff
    assert "ignored content" not in diff
    # The user's repository is untouched: same index, untracked files still untracked.
    assert (repo / ".git" / "index").read_bytes() == index_before
    assert "?? pkg/" in git(repo, "status", "--porcelain")


def test_diff_applied_to_the_commit_restores_the_working_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "tracked.py").write_text("x = 2\n")
    (repo / "data.bin").write_bytes(b"\x09\x08")
    (repo / "added.txt").write_text("hello\n")
    (repo / "tracked2.py").write_text("z = 3\n")
    state = capture_git(repo)
    assert state.diff is not None

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(clone, "checkout", "-q", state.commit or "")
    patch = tmp_path / "run.patch"
    patch.write_bytes(state.diff)
    git(clone, "apply", "--binary", str(patch))
    for name in ("tracked.py", "data.bin", "added.txt", "tracked2.py"):
        assert (clone / name).read_bytes() == (repo / name).read_bytes()


def test_a_change_in_the_second_the_index_was_written_is_in_the_diff(tmp_path: Path) -> None:
    """Git trusts a file whose size and (whole-second) times match its index entry unless
    the entry is as new as the index file itself ("racy git"): the diff must be taken with
    the index's own mtime, even when captured a second later."""
    import os
    import time

    for attempt in range(10):
        repo = make_repo(tmp_path / f"repo{attempt}")
        (repo / "tracked.py").write_text("x = 2\n")  # same size as the committed "x = 1"
        index_second = int(os.stat(repo / ".git" / "index").st_mtime)
        if int(os.stat(repo / "tracked.py").st_ctime) == index_second:
            break
    else:
        pytest.skip("could not commit and edit within one second")
    time.sleep(max(0.0, index_second + 1.05 - time.time()))  # capture in a later second
    state = capture_git(repo)
    assert state.diff is not None
    assert "+x = 2" in state.diff.decode()


def test_untracked_only_is_dirty(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "notes.md").write_text("todo\n")
    state = capture_git(repo)
    assert state.dirty is True
    assert state.diff is not None
    assert b"+todo" in state.diff


def test_large_untracked_files_are_named_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environment, "MAX_UNTRACKED_BYTES", 10)
    repo = make_repo(tmp_path / "repo")
    (repo / "small.txt").write_text("tiny\n")
    (repo / "big.csv").write_text("a,b\n" * 100)
    state = capture_git(repo)
    assert state.diff is not None
    diff = state.diff.decode()
    assert diff.startswith("# keel: untracked files over 10 bytes not included: big.csv")
    assert "+tiny" in diff
    assert "+a,b" not in diff


def test_detached_head_has_no_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "checkout", "-q", "--detach")
    state = capture_git(repo)
    assert state.branch is None
    assert state.commit == git(repo, "rev-parse", "HEAD")


def test_repository_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "dev")
    (repo / "first.py").write_text("print('first')\n")
    state = capture_git(repo)
    assert state.commit is None
    assert state.branch == "dev"
    assert state.dirty is True
    assert state.diff is not None
    assert b"+print('first')" in state.diff


def test_without_diff_capture_the_dirty_flag_stays(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "tracked.py").write_text("x = 3\n")
    state = capture_git(repo, with_diff=False)
    assert state.dirty is True
    assert state.diff is None


# --- environment ---------------------------------------------------------------------------------


def test_capture_environment_is_cached_and_describes_this_process() -> None:
    env = capture_environment()
    assert capture_environment() is env
    started = time.perf_counter()
    capture_environment()
    assert time.perf_counter() - started < 0.01
    assert env.python_version == ".".join(map(str, sys.version_info[:3]))
    assert env.packages["sqlalchemy"] == version("sqlalchemy")
    assert env.packages["pyyaml"] == version("PyYAML")  # names are normalised
    canonical = json.dumps(
        {"packages": env.packages, "platform": env.platform, "python": env.python_version},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert env.sha256 == hashlib.sha256(canonical.encode()).hexdigest()


def test_record_environment_stores_each_environment_once(project: Project) -> None:
    env = capture_environment()
    for _ in range(2):
        with project.metadata.write() as conn:
            assert record_environment(conn, env) == env.sha256
    with project.metadata.read() as conn:
        count = conn.execute(select(func.count()).select_from(environments)).scalar_one()
        row = conn.execute(select(environments)).mappings().one()
    assert count == 1
    assert row["sha256"] == env.sha256
    assert row["packages"] == env.packages
    assert row["python_version"] == env.python_version


# --- what a run stores ---------------------------------------------------------------------------


def test_run_in_a_dirty_repository_stores_git_state_and_diff(
    project: Project, project_dir: Path
) -> None:
    make_repo(project_dir)  # keel.yaml and .gitignore (with .keel/) are committed
    (project_dir / "train.py").write_text("EPOCHS = 3  # tuned today\n")
    (project_dir / "tracked.py").write_text("x = 42\n")
    with start_run(project=project) as run:
        pass
    row = run_row(project, run.id)
    assert row["git_commit"] == git(project_dir, "rev-parse", "HEAD")
    assert row["git_branch"] == "main"
    assert row["git_dirty"] is True
    diff = project.artifacts.get_bytes(row["git_diff_sha256"]).decode()
    assert "+EPOCHS = 3  # tuned today" in diff
    assert "+x = 42" in diff
    assert ".keel/" not in diff.replace("+.keel/", "")  # the metadata db is ignored
    assert row["environment_sha256"] == capture_environment().sha256
    assert row["command"] == shlex.join(sys.argv)


def test_run_in_a_clean_repository_stores_no_diff(project: Project, project_dir: Path) -> None:
    make_repo(project_dir)
    with start_run(project=project) as run:
        pass
    row = run_row(project, run.id)
    assert row["git_dirty"] is False
    assert row["git_diff_sha256"] is None
    assert row["git_commit"] == git(project_dir, "rev-parse", "HEAD")


def test_capture_diff_false_skips_storing_the_diff(project: Project, project_dir: Path) -> None:
    make_repo(project_dir)
    (project_dir / "tracked.py").write_text("x = 7\n")
    no_diff = Project(
        project_dir,
        overrides={"metadata.url": project.config.metadata.url, "tracking.capture_diff": False},
        environ={},
    )
    try:
        with start_run(project=no_diff) as run:
            pass
    finally:
        no_diff.close()
    row = run_row(project, run.id)
    assert row["git_dirty"] is True
    assert row["git_diff_sha256"] is None


def test_run_outside_git_has_no_git_fields(sqlite_project: Project) -> None:
    with start_run(project=sqlite_project) as run:
        pass
    row = run_row(sqlite_project, run.id)
    assert (row["git_commit"], row["git_branch"], row["git_dirty"]) == (None, None, None)
    assert row["git_diff_sha256"] is None
