"""Reading pointer files as they were at a git revision (without touching the worktree)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from keel.data.paths import RESERVED
from keel.data.pointer import SUFFIX, Pointer, parse_pointer
from keel.errors import InvalidInputError, StateError


def git(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Run git in ``root``; a failure becomes a StateError carrying git's own message."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], input=stdin, capture_output=True, check=False
        )
    except FileNotFoundError:
        raise StateError("git is not installed; install it to use --rev") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise StateError(f"`git {' '.join(args)}` failed: {message[-1] if message else ''}")
    return done.stdout


def project_prefix(root: Path) -> str:
    """The project root's path inside its git repository ("" at the top, else "sub/dir/")."""
    try:
        return git(root, "rev-parse", "--show-prefix").decode().strip()
    except StateError:
        raise StateError(
            f"{root} is not inside a git repository; `git init` it to version data by revision"
        ) from None


def resolve_rev(root: Path, rev: str) -> str:
    """The commit id of ``rev``, or InvalidInputError naming the revision."""
    try:
        return git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
    except StateError:
        raise InvalidInputError(
            f"git revision {rev!r} not found; `git log --oneline` lists commits, "
            "`git branch -a` and `git tag` the names"
        ) from None


def pointers_at(root: Path, rev: str) -> list[Pointer]:
    """Every pointer file of the project as committed at ``rev`` (sorted by path)."""
    commit = resolve_rev(root, rev)
    prefix = project_prefix(root)
    listing = git(root, "ls-tree", "-r", "-z", "--name-only", "--full-tree", commit)
    names = []
    for raw in listing.split(b"\0"):
        name = raw.decode("utf-8", "surrogateescape")
        if not name.startswith(prefix) or not name.endswith(SUFFIX) or name.endswith("/" + SUFFIX):
            continue
        rel = name[len(prefix) :]
        if rel == SUFFIX or set(rel.split("/")[:-1]) & RESERVED:
            continue
        names.append(rel)
    texts = read_blobs(root, commit, [prefix + n for n in names])
    return [
        parse_pointer(_text(text, rel), rel[: -len(SUFFIX)], source=f"{rel} at {rev}")
        for rel, text in zip(names, texts, strict=True)
        if text is not None
    ]


def pointer_at(root: Path, rev: str, rel_candidates: list[str]) -> Pointer | None:
    """The first of the data paths ``rel_candidates`` with a pointer file at ``rev``."""
    commit = resolve_rev(root, rev)
    prefix = project_prefix(root)
    texts = read_blobs(root, commit, [prefix + rel + SUFFIX for rel in rel_candidates])
    for rel, text in zip(rel_candidates, texts, strict=True):
        if text is not None:
            return parse_pointer(_text(text, rel), rel, source=f"{rel}{SUFFIX} at {rev}")
    return None


def read_blobs(root: Path, commit: str, paths: list[str]) -> list[bytes | None]:
    """Contents of ``paths`` (repository-relative) at ``commit``, None where absent."""
    if not paths:
        return []
    out = git(root, "cat-file", "--batch", stdin="".join(f"{commit}:{p}\n" for p in paths).encode())
    blobs: list[bytes | None] = []
    pos = 0
    for _ in paths:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3 or header[1] != b"blob":
            blobs.append(None)  # "<name> missing", or a tree where a file was expected
            if len(header) == 3:
                pos += int(header[2]) + 1
            continue
        size = int(header[2])
        blobs.append(out[pos : pos + size])
        pos += size + 1
    return blobs


def _text(blob: bytes, rel: str) -> str:
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"pointer file {rel} at this revision is not UTF-8 text") from None
