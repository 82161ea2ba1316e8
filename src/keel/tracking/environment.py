"""What a run captures without being asked: the code (git commit, branch, dirty flag and the
uncommitted diff), the environment (Python, platform, installed packages) and the command line.

Capture never fails a run: no git binary, no repository or a git error give empty fields.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keel.core.hashing import sha256_bytes
from keel.core.timeutil import now_ms
from keel.tracking.records import EnvironmentRecord

if TYPE_CHECKING:
    from importlib.metadata import Distribution

    from sqlalchemy import Connection

# Untracked files above this size (data dumps, checkpoints) are left out of the stored diff and
# named in its header instead: the diff is for reproducing code, not for storing data.
MAX_UNTRACKED_BYTES = 5 * 1024 * 1024
_GIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class GitState:
    """The state of the repository holding the project; every field is None outside git."""

    commit: str | None = None
    branch: str | None = None  # None when HEAD is detached
    dirty: bool | None = None
    diff: bytes | None = None  # `git diff HEAD --binary` + untracked files; None when clean


def capture_command() -> str:
    """The command line of this process: ``sys.argv`` shell-quoted (``train.py --lr 0.1``)."""
    return shlex.join(sys.argv)


@functools.cache
def capture_environment() -> EnvironmentRecord:
    """Python version, platform and installed packages of this process (computed once).

    >>> env = capture_environment()
    >>> env.packages["numpy"]      # doctest: +SKIP
    '2.4.0'
    """
    from importlib.metadata import distributions

    packages: dict[str, str] = {}
    for dist in distributions():
        name, version = _name_version(dist)
        if name and version:
            # The first distribution on sys.path wins, as it is the one `import` would load.
            packages.setdefault(_canonical_name(name), version)
    packages = dict(sorted(packages.items()))
    python_version = platform.python_version()
    system = platform.platform()
    body = {"packages": packages, "platform": system, "python": python_version}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return EnvironmentRecord(
        sha256=sha256_bytes(canonical.encode("utf-8")),
        python_version=python_version,
        platform=system,
        packages=packages,
    )


def record_environment(conn: Connection, env: EnvironmentRecord) -> str:
    """Store ``env`` once (keyed by its sha256; a repeat is a no-op) and return its sha256.

    >>> with project.metadata.write() as conn:            # doctest: +SKIP
    ...     sha = record_environment(conn, capture_environment())
    """
    from keel.metadata.schema import environments
    from keel.metadata.sql import insert_ignore

    row = {
        "sha256": env.sha256,
        "python_version": env.python_version,
        "platform": env.platform,
        "packages": env.packages,
        "created_at": now_ms(),
    }
    insert_ignore(conn, environments, [row], keys=["sha256"])
    return env.sha256


def capture_git(root: str | Path, *, with_diff: bool = True) -> GitState:
    """Commit, branch, dirty flag and uncommitted diff of the repository containing ``root``.

    The diff is ``git diff HEAD --binary`` plus every untracked, non-ignored file as an added
    file, so ``git apply`` on a checkout of the commit restores the working tree. Nothing in
    the repository changes (no index refresh, no objects written).

    >>> capture_git(".").commit     # doctest: +SKIP
    '5cf4b268f5c14ba0d83534cd05f0d1be0c403fce'
    """
    if shutil.which("git") is None:
        return GitState()
    top = _git(Path(root), "rev-parse", "--show-toplevel")
    if top is None:
        return GitState()
    toplevel = Path(top.decode().strip())
    status = _git(toplevel, "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all")
    if status is None:
        return GitState()
    commit, branch, changed, untracked = _parse_status(status)
    dirty = changed or bool(untracked)
    diff = _diff(toplevel, commit, untracked) if dirty and with_diff else None
    return GitState(commit=commit, branch=branch, dirty=dirty, diff=diff)


def _parse_status(out: bytes) -> tuple[str | None, str | None, bool, list[str]]:
    commit: str | None = None
    branch: str | None = None
    changed = False
    untracked: list[str] = []
    entries = out.decode("utf-8", "surrogateescape").split("\0")
    skip_next = False
    for entry in entries:
        if skip_next:  # the original path of a rename
            skip_next = False
        elif entry.startswith("# branch.oid "):
            oid = entry.removeprefix("# branch.oid ")
            commit = None if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            head = entry.removeprefix("# branch.head ")
            branch = None if head == "(detached)" else head
        elif entry.startswith("? "):
            untracked.append(entry[2:])
        elif entry[:2] in ("1 ", "2 ", "u "):
            changed = True
            skip_next = entry.startswith("2 ")
    return commit, branch, changed, untracked


def _diff(toplevel: Path, commit: str | None, untracked: list[str]) -> bytes | None:
    base = commit or _empty_tree(toplevel)
    if base is None:
        return None
    small, large = _split_by_size(toplevel, untracked)
    index = _git(toplevel, "rev-parse", "--path-format=absolute", "--git-path", "index")
    with tempfile.TemporaryDirectory(prefix="keel-git-") as tmp:
        # Intent-to-add entries in a throwaway copy of the index make `git diff` show untracked
        # files as new files, without touching the user's real index.
        temp_index = Path(tmp) / "index"
        real_index = Path(index.decode().strip()) if index else None
        if real_index is not None and real_index.is_file():
            # copy2 keeps the index's mtime, which git compares with each entry's to spot
            # files changed in the same second as the index was written ("racy git"); a
            # newer copy would make those look unchanged.
            shutil.copy2(real_index, temp_index)
        env = {"GIT_INDEX_FILE": str(temp_index)}
        if small:
            listing = "\0".join(small).encode("utf-8", "surrogateescape")
            args = ("add", "--intent-to-add", "--pathspec-from-file=-", "--pathspec-file-nul")
            if _git(toplevel, *args, env=env, stdin=listing) is None:
                large = [*small, *large]  # could not add them: at least name them
        diff = _git(toplevel, "diff", base, "--binary", "--no-ext-diff", "--no-textconv", env=env)
    if diff is None:
        return None
    if large:
        names = ", ".join(large)
        note = f"# keel: untracked files over {MAX_UNTRACKED_BYTES} bytes not included: {names}\n"
        diff = note.encode("utf-8", "surrogateescape") + diff
    return diff


def _split_by_size(toplevel: Path, paths: list[str]) -> tuple[list[str], list[str]]:
    small: list[str] = []
    large: list[str] = []
    for path in paths:
        try:
            size = (toplevel / path).lstat().st_size
        except OSError:
            continue  # vanished since `git status`
        (large if size > MAX_UNTRACKED_BYTES else small).append(path)
    return small, large


def _empty_tree(toplevel: Path) -> str | None:
    # Hashing without -w writes nothing; works for SHA-1 and SHA-256 repositories alike.
    out = _git(toplevel, "hash-object", "-t", "tree", os.devnull)
    return out.decode().strip() if out else None


def _git(
    cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> bytes | None:
    """Run git; None on any failure (not a repository, dubious ownership, timeout ...)."""
    # --no-optional-locks: `git status` must not refresh (write) the user's index.
    command = ["git", "--no-optional-locks", *args]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            env={**os.environ, "LC_ALL": "C", **(env or {})},
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _name_version(dist: Distribution) -> tuple[str | None, str | None]:
    # An installed wheel's folder is named NAME-VERSION.dist-info: reading that is ~100x faster
    # than parsing every METADATA file, which keeps the first model registration of a process
    # fast. Anything else (egg-info, unusual names) falls back to the metadata.
    folder = getattr(dist, "_path", None)
    folder_name = folder.name if isinstance(folder, Path) else ""
    stem = folder_name.removesuffix(".dist-info")
    if stem != folder_name and stem.count("-") == 1:
        name, version = stem.split("-")
        return name, version
    metadata = dist.metadata
    return metadata["Name"], metadata["Version"]


def _canonical_name(name: str) -> str:
    """PEP 503 normalisation, so 'PyYAML' and 'pyyaml' are one package."""
    out = name.lower()
    for sep in ("_", "."):
        out = out.replace(sep, "-")
    while "--" in out:
        out = out.replace("--", "-")
    return out
