"""Garbage collection of data objects no version still needs.

An object is kept when anything could still ask for it:
- a pointer file in the workspace;
- a pointer file committed on the listed git branches (default: every local branch);
- the lineage of any registered model version: the datasets its run, or any parent of that
  run, read or declared (run_inputs of kind 'dataset'). DVC's gc only looks at the workspace
  and so deletes data a model still needs (DVC issue #3476); here the model registry counts.
A folder keeps its manifest and every file the manifest lists. On a remote, a pack
(keel.data.packs) is deleted whole once none of its objects is referenced, and kept whole
while any is.

The default is a dry run that reports what would be deleted and the bytes freed; ``dry_run=
False`` deletes from the local cache and, when a remote is given, from the remote too.
Objects pushed but not yet referenced by any pointer or model (e.g. from another clone's
uncommitted work) are deleted from a remote by a real run: run gc where the work is committed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keel.core.hashing import is_sha256
from keel.errors import KeelError, StateError

if TYPE_CHECKING:
    from keel.data.cache import DataCache
    from keel.data.inventory import Contents
    from keel.data.pointer import Pointer
    from keel.data.remote import Remote
    from keel.project import Project

STALE_TEMP_SECONDS = 24 * 3600  # temporary files older than this are left over from crashes
SNIFF_LIMIT = 64 << 20  # a lineage ref of unknown kind is read as a manifest only below this


@dataclass(frozen=True)
class GcReport:
    """``cache``/``remote``: (sha256, size) of the objects deleted — or that would be, when
    ``dry_run``. ``kept``: objects referenced. ``unresolved``: model-lineage datasets found
    nowhere (nothing of theirs can be kept). ``packs``: remote packs deleted whole;
    ``kept_packed``: unreferenced remote objects kept because their pack also holds
    referenced ones; ``unfinished``: (pack sha256, size) of packs an interrupted push left
    without an index, deleted once a day old."""

    dry_run: bool
    kept: int
    cache: list[tuple[str, int]]
    remote: list[tuple[str, int]] | None = None
    remote_name: str | None = None
    branches: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    packs: int = 0
    kept_packed: int = 0
    unfinished: list[tuple[str, int]] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        on_remote = [*(self.remote or []), *self.unfinished]
        return sum(size for _, size in self.cache) + sum(size for _, size in on_remote)


def gc(
    project: Project,
    *,
    branches: Iterable[str] | None = None,
    remote: str | None = None,
    dry_run: bool = True,
) -> GcReport:
    """Find (and unless ``dry_run``, delete) the cache objects — and, with ``remote``, the
    remote's objects — that no workspace pointer, pointer on ``branches`` or model version
    lineage references.

    >>> report = gc(project)                                   # doctest: +SKIP
    >>> len(report.cache), report.freed_bytes                  # doctest: +SKIP
    (12, 491520)
    >>> gc(project, remote="storage", dry_run=False)           # doctest: +SKIP
    """
    from keel.data.cache import cache_for
    from keel.data.remote import remote_for

    cache = cache_for(project)
    target = remote_for(project, remote) if remote is not None else None
    source = target or _default_remote(project)  # where missing manifests are fetched from
    names = _branches(project.root, branches)
    pointers = _workspace_pointers(project) + _branch_pointers(project.root, names)
    keep = _pointer_objects(cache, pointers, source)
    lineage_keep, unresolved = _lineage_objects(project, cache, source)
    keep |= lineage_keep
    local = [(sha, _size(cache.path_of(sha))) for sha in cache.objects() if sha not in keep]
    garbage = _RemoteGarbage()
    if target is not None:
        from keel.data.inventory import contents

        held = contents(target, indexes=cache.pack_indexes)
        garbage = _remote_garbage(held, keep, time.time() - STALE_TEMP_SECONDS)
    if not dry_run:
        _delete(project, cache, local, target, garbage)
    return GcReport(
        dry_run,
        len(keep),
        local,
        garbage.objects if target else None,
        target.name if target else None,
        names,
        unresolved,
        packs=len(garbage.packs),
        kept_packed=garbage.kept_packed,
        unfinished=garbage.unfinished,
    )


@dataclass(frozen=True)
class _RemoteGarbage:
    """What gc removes from a remote: loose objects, and packs none of whose objects is
    referenced; ``objects`` lists every object that goes (sha256, size)."""

    objects: list[tuple[str, int]] = field(default_factory=list)
    loose: list[str] = field(default_factory=list)
    packs: list[str] = field(default_factory=list)
    kept_packed: int = 0
    unfinished: list[tuple[str, int]] = field(default_factory=list)


def _remote_garbage(held: Contents, keep: set[str], stale_before: float) -> _RemoteGarbage:
    """A pack goes only when nothing in it is referenced; a pack holding any referenced
    object stays whole (its unreferenced objects are counted in ``kept_packed``). A pack
    whose index never arrived goes once it is older than ``stale_before`` (a younger one may
    belong to a push still running)."""
    loose = sorted(sha for sha in held.loose if sha not in keep)
    dead = sorted(pack for pack, index in held.packs.items() if keep.isdisjoint(index.objects))
    going = {sha: held.loose[sha] for sha in loose}
    for pack in dead:
        going.update((sha, size) for sha, (_, size) in held.packs[pack].objects.items())
    stranded = {
        sha
        for pack, index in held.packs.items()
        if pack not in dead
        for sha in index.objects
        if sha not in keep
    }
    unfinished = sorted(
        (pack, size)
        for pack, (size, modified) in held.unindexed.items()
        if modified is not None and modified < stale_before
    )
    return _RemoteGarbage(sorted(going.items()), loose, dead, len(stranded), unfinished)


def _branches(root: Path, given: Iterable[str] | None) -> list[str]:
    from keel.data.gitrev import git

    if given is not None:
        return list(dict.fromkeys(given))
    try:
        out = git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads")
    except StateError:
        return []  # not a git repository: only the workspace and the registry count
    return sorted(line for line in out.decode().splitlines() if line)


def _workspace_pointers(project: Project) -> list[Pointer]:
    from keel.data.pointer import find_pointers, read_pointer

    return [read_pointer(path, project.root) for path in find_pointers(project.root)]


def _branch_pointers(root: Path, names: list[str]) -> list[Pointer]:
    from keel.data.gitrev import pointers_at

    return [pointer for name in names for pointer in pointers_at(root, name)]


def _pointer_objects(cache: DataCache, pointers: list[Pointer], source: Remote | None) -> set[str]:
    from keel.data.manifest import parse_manifest

    _fetch(cache, {p.sha256 for p in pointers if p.kind == "dir"}, source)
    keep: set[str] = set()
    for pointer in pointers:
        keep.add(pointer.sha256)
        if pointer.kind != "dir":
            continue
        if not cache.has(pointer.sha256):
            where = f"nor on {source.describe()}" if source else "and no remote is configured"
            raise StateError(
                f"the manifest of folder {pointer.path} ({pointer.sha256}) is not in the data "
                f"cache {where}, so gc cannot tell which files it needs and deletes nothing; "
                "push it from a clone that has it, or leave its branch out with --branch"
            )
        keep.update(e.sha256 for e in parse_manifest(cache.read_bytes(pointer.sha256)))
    return keep


def _lineage_objects(
    project: Project, cache: DataCache, source: Remote | None
) -> tuple[set[str], list[str]]:
    """Objects of every dataset in a registered model version's lineage, and the datasets
    found neither in the cache nor on the remote."""
    from keel.data.manifest import parse_manifest

    refs = _lineage_datasets(project)
    _fetch(cache, {sha for sha, kind in refs.items() if kind != "file"}, source)
    keep: set[str] = set()
    unresolved: list[str] = []
    for sha, kind in sorted(refs.items()):
        keep.add(sha)
        if kind == "file":
            continue
        if not cache.has(sha):
            unresolved.append(sha)
            continue
        path = cache.path_of(sha)
        if kind == "dir" or (_size(path) <= SNIFF_LIMIT and path.read_bytes()[:1] == b"["):
            try:
                keep.update(e.sha256 for e in parse_manifest(cache.read_bytes(sha)))
            except KeelError:
                if kind == "dir":
                    raise
    return keep, unresolved


def _lineage_datasets(project: Project) -> dict[str, str]:
    """sha256 -> kind ("file", "dir" or "" when unknown) of the datasets recorded by runs
    that produced a model version, or by any of their parent runs."""
    from sqlalchemy import select

    from keel.metadata.schema import model_versions, run_inputs, runs

    with project.metadata.read() as conn:
        query = select(model_versions.c.run_id).where(model_versions.c.run_id.is_not(None))
        run_ids = set(conn.execute(query).scalars())
        frontier = set(run_ids)
        while frontier:
            parents: set[str] = set()
            for chunk in _chunks(sorted(frontier)):
                parents.update(
                    conn.execute(
                        select(runs.c.parent_run_id).where(
                            runs.c.id.in_(chunk), runs.c.parent_run_id.is_not(None)
                        )
                    ).scalars()
                )
            frontier = parents - run_ids
            run_ids |= parents
        found: dict[str, str] = {}
        for chunk in _chunks(sorted(run_ids)):
            rows = conn.execute(
                select(run_inputs.c.ref, run_inputs.c.details).where(
                    run_inputs.c.kind == "dataset", run_inputs.c.run_id.in_(chunk)
                )
            )
            for ref, details in rows:
                if is_sha256(ref):
                    kind = str(details.get("kind", "")) if isinstance(details, dict) else ""
                    found[ref] = kind if found.get(ref) in (None, "") else found[ref]
    return found


def _fetch(cache: DataCache, manifests: set[str], source: Remote | None) -> None:
    from keel.data.remote import RemoteAccessError

    absent = {sha for sha in manifests if not cache.has(sha)}
    if absent and source is not None:
        try:
            source.pull(cache, absent)
        except RemoteAccessError:
            raise
        except KeelError:
            pass  # objects the remote lacks stay absent; the callers decide what that means


def _delete(
    project: Project,
    cache: DataCache,
    local: list[tuple[str, int]],
    target: Remote | None,
    garbage: _RemoteGarbage,
) -> None:
    from keel.data.statcache import stat_cache_for

    if target is not None and (garbage.loose or garbage.packs or garbage.unfinished):
        from keel.data.inventory import delete_objects
        from keel.data.packs import forget_indexes

        packs = garbage.packs + [pack for pack, _ in garbage.unfinished]
        delete_objects(target, garbage.loose, whole_packs=packs)
        forget_indexes(cache.pack_indexes, packs)
    for sha, _ in local:
        cache.remove(sha)
    with stat_cache_for(project.keel_dir) as stats:
        stats.forget_objects(sha for sha, _ in local)
    _remove_stale(cache.root / "tmp")
    if target is not None and target.protocol in ("file", "local"):
        _remove_stale(Path(target.url) / "objects", hidden_only=True)


def _remove_stale(folder: Path, *, hidden_only: bool = False) -> None:
    """Delete temporary files left by killed processes (older than a day)."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    if not folder.is_dir():
        return
    for here, _, files in os.walk(folder):
        for name in files:
            path = Path(here, name)
            if hidden_only and not (name.startswith(".") and ".tmp-" in name):
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _default_remote(project: Project) -> Remote | None:
    """The configured default remote, or None (also when several exist and none is default)."""
    from keel.data.remote import configured_remote

    try:
        return configured_remote(project)
    except KeelError:
        return None
