"""Scanning workspace data: the files of a tracked path, their stats and hashes.

Hashes come from the stat cache when a file is unchanged, else from parallel hashing; the
stat cache is updated so the next scan does not hash them again. An unchanged folder's hash
comes from the stat cache too, so no manifest is rebuilt.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from pathlib import Path
from typing import Protocol

from keel.core.hashing import sha256_bytes
from keel.data.cache import DataCache
from keel.data.hashing import Sink, hash_files
from keel.data.manifest import Entry, build_manifest
from keel.data.pointer import Kind
from keel.data.statcache import RACY_NS, Row, StatCache, Tracked
from keel.errors import InvalidInputError

ProgressFn = Callable[[int, int], None]
"""Called with (bytes hashed so far, bytes to hash in all) while files are hashed."""


class Hashed(Protocol):
    """Told of each file as it is hashed, on the hashing thread: first `sink` (somewhere a
    large file's bytes go as they are read, or None), then the call with (name within the
    scanned path, its path, sha256, size, and the bytes hashed when the file was small
    enough to be read whole, else None)."""

    def sink(self, name: str, path: str, size: int, /) -> Sink | None: ...

    def __call__(
        self, name: str, path: str, sha256: str, size: int, data: bytes | None, /
    ) -> None: ...


TEMP_MARK = ".keel-tmp-"  # checkout writes `.NAME.keel-tmp-PID` before renaming into place


@dataclass
class Scan:
    """A tracked path as it is in the workspace now: ``listed`` (name, stat) pairs — names
    relative to the folder, or the file's own name — and their ``hashes``."""

    kind: Kind
    sha256: str  # the file's hash, or the folder manifest's hash
    size: int
    listed: list[tuple[str, os.stat_result]]
    hashes: list[str]
    hashed: int = 0  # how many files had to be hashed (not found in the stat cache)

    @property
    def files(self) -> int:
        return len(self.listed)

    @cached_property
    def entries(self) -> list[Entry]:
        return [
            Entry(name, sha, st.st_size)
            for (name, st), sha in zip(self.listed, self.hashes, strict=True)
        ]

    @cached_property
    def manifest(self) -> bytes | None:
        """A folder's manifest bytes (None for a file)."""
        return build_manifest(self.entries) if self.kind == "dir" else None

    @cached_property
    def stats(self) -> dict[str, os.stat_result]:
        return dict(self.listed)


def list_files(folder: Path) -> list[tuple[str, os.stat_result]]:
    """(posix path relative to ``folder``, stat) of every file under it, sorted."""
    found: list[tuple[str, os.stat_result]] = []
    pending = [(str(folder), "")]
    while pending:
        here, prefix = pending.pop()
        with os.scandir(here) as listing:
            for item in listing:
                if item.is_dir(follow_symlinks=False):
                    pending.append((item.path, prefix + item.name + "/"))
                    continue
                st = item.stat()  # follows a symlink to a file: its bytes are the data
                if not stat.S_ISREG(st.st_mode):
                    raise InvalidInputError(
                        f"{item.path} is not a regular file (a folder symlink, socket or "
                        "device); keel data versions regular files only — move it out"
                    )
                if TEMP_MARK in item.name and item.name.startswith("."):
                    continue  # a file an interrupted checkout left; never data
                found.append((prefix + item.name, st))
    found.sort(key=itemgetter(0))
    return found


@dataclass(frozen=True)
class Listing:
    """What is at a tracked path: its ``kind``, its files (name, stat) and when the listing
    began (``seen_ns``: files modified after it are too fresh to remember as hashed)."""

    kind: Kind
    files: list[tuple[str, os.stat_result]]
    seen_ns: int


def list_path(root: Path, rel: str) -> Listing:
    """The files of the data at project-relative ``rel`` (a file or a folder)."""
    target = root / rel
    seen_ns = time.time_ns()
    st = os.stat(target)
    if stat.S_ISDIR(st.st_mode):
        return Listing("dir", list_files(target), seen_ns)
    if stat.S_ISREG(st.st_mode):
        return Listing("file", [(target.name, st)], seen_ns)
    raise InvalidInputError(f"{target} is neither a file nor a folder")


def scan(
    root: Path,
    rel: str,
    stats: StatCache,
    *,
    cache: DataCache | None = None,
    jobs: int | None = None,
    progress: ProgressFn | None = None,
    listing: Listing | None = None,
    hashed: Hashed | None = None,
) -> Scan:
    """Scan the data at project-relative ``rel`` (a file or a folder) under ``root``, from
    ``listing`` when the caller listed it already; ``hashed`` is told of each file hashed."""
    target = root / rel
    listing = listing or list_path(root, rel)
    kind, listed, seen_ns = listing.kind, listing.files, listing.seen_ns
    known = stats.load(rel)
    rows = known.rows
    hashes, todo, size = _match_rows(listed, rows)
    if todo:
        base = target if kind == "dir" else target.parent
        _hash(base, listed, hashes, todo, rows, cache, jobs, progress, hashed)
    found = Scan(kind, "", size, listed, hashes, len(todo))
    unchanged = not todo and len(rows) == len(listed)
    if kind == "file":
        found.sha256 = hashes[0]
    elif unchanged and known.sha256:
        found.sha256 = known.sha256
    else:
        found.sha256 = sha256_bytes(found.manifest or b"")
    if not unchanged or known.sha256 != found.sha256:
        _remember(stats, rel, found, seen_ns)
    return found


def _match_rows(
    listed: list[tuple[str, os.stat_result]], rows: dict[str, Row]
) -> tuple[list[str], list[int], int]:
    """(the hash of each listed file, "" where its stat matches no row; the indexes of those
    files, to hash; the bytes of all files). Once per file on every status and add, so one
    pass with the fields compared in place (no tuple built per file; mtime differs first)."""
    hashes: list[str] = []
    todo: list[int] = []
    size = 0
    get = rows.get
    for i, (name, s) in enumerate(listed):
        size += s.st_size
        row = get(name)
        if (
            row is not None
            and row[2] == s.st_mtime_ns
            and row[1] == s.st_size
            and row[0] == s.st_ino
        ):
            hashes.append(row[3])
        else:
            hashes.append("")
            todo.append(i)
    return hashes, todo, size


def _hash(
    base: Path,
    listed: list[tuple[str, os.stat_result]],
    hashes: list[str],
    todo: list[int],
    rows: dict[str, Row],
    cache: DataCache | None,
    jobs: int | None,
    progress: ProgressFn | None,
    hashed: Hashed | None,
) -> None:
    sizes = [listed[i][1].st_size for i in todo]
    paths = [f"{base}/{listed[i][0]}" for i in todo]  # strings: a Path each costs 1.3 µs
    advance = counter(sum(sizes), progress)

    def then(j: int, sha: str, size: int, data: bytes | None) -> None:
        if hashed is not None:
            hashed(listed[todo[j]][0], paths[j], sha, size, data)

    def sink_for(j: int) -> Sink | None:
        return hashed.sink(listed[todo[j]][0], paths[j], sizes[j]) if hashed else None

    results = hash_files(paths, sizes, jobs=jobs, progress=advance, then=then, sink_for=sink_for)
    for i, (sha, _) in zip(todo, results, strict=True):
        name, st = listed[i]
        if cache is not None:
            evict_if_edited_through_link(cache, rows.get(name), st, sha)
        hashes[i] = sha


def _remember(stats: StatCache, rel: str, found: Scan, seen_ns: int) -> None:
    rows = {
        name: (st.st_ino, st.st_size, st.st_mtime_ns, sha)
        for (name, st), sha in zip(found.listed, found.hashes, strict=True)
        if seen_ns - st.st_mtime_ns > RACY_NS
    }
    # The folder hash is only trusted with rows for every file (else a racy file was left out).
    stats.save(rel, Tracked(rows, found.sha256 if len(rows) == len(found.listed) else None))


def remember_written(
    stats: StatCache,
    rel: str,
    written: list[tuple[str, os.stat_result, str]],
    deleted: list[str],
    *,
    fresh: bool,
) -> None:
    """Record files Keel itself just wrote from verified objects (name relative to the tracked
    path, stat, sha256) and removed; ``fresh`` drops what was known of ``rel`` before."""
    known = Tracked() if fresh else stats.load(rel)
    for name in deleted:
        known.rows.pop(name, None)
    for name, st, sha in written:
        known.rows[name] = (st.st_ino, st.st_size, st.st_mtime_ns, sha)
    stats.save(rel, Tracked(known.rows, None))


def evict_if_edited_through_link(
    cache: DataCache, old: Row | None, st: os.stat_result, new_sha: str
) -> bool:
    """A hard-linked workspace file shares its inode with the cache object it came from; if it
    was edited in place, that object no longer holds its named bytes. Remove it (it can be
    pulled again) so it is never served as good data. Returns True when it was removed."""
    if old is None or old[3] == new_sha or st.st_nlink < 2 or old[0] != st.st_ino:
        return False
    try:
        shared = os.stat(cache.path_of(old[3])).st_ino == st.st_ino
    except FileNotFoundError:
        return False
    if shared:
        cache.remove(old[3])
    return shared


def counter(total: int, progress: ProgressFn | None) -> Callable[[int], None] | None:
    """A thread-safe byte counter feeding ``progress`` (bytes done, ``total``)."""
    if progress is None:
        return None
    lock = threading.Lock()
    done = [0]

    def advance(n: int) -> None:
        with lock:
            done[0] += n
            progress(done[0], total)

    progress(0, total)
    return advance
