"""Worktrees at a recorded commit with the recorded diff applied (keel.training.worktree)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.errors import NotFoundError, StateError
from keel.tracking.environment import capture_git
from keel.training.worktree import (
    GitError,
    create_worktree,
    omitted_files,
    remove_worktree,
    repository_of,
    require_commit,
)
from tests.data.gitrepo import commit_all, git, git_env, init_repo


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    git_env(monkeypatch, tmp_path / "home")
    root = tmp_path / "repo"
    (root / "project").mkdir(parents=True)
    init_repo(root)
    (root / ".gitignore").write_text(".keel/\n")
    (root / "project" / "train.py").write_text("VERSION = 1\n")
    (root / "project" / "model.bin").write_bytes(bytes(range(256)))
    return root


def test_checks_out_the_commit_with_the_recorded_diff_applied(repo: Path) -> None:
    first = commit_all(repo, "v1")
    project = repo / "project"
    # The state a run records: edits, a binary change and an untracked file on top of v1.
    (project / "train.py").write_text("VERSION = 2  # uncommitted\n")
    (project / "model.bin").write_bytes(bytes(reversed(range(256))))
    (project / "helper.py").write_text("HELP = True\n")
    state = capture_git(project)
    assert state.commit == first
    assert state.diff is not None
    # Then main moves on: new commit, the file rewritten again, the helper gone.
    (project / "train.py").write_text("VERSION = 3\n")
    (project / "helper.py").unlink()
    commit_all(repo, "v3")

    dest = project / ".keel" / "reproduce" / "r1" / "tree"
    tree = create_worktree(project, first[:10], diff=state.diff, dest=dest)

    assert tree.commit == first
    assert tree.diff_applied
    assert tree.omitted == []
    assert tree.project_root == dest / "project"
    assert (tree.project_root / "train.py").read_text() == "VERSION = 2  # uncommitted\n"
    assert (tree.project_root / "model.bin").read_bytes() == bytes(reversed(range(256)))
    assert (tree.project_root / "helper.py").read_text() == "HELP = True\n"
    # The user's checkout is untouched: still v3 on main, clean.
    assert (project / "train.py").read_text() == "VERSION = 3\n"
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(repo, "status", "--porcelain") == ""

    remove_worktree(tree)
    assert not dest.exists()
    assert str(dest) not in git(repo, "worktree", "list")


def test_clean_run_gives_a_plain_checkout(repo: Path) -> None:
    first = commit_all(repo, "v1")
    tree = create_worktree(repo / "project", first, diff=None, dest=repo / ".keel" / "t")
    try:
        assert not tree.diff_applied
        assert (tree.project_root / "train.py").read_text() == "VERSION = 1\n"
        assert git(tree.path, "status", "--porcelain") == ""
    finally:
        remove_worktree(tree)


def test_a_commit_that_no_longer_exists_is_a_clear_error_before_any_work(repo: Path) -> None:
    commit_all(repo, "v1")
    missing = "0123456789abcdef0123456789abcdef01234567"
    dest = repo / ".keel" / "t"
    with pytest.raises(NotFoundError, match=f"commit {missing} is not in the repository"):
        create_worktree(repo / "project", missing, diff=None, dest=dest)
    assert not dest.exists()
    with pytest.raises(NotFoundError, match="git fetch origin"):
        require_commit(repo, "deadbeef")


def test_a_diff_that_does_not_apply_leaves_nothing_behind(repo: Path) -> None:
    first = commit_all(repo, "v1")
    bad = (
        b"diff --git a/project/train.py b/project/train.py\n"
        b"--- a/project/train.py\n+++ b/project/train.py\n"
        b"@@ -1 +1 @@\n-NOT THE CONTENT\n+VERSION = 9\n"
    )
    dest = repo / ".keel" / "t"
    with pytest.raises(GitError, match="does not apply"):
        create_worktree(repo / "project", first, diff=bad, dest=dest)
    assert not dest.exists()
    assert git(repo, "worktree", "list").count("\n") == 0  # only the main worktree


def test_outside_git_is_a_state_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git_env(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "plain").mkdir()
    with pytest.raises(StateError, match="not inside a git repository"):
        repository_of(tmp_path / "plain")


def test_names_untracked_files_left_out_of_the_diff() -> None:
    diff = b"# keel: untracked files over 5242880 bytes not included: a.bin, b/c.npy\ndiff --git"
    assert omitted_files(diff) == ["a.bin", "b/c.npy"]
    assert omitted_files(b"diff --git a/x b/x\n") == []
    assert omitted_files(None) == []
