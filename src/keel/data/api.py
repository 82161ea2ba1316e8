"""Reading versioned data from Python: `open` and `resolve`, at the worktree or a git revision.

`open` returns the bytes of the version the pointer file records (from the cache, fetched from
the remote when missing, verified), so what a run reads is exactly what its recorded hash
names; edits in the workspace are versioned by `keel data add` first. When a run is active
the dataset version is recorded as one of its inputs, so `keel lineage --dataset HASH` finds
every model trained on it.
"""

from __future__ import annotations

import builtins
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from keel.data.cache import DataCache, cache_for
from keel.data.manifest import parse_manifest
from keel.data.paths import project_relative
from keel.data.pointer import Pointer, pointer_file_for, read_pointer
from keel.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from keel.project import Project


@dataclass(frozen=True)
class DatasetVersion:
    """One version of a dataset: ``path`` (project-relative), the ``sha256`` of its bytes (of
    the manifest for a folder), ``size`` in bytes, ``files`` count, and ``uri`` — the remote
    object's URL when a remote is configured, else ``keel://<sha256>``. A file inside a
    tracked folder is addressed through its folder: ``<folder's uri>#<path in the folder>``
    (small files travel packed, without an object URL of their own)."""

    path: str
    sha256: str
    size: int
    files: int
    uri: str


@dataclass(frozen=True)
class _Located:
    pointer: Pointer  # the tracked file or folder holding ``path``
    path: str
    sha256: str
    size: int
    files: int
    is_dir: bool


def resolve(
    path: str | Path, rev: str | None = None, *, project: Project | None = None
) -> DatasetVersion:
    """The version of the data at ``path`` (a tracked file or folder, or a file inside a
    tracked folder) in the worktree or at git revision ``rev``. Relative paths are relative to
    the project root.

    >>> keel.data.resolve("data/train.csv", rev="v1.0").sha256       # doctest: +SKIP
    '9f2c...'
    """
    project = _project(project)
    found = _locate(project, path, rev)
    from keel.data.remote import configured_remote

    remote = configured_remote(project)
    tracked = found.pointer.sha256
    uri = remote.object_url(tracked) if remote else f"keel://{tracked}"
    if found.path != found.pointer.path:
        from urllib.parse import quote

        uri += "#" + quote(found.path[len(found.pointer.path) + 1 :])
    return DatasetVersion(found.path, found.sha256, found.size, found.files, uri)


def open(
    path: str | Path,
    rev: str | None = None,
    mode: str = "rb",
    *,
    encoding: str | None = None,
    project: Project | None = None,
) -> IO[Any]:
    """Open the versioned bytes of the file at ``path`` (in the worktree's version, or at git
    ``rev``) for reading, verified against their sha256. Inside an active run the dataset
    version (the tracked file, or the tracked folder the file is in) is recorded as an input.

    >>> with keel.data.open("data/train.csv", rev="v1.0") as f:      # doctest: +SKIP
    ...     frame = pandas.read_csv(f)
    """
    if mode not in ("rb", "r"):
        raise InvalidInputError(f"mode {mode!r} is not supported; versioned data opens 'rb' or 'r'")
    project = _project(project)
    found = _locate(project, path, rev)
    if found.is_dir:
        raise InvalidInputError(
            f"{found.path} is a folder; open a file inside it, e.g. "
            f"keel.data.open('{found.path}/NAME'), or keel.data.resolve('{found.path}')"
        )
    cache = cache_for(project)
    _ensure(project, cache, found.sha256, found.path)
    _verify(project, cache, found.sha256)
    _record_input(found.pointer, rev)
    target = cache.path_of(found.sha256)
    if mode == "rb":
        return builtins.open(target, "rb")
    return builtins.open(target, encoding=encoding or "utf-8")


def _project(project: Project | None) -> Project:
    if project is not None:
        return project
    from keel.project import Project

    return Project.discover()


def _locate(project: Project, path: str | Path, rev: str | None) -> _Located:
    root = project.root
    rel = project_relative(root, path, must_exist=False)
    parts = rel.split("/")
    candidates = ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    pointer = _pointer(root, candidates, rev)
    if pointer is None:
        where = f" at {rev}" if rev else ""
        raise NotFoundError(
            f"{rel} is not versioned data{where} (no {rel}.keel pointer file, nor one for a "
            f"folder holding it); `keel data add {rel}` versions it"
        )
    if pointer.path == rel:
        return _Located(
            pointer, rel, pointer.sha256, pointer.size, pointer.files, pointer.kind == "dir"
        )
    inner = rel[len(pointer.path) + 1 :]
    cache = cache_for(project)
    _ensure(project, cache, pointer.sha256, pointer.path)
    entries = parse_manifest(cache.read_bytes(pointer.sha256))
    entry = next((e for e in entries if e.path == inner), None)
    if entry is None:
        inside = any(e.path.startswith(inner + "/") for e in entries)
        what = "a sub-folder of" if inside else "not a file in"
        raise NotFoundError(
            f"{rel} is {what} the tracked folder {pointer.path}"
            f"{f' at {rev}' if rev else ''}; open one of its files, or resolve the folder"
        )
    return _Located(pointer, rel, entry.sha256, entry.size, 1, False)


def _pointer(root: Path, candidates: list[str], rev: str | None) -> Pointer | None:
    if rev is not None:
        from keel.data.gitrev import pointer_at

        return pointer_at(root, rev, candidates)
    for rel in candidates:
        if pointer_file_for(root / rel).is_file():
            return read_pointer(pointer_file_for(root / rel), root)
    return None


def _ensure(project: Project, cache: DataCache, sha256: str, path: str) -> None:
    """Fetch object ``sha256`` from the remote when the cache lacks it."""
    if cache.has(sha256):
        return
    from keel.data.remote import HOW_TO_ADD, configured_remote

    remote = configured_remote(project)
    if remote is None:
        raise NotFoundError(
            f"the data of {path} ({sha256}) is not in the data cache and no data remote is "
            f"configured; {HOW_TO_ADD}"
        )
    remote.pull(cache, {sha256})
    if not cache.has(sha256):
        raise NotFoundError(f"the data of {path} ({sha256}) is not on {remote.describe()}")


def _verify(project: Project, cache: DataCache, sha256: str) -> None:
    """Hash the object unless the stat cache says it was verified and is unchanged since."""
    from keel.data.hashing import hash_file
    from keel.data.statcache import stat_cache_for

    target = cache.path_of(sha256)
    with stat_cache_for(project.keel_dir) as stats:
        st = os.stat(target)
        if stats.object_verified(sha256, st):
            return
        if hash_file(target)[0] != sha256:
            raise cache.corrupted(sha256)
        stats.record_objects([(sha256, st)])


def _record_input(pointer: Pointer, rev: str | None) -> None:
    # A run can only be active if the tracking module was imported: do not import it here.
    fluent = sys.modules.get("keel.tracking.fluent")
    run = fluent.active_run() if fluent is not None else None
    if run is None:
        return
    details: dict[str, Any] = {"size": pointer.size, "files": pointer.files, "kind": pointer.kind}
    if rev is not None:
        details["rev"] = rev
    run.log_input("dataset", pointer.sha256, name=pointer.path, details=details)
