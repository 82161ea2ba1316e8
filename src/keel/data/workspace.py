"""The workspace side of data versioning: `add` and `status` (checkout and hooks live in
their own modules and are re-exported here).

Hard links (opt-in, ``data.link: [hardlink, copy]``): a workspace file then shares its inode
with its cache object, so editing it in place also changes the object. What protects the cache:
objects and their hard-linked workspace files are read-only (0444), which stops editors and
programs running as ordinary users; every scan notices a file whose stat changed, and when a
hard-linked file now hashes differently the object it shares is removed from the cache at once
(`evict_if_edited_through_link`), so it is re-fetched from the remote rather than served; and
every read of an object (checkout, open) is verified against its sha256, so bytes changed by
any other route are refused with ArtifactCorruptedError. With the default ``[reflink, copy]``
the workspace has its own bytes and no edit can reach the cache.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.data.cache import DataCache, cache_for
from keel.data.direct_io import DirectWriter
from keel.data.manifest import Entry, parse_manifest
from keel.data.paths import (
    check_no_pointers_inside,
    check_not_nested,
    ignore_in_git,
    project_relative,
)
from keel.data.pointer import Kind, Pointer, find_pointers, read_pointer, write_pointer
from keel.data.statcache import StatCache, stat_cache_for, stat_key
from keel.data.tree import ProgressFn, Scan, list_path, scan
from keel.errors import InvalidInputError, StoreError

if TYPE_CHECKING:
    from keel.data.hooks import install_hooks
    from keel.data.restore import CheckoutReport, checkout
    from keel.project import Project

__all__ = [
    "CheckoutReport",
    "PathStatus",
    "StatusReport",
    "add",
    "checkout",
    "install_hooks",
    "status",
]

STORE_THREADS = 8

# checkout and install_hooks live in keel.data.restore and keel.data.hooks; they are re-exported
# here lazily so `keel data status` does not pay for importing them.
_LAZY = {
    "CheckoutReport": "keel.data.restore",
    "checkout": "keel.data.restore",
    "install_hooks": "keel.data.hooks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


def add(
    project: Project,
    paths: Sequence[str | Path],
    *,
    jobs: int | None = None,
    progress: ProgressFn | None = None,
) -> list[Pointer]:
    """Version the files and folders at ``paths`` (relative to the project root, or absolute):
    store their bytes in the cache, write ``PATH.keel`` pointers, and git-ignore the data.

    >>> keel.data.add(project, ["data/train.csv", "data/images"])     # doctest: +SKIP
    [Pointer(path='data/train.csv', sha256='9f2c...', size=1024, files=1, kind='file'), ...]
    """
    root = project.root
    rels = [project_relative(root, p) for p in paths]
    if len(set(rels)) != len(rels):
        raise InvalidInputError(f"a path is given twice in {[str(p) for p in paths]}")
    for rel in rels:
        check_not_nested(root, rel)
    # Every path is listed and checked before the first file is hashed (and stored).
    listings = [list_path(root, rel) for rel in rels]
    for rel, listing in zip(rels, listings, strict=True):
        if listing.kind == "dir":
            check_no_pointers_inside(rel, (name for name, _ in listing.files))
    cache = cache_for(project)
    with stat_cache_for(project.keel_dir) as stats:
        # Each file is copied into the cache as soon as it is hashed (one pass while its
        # bytes are fresh, the copies overlapping the hashing); _store checks and completes.
        early = [_EarlyStore(cache) for _ in rels]
        scans = [
            scan(
                root,
                rel,
                stats,
                cache=cache,
                jobs=jobs,
                progress=progress,
                listing=listing,
                hashed=store,
            )
            for rel, listing, store in zip(rels, listings, early, strict=True)
        ]
        # Every object is stored before any pointer is written: a failure leaves no pointer
        # naming data the cache does not hold.
        for rel, found, stored in zip(rels, scans, early, strict=True):
            _store(cache, root, rel, found, stats, jobs, stored.objects)
    pointers = [
        Pointer(rel, s.sha256, s.size, s.files, s.kind) for rel, s in zip(rels, scans, strict=True)
    ]
    for pointer in pointers:
        write_pointer(pointer, root)
        ignore_in_git(root, pointer.path)
    return pointers


class _EarlyStore:
    """Copies each file into the cache as it is hashed (on the hashing threads), once per
    object — large files while they are read for hashing (direct I/O, keel.data.direct_io);
    remembers what it stored for _store's checks."""

    def __init__(self, cache: DataCache) -> None:
        self.cache = cache
        self.objects: dict[str, tuple[str, os.stat_result]] = {}  # name -> (sha, object stat)
        self._claimed: set[str] = set()
        self._writers: dict[str, DirectWriter] = {}  # name -> its bytes, written as hashed
        self._lock = threading.Lock()

    def sink(self, name: str, path: str, size: int) -> DirectWriter | None:
        """A large file is written into the cache as it is read for hashing."""
        writer = self.cache.direct_writer(path, size)
        if writer is not None:
            with self._lock:
                self._writers[name] = writer
        return writer

    def __call__(self, name: str, path: str, sha: str, size: int, data: bytes | None) -> None:
        with self._lock:
            writer = self._writers.pop(name, None)
            claimed = sha in self._claimed
            self._claimed.add(sha)
        if claimed:
            if writer is not None:
                writer.discard()
            return
        if writer is not None:
            stored = self.cache.publish(writer, sha)
        else:
            stored = self.cache.add_file(path, sha, size, data)
        if stored is not None:
            with self._lock:
                self.objects[name] = (sha, stored)


def _store(
    cache: DataCache,
    root: Path,
    rel: str,
    found: Scan,
    stats: StatCache,
    jobs: int | None,
    early: Mapping[str, tuple[str, os.stat_result]],
) -> None:
    base = root / rel if found.kind == "dir" else (root / rel).parent
    for name, (sha, _) in early.items():
        _unchanged_since_scan(f"{base}/{name}", found.stats[name], sha, cache, rel)
    stats.record_objects(early.values(), trusted=True)
    lacking = missing_objects(cache, stats, found.sha256, lambda: {found.sha256, *found.hashes})
    if not lacking:
        return
    # (A folder file whose bytes equal the folder's manifest is stored with the manifest.)
    skip = found.sha256 if found.kind == "dir" else None
    unique: dict[str, Entry] = {}
    for entry in found.entries:
        if entry.sha256 in lacking and entry.sha256 != skip:
            unique.setdefault(entry.sha256, entry)
    todo = list(unique.values())

    def store(entry_name: str, sha: str, size: int) -> tuple[str, os.stat_result] | None:
        source = f"{base}/{entry_name}"
        stored = cache.add_file(source, sha, size)
        if stored is None:
            return None
        _unchanged_since_scan(source, found.stats[entry_name], sha, cache, rel)
        return sha, stored

    if len(todo) > 1:
        from concurrent.futures import ThreadPoolExecutor

        # Copies are mostly system calls that release the GIL: more threads than cores help.
        with ThreadPoolExecutor(jobs or STORE_THREADS) as pool:
            done = list(pool.map(lambda e: store(e.path, e.sha256, e.size), todo))
    else:
        done = [store(e.path, e.sha256, e.size) for e in todo]
    if found.manifest is not None:
        cache.add_bytes(found.manifest)
    # Trusted: each object was just copied from a file hashed unchanged before and after.
    stats.record_objects((item for item in done if item is not None), trusted=True)


def _unchanged_since_scan(
    source: str, scanned: os.stat_result, sha: str, cache: DataCache, rel: str
) -> None:
    """Refuse (and drop the object) when ``source`` changed after it was hashed: the object
    may not hold the bytes its name says."""
    if stat_key(os.stat(source)) != stat_key(scanned):
        cache.remove(sha)
        raise StoreError(
            f"{source} changed while it was being added; run `keel data add {rel}` again "
            "once nothing is writing to it"
        )


@dataclass(frozen=True)
class PathStatus:
    """One tracked path: ``state`` is "ok", "modified" or "missing" (from the workspace);
    ``not_in_cache`` counts objects the local cache lacks; ``not_pushed`` counts objects the
    remote lacks (None when no remote was checked)."""

    path: str
    kind: Kind
    state: str
    detail: str
    not_in_cache: int
    not_pushed: int | None


@dataclass(frozen=True)
class StatusReport:
    paths: list[PathStatus]
    remote: str | None

    @property
    def modified(self) -> list[str]:
        return [p.path for p in self.paths if p.state == "modified"]

    @property
    def missing(self) -> list[str]:
        return [p.path for p in self.paths if p.state == "missing"]

    @property
    def not_in_cache(self) -> list[str]:
        return [p.path for p in self.paths if p.not_in_cache]

    @property
    def not_pushed(self) -> list[str]:
        return [p.path for p in self.paths if p.not_pushed]

    @property
    def clean(self) -> bool:
        return not (self.modified or self.missing or self.not_in_cache or self.not_pushed)


def status(
    project: Project,
    remote: str | None = None,
    *,
    jobs: int | None = None,
    progress: ProgressFn | None = None,
) -> StatusReport:
    """Compare every pointer file with the workspace, the cache and (when ``remote`` is given
    or a default remote is configured) the remote.

    >>> keel.data.status(project).modified                            # doctest: +SKIP
    ['data/train.csv']
    """
    root = project.root
    cache = cache_for(project)
    pointers = [read_pointer(p, root) for p in find_pointers(root)]
    rows: list[tuple[Pointer, str, str, Callable[[], set[str]], int]] = []
    with stat_cache_for(project.keel_dir) as stats:
        for pointer in pointers:
            state, detail, now = _workspace_state(root, pointer, cache, stats, jobs, progress)
            needs, unknown = _objects_of(cache, pointer, now)
            lacking = missing_objects(cache, stats, pointer.sha256, needs) | unknown
            rows.append((pointer, state, detail, needs, len(lacking)))
    absent, name = _absent_on_remote(project, remote, [needs for *_, needs, _ in rows])
    report = [
        PathStatus(
            p.path,
            p.kind,
            state,
            detail,
            lacking,
            None if absent is None else len(needs() & absent),
        )
        for p, state, detail, needs, lacking in rows
    ]
    return StatusReport(report, name)


def _workspace_state(
    root: Path,
    pointer: Pointer,
    cache: DataCache,
    stats: StatCache,
    jobs: int | None,
    progress: ProgressFn | None,
) -> tuple[str, str, Scan | None]:
    target = root / pointer.path
    if not os.path.lexists(target):
        return "missing", "", None
    found = scan(root, pointer.path, stats, cache=cache, jobs=jobs, progress=progress)
    if found.kind == pointer.kind and found.sha256 == pointer.sha256:
        return "ok", "", found
    if found.kind != pointer.kind or pointer.kind == "file":
        return "modified", "", found
    return "modified", _folder_changes(cache, pointer, found), found


def _folder_changes(cache: DataCache, pointer: Pointer, found: Scan) -> str:
    if not cache.has(pointer.sha256):
        return ""
    recorded = {e.path: e.sha256 for e in parse_manifest(cache.read_bytes(pointer.sha256))}
    now = {e.path: e.sha256 for e in found.entries}
    added = len(now.keys() - recorded.keys())
    deleted = len(recorded.keys() - now.keys())
    changed = sum(1 for path in now.keys() & recorded.keys() if now[path] != recorded[path])
    parts = [(changed, "changed"), (added, "added"), (deleted, "deleted")]
    return ", ".join(f"{n} {what}" for n, what in parts if n)


def missing_objects(
    cache: DataCache, stats: StatCache, key: str, needed: Callable[[], set[str]]
) -> set[str]:
    """The objects of ``needed()`` (all those of the pointer with hash ``key``) that the cache
    lacks. When the cache has not changed since they were last all found, skip the check."""
    fingerprint = cache.fingerprint()
    if fingerprint is not None and stats.complete(key) == fingerprint:
        return set()
    wanted = needed()
    lacking = wanted - cache.present(wanted)
    if not lacking and fingerprint is not None:
        stats.record_complete(key, fingerprint)
    return lacking


def _objects_of(
    cache: DataCache, pointer: Pointer, now: Scan | None
) -> tuple[Callable[[], set[str]], set[str]]:
    """(a function giving the objects ``pointer`` needs, objects unknown for want of the
    manifest). An unchanged workspace folder lists them without reading the manifest."""
    if now is not None and (now.kind, now.sha256) == (pointer.kind, pointer.sha256):
        return (lambda: {now.sha256, *now.hashes}), set()
    known, unknown = objects_needed(cache, pointer)
    return (lambda: known), unknown


def objects_needed(cache: DataCache, pointer: Pointer) -> tuple[set[str], set[str]]:
    """(objects a pointer needs that are known, objects whose entries are unknown because the
    folder manifest is not in the cache). A file needs one object; a folder its manifest and
    every entry."""
    if pointer.kind == "file":
        return {pointer.sha256}, set()
    if not cache.has(pointer.sha256):
        return {pointer.sha256}, {pointer.sha256}
    entries = parse_manifest(cache.read_bytes(pointer.sha256))
    return {pointer.sha256, *(e.sha256 for e in entries)}, set()


def _absent_on_remote(
    project: Project, name: str | None, needed: list[Callable[[], set[str]]]
) -> tuple[set[str] | None, str | None]:
    """Objects the remote lacks, and the remote's name; (None, None) without a remote."""
    data = project.data_settings
    if name is None and data.remote is None and not data.remote_names:
        return None, None  # no remote to ask: status does not pay for importing the remotes
    from keel.data.remote import configured_remote

    found = configured_remote(project, name)
    if found is None:
        return None, None
    everything: set[str] = set().union(*(needs() for needs in needed))
    if not everything:
        return set(), found.name
    from keel.data.cache import cache_for

    indexes = cache_for(project).pack_indexes
    return set(found.missing(everything, indexes=indexes)), found.name
