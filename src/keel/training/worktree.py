"""An isolated checkout of the code a run was trained with: a git worktree at the recorded
commit (detached, so no branch moves) with the recorded uncommitted diff applied on top.

The worktree shares the repository's objects, so creating one copies only the files of that
commit, and the user's own checkout, index and branches are never touched.

    tree = create_worktree(project.root, run.git_commit, diff=diff_bytes,
                           dest=project.keel_dir / "reproduce" / "0190ab" / "tree")
    ...                      # run the old code in tree.project_root
    remove_worktree(tree)

Data and stores: ``store_settings`` gives this project's stores as absolute settings for a
project opened in the worktree, and ``restore_data`` checks the recorded dataset versions out
there (from the shared data cache or remote), after ``check_datasets_available`` has made sure
before any work that they can be.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import NotFoundError, StateError

if TYPE_CHECKING:
    from keel.project import Project

_GIT_TIMEOUT_S = 300.0
_OMITTED = re.compile(rb"^# keel: untracked files over \d+ bytes not included: (.*)$", re.M)


@dataclass(frozen=True)
class DatasetCheck:
    """A dataset the run read: its recorded version and the one restored in the worktree."""

    path: str
    recorded: str
    restored: str | None

    @property
    def ok(self) -> bool:
        return self.recorded == self.restored


@dataclass(frozen=True)
class Worktree:
    """A checkout made by ``create_worktree``. ``project_root`` is where the project sits in it
    (the project may live in a sub-folder of the repository); ``omitted`` names untracked files
    that were too large to be stored with the run's diff, so they are missing here."""

    path: Path
    repository: Path
    project_root: Path
    commit: str
    diff_applied: bool
    omitted: list[str] = field(default_factory=list)


class GitError(StateError):
    """Raised when a git command needed to rebuild the recorded code fails."""


def repository_of(root: Path) -> Path:
    """The top folder of the git repository holding ``root``; StateError outside git.

    >>> repository_of(Path("."))             # doctest: +SKIP
    PosixPath('/home/me/fraud')
    """
    if shutil.which("git") is None:
        raise StateError("git is not installed; install git to rebuild recorded code")
    done = _run_git(root, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise StateError(
            f"{root} is not inside a git repository; reproduction checks out the recorded "
            "commit, so the project must be the git repository it was trained in"
        )
    return Path(done.stdout.decode().strip()).resolve()


def require_commit(repository: Path, commit: str) -> str:
    """The full hash of ``commit``, or NotFoundError if the repository no longer has it."""
    done = _run_git(repository, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if done.returncode != 0:
        raise NotFoundError(
            f"commit {commit} is not in the repository at {repository} (rewritten by a rebase, "
            f"or never pushed from another clone?); fetch it, e.g. `git fetch origin {commit}`, "
            "then try again"
        )
    return done.stdout.decode().strip()


def create_worktree(project_root: Path, commit: str, *, diff: bytes | None, dest: Path) -> Worktree:
    """Check ``commit`` out at ``dest`` (which must not exist) and apply ``diff`` (the bytes a
    run stored: ``git diff --binary`` plus untracked files); the project's place inside the
    repository is kept. On any failure nothing is left behind.

    >>> create_worktree(Path("."), "5cf4b26", diff=None, dest=Path(".keel/r/1/tree")).commit
    ... # doctest: +SKIP
    '5cf4b268f5c14ba0d83534cd05f0d1be0c403fce'
    """
    root = Path(project_root).resolve()
    repository = repository_of(root)
    full = require_commit(repository, commit)
    dest = Path(dest).resolve()
    if dest.exists():
        raise StateError(f"{dest} already exists; remove it or pick another folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _check(repository, "worktree", "add", "--detach", "--quiet", str(dest), full)
    tree = Worktree(
        path=dest,
        repository=repository,
        project_root=dest / root.relative_to(repository),
        commit=full,
        diff_applied=bool(diff),
        omitted=omitted_files(diff),
    )
    if diff:
        try:
            _apply(dest, diff)
        except BaseException:
            remove_worktree(tree)
            raise
    return tree


def remove_worktree(tree: Worktree) -> None:
    """Delete the checkout and git's record of it; never fails (what is left is harmless)."""
    _run_git(tree.repository, "worktree", "remove", "--force", str(tree.path))
    if tree.path.exists():
        shutil.rmtree(tree.path, ignore_errors=True)
    _run_git(tree.repository, "worktree", "prune")


def omitted_files(diff: bytes | None) -> list[str]:
    """The untracked files a stored diff names as left out for their size."""
    if not diff:
        return []
    found = _OMITTED.search(diff[:65536])
    if found is None:
        return []
    names = found.group(1).decode("utf-8", "surrogateescape")
    return [name for name in names.split(", ") if name]


def store_settings(project: Project) -> dict[str, Any]:
    """This project's stores as absolute settings, so a project elsewhere (the worktree) uses
    the same metadata database, artifact store, data cache and remotes."""
    from keel.data.cache import cache_for
    from keel.data.remote import configured_remote

    data = project.config.data
    remotes: dict[str, Any] = {}
    for name in data.remotes:
        remote = configured_remote(project, name)
        if remote is not None:
            remotes[name] = {"url": remote.url, "options": dict(remote.options)}
    settings: dict[str, Any] = {
        "metadata.url": project.metadata.url,
        "artifacts.url": project.artifacts.url,
        "artifacts.options": dict(project.config.artifacts.options),
        "data.cache": str(cache_for(project).root.resolve()),
        "data.remotes": remotes,
    }
    if data.remote is not None:
        settings["data.remote"] = data.remote
    return settings


def check_datasets_available(project: Project, datasets: Mapping[str, str]) -> None:
    """Every recorded dataset version is in the data cache or on the remote, before any work."""
    from keel.data.cache import cache_for
    from keel.data.remote import configured_remote

    cache = cache_for(project)
    absent = {sha: path for path, sha in datasets.items() if not cache.has(sha)}
    if not absent:
        return
    remote = configured_remote(project)
    missing = (
        set(absent) if remote is None else remote.missing(set(absent), indexes=cache.pack_indexes)
    )
    if missing:
        shown = ", ".join(f"{absent[sha]} ({sha[:12]})" for sha in sorted(missing))
        where = "no data remote is configured" if remote is None else f"nor on {remote.describe()}"
        raise NotFoundError(
            f"the recorded dataset versions {shown} are not in the data cache and {where}; "
            "push them from a machine that has them (`keel data push`) or configure the remote"
        )


def restore_data(
    project: Project, datasets: Mapping[str, str], revs: Mapping[str, str] | None = None
) -> list[DatasetCheck]:
    """Check the worktree's data out as its pointer files say (objects from the shared cache
    or the remote), then report each recorded dataset version against the one now there —
    read at git revision ``revs[path]`` for data a run read at a revision (``--data-rev``).

    >>> restore_data(worktree_project, {"data/tx.parquet": "6b44..."})[0].ok  # doctest: +SKIP
    True
    """
    from keel.data.api import resolve
    from keel.data.restore import checkout

    checkout(project)
    checks = []
    for path, sha in sorted(datasets.items()):
        try:
            restored: str | None = resolve(path, (revs or {}).get(path), project=project).sha256
        except NotFoundError:
            restored = None
        checks.append(DatasetCheck(path, sha, restored))
    return checks


def _apply(dest: Path, diff: bytes) -> None:
    # The diff was taken from the repository's top folder, so it applies at the worktree's.
    done = _run_git(dest, "apply", "--binary", "--whitespace=nowarn", "-", stdin=diff)
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip() or "no reason given"
        raise GitError(
            f"the run's recorded diff does not apply on its commit ({reason}); the diff "
            "artifact may belong to another commit — check `keel runs show RUN_ID`"
        )


def _check(cwd: Path, *args: str) -> None:
    done = _run_git(cwd, *args)
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip() or "no reason given"
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {reason}")


def _run_git(
    cwd: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise GitError(f"could not run git {' '.join(args[:2])} in {cwd}: {exc}") from exc
