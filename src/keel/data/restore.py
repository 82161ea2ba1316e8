"""`checkout`: make the workspace match the pointer files (now, or at a git revision).

Everything that can fail is done before the workspace is touched: pointers are read and
validated, missing objects fetched from the remote, the objects to be written verified, and
workspace files that hold changes not saved with `keel data add` found (checkout refuses to
overwrite them without ``force``). Only then are files written, each atomically. One
exception saves time and risks nothing: a tracked path with nothing in the workspace yet (a
fresh clone) gets its files as their objects arrive, while the rest still downloads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from keel.data.cache import DataCache, cache_for
from keel.data.hashing import hash_files
from keel.data.manifest import parse_manifest
from keel.data.paths import ignore_in_git, project_relative
from keel.data.pointer import Pointer, find_pointers, read_pointer, untracked, write_pointer
from keel.data.statcache import StatCache, stat_cache_for
from keel.data.tree import ProgressFn, Scan, remember_written, scan
from keel.errors import NotFoundError, StateError, StoreError

if TYPE_CHECKING:
    from keel.data.arrival import Copies
    from keel.data.remote import Remote
    from keel.data.transfer import TransferProgress
    from keel.project import Project


@dataclass(frozen=True)
class CheckoutReport:
    """``restored``: tracked paths whose workspace data changed; ``written``/``deleted``: files;
    ``fetched``: objects pulled from the remote; ``links``: how files were made, by count."""

    rev: str | None
    restored: list[str]
    unchanged: list[str]
    written: int
    deleted: int
    fetched: int
    links: dict[str, int] = field(default_factory=dict)


@dataclass
class _Plan:
    pointer: Pointer
    current: Scan | None  # the workspace now (None: absent)
    writes: list[tuple[str, str, int]] = field(default_factory=list)  # rel path, sha, size
    deletes: list[str] = field(default_factory=list)  # rel paths
    # (rel path, sha256) of workspace files whose bytes the cache does not hold
    unsaved: list[tuple[str, str]] = field(default_factory=list)
    replace: bool = False  # a file must become a folder or the other way round


def checkout(
    project: Project,
    rev: str | None = None,
    *,
    paths: Sequence[str | Path] | None = None,
    remote: str | None = None,
    force: bool = False,
    jobs: int | None = None,
    progress: ProgressFn | None = None,
    transfer_progress: TransferProgress | None = None,
) -> CheckoutReport:
    """Restore the workspace to the pointer files — of the worktree, or as committed at git
    ``rev`` (then the pointer files are restored too, like `git checkout REV -- *.keel`).
    Objects missing from the cache are pulled from ``remote`` (default: the configured one).

    >>> keel.data.checkout(project, rev="HEAD~1").restored            # doctest: +SKIP
    ['data/images']
    """
    root = project.root
    pointers = _pointers(project, rev, paths)
    cache = cache_for(project)
    with stat_cache_for(project.keel_dir) as stats:
        current = [_current(root, p, stats, cache, jobs) for p in pointers]
        pending = [
            (p, now)
            for p, now in zip(pointers, current, strict=True)
            if now is None or (now.kind, now.sha256) != (p.kind, p.sha256)
        ]
        fetcher = _Fetcher(project, cache, remote, transfer_progress, jobs)
        fetcher.fetch({p.sha256 for p, _ in pending if p.kind == "dir"}, pending)
        plans = [_plan(cache, p, now) for p, now in pending]
        if not force:
            _refuse_unsaved(fetcher, [item for plan in plans for item in plan.unsaved])
        wanted = {sha for plan in plans for _, sha, _ in plan.writes}
        links: dict[str, int] = {}
        total = sum(size for plan in plans for _, _, size in plan.writes)
        done = [0]
        with _Writers(jobs or os.cpu_count() or 1) as pool:
            early = _EarlyWrites(root, cache, [p for p in plans if p.current is None], pool)
            sizes = {sha: size for plan in plans for _, sha, size in plan.writes}
            fetcher.fetch(wanted, pending, stored=early.ready, sizes=sizes, copies=early.claim)
            _verify(cache, stats, wanted - fetcher.fetched, jobs)
            early.submit_rest()
            for plan in plans:
                if plan.current is None:
                    written = early.results(plan)
                else:
                    written = _apply(root, cache, plan, pool)
                for _, st, _, how in written:
                    links[how] = links.get(how, 0) + 1
                    done[0] += st.st_size
                if progress is not None and written:
                    progress(done[0], total)
                _remember(stats, plan, written)
    if rev is not None:
        for pointer in pointers:
            write_pointer(pointer, root)
            ignore_in_git(root, pointer.path)
    changed = {p.path for p, _ in pending}
    return CheckoutReport(
        rev,
        [p.path for p in pointers if p.path in changed],
        [p.path for p in pointers if p.path not in changed],
        sum(len(plan.writes) for plan in plans),
        sum(len(plan.deletes) for plan in plans),
        len(fetcher.fetched),
        links,
    )


def _pointers(
    project: Project, rev: str | None, paths: Sequence[str | Path] | None
) -> list[Pointer]:
    root = project.root
    if rev is None:
        pointers = [read_pointer(p, root) for p in find_pointers(root)]
    else:
        from keel.data.gitrev import pointers_at

        pointers = pointers_at(root, rev)
    if paths is None:
        return pointers
    wanted = {project_relative(root, p, must_exist=False) for p in paths}
    chosen = [p for p in pointers if p.path in wanted]
    unknown = wanted - {p.path for p in chosen}
    if unknown:
        raise untracked(unknown, f"at {rev}" if rev else "in the workspace")
    return chosen


def _current(
    root: Path, pointer: Pointer, stats: StatCache, cache: DataCache, jobs: int | None
) -> Scan | None:
    if not os.path.lexists(root / pointer.path):
        return None
    return scan(root, pointer.path, stats, cache=cache, jobs=jobs)


def _plan(cache: DataCache, pointer: Pointer, now: Scan | None) -> _Plan:
    plan = _Plan(pointer, now)
    base = pointer.path
    if pointer.kind == "file":
        plan.writes.append((base, pointer.sha256, pointer.size))
        if now is not None:
            plan.replace = now.kind == "dir"
            plan.unsaved = _unsaved(cache, base, now)
        return plan
    entries = parse_manifest(cache.read_bytes(pointer.sha256))
    if now is None or now.kind == "file":
        plan.writes.extend((f"{base}/{e.path}", e.sha256, e.size) for e in entries)
        if now is not None:
            plan.replace = True
            plan.unsaved = _unsaved(cache, base, now)
        return plan
    have = {e.path: e.sha256 for e in now.entries}
    keep = {e.path for e in entries}
    for e in entries:
        if have.get(e.path) != e.sha256:
            plan.writes.append((f"{base}/{e.path}", e.sha256, e.size))
            if e.path in have and not cache.has(have[e.path]):
                plan.unsaved.append((f"{base}/{e.path}", have[e.path]))
    for path, sha in have.items():
        if path not in keep:
            plan.deletes.append(f"{base}/{path}")
            if not cache.has(sha):
                plan.unsaved.append((f"{base}/{path}", sha))
    return plan


def _unsaved(cache: DataCache, base: str, now: Scan) -> list[tuple[str, str]]:
    """Workspace files at ``base`` whose bytes are not in the cache (never added)."""
    if now.kind == "file":
        return [] if cache.has(now.sha256) else [(base, now.sha256)]
    return [(f"{base}/{e.path}", e.sha256) for e in now.entries if not cache.has(e.sha256)]


def _refuse_unsaved(fetcher: _Fetcher, unsaved: list[tuple[str, str]]) -> None:
    """Refuse to overwrite workspace files whose bytes are neither in the cache nor on the
    remote: they would be lost."""
    if not unsaved:
        return
    remote = fetcher.remote()
    if remote is not None:
        indexes = fetcher.cache.pack_indexes
        absent = remote.missing({sha for _, sha in unsaved}, indexes=indexes)
        unsaved = [(path, sha) for path, sha in unsaved if sha in absent]
    if unsaved:
        paths = [path for path, _ in unsaved]
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if paths[5:] else "")
        raise StateError(
            f"checkout would overwrite changes not saved with `keel data add`: {shown}; "
            "add them first, or pass --force to discard them"
        )


class _Fetcher:
    """Pulls objects the cache lacks, from the remote named (or the configured default)."""

    def __init__(
        self,
        project: Project,
        cache: DataCache,
        remote: str | None,
        progress: TransferProgress | None,
        jobs: int | None,
    ) -> None:
        self.project, self.cache, self.name = project, cache, remote
        self.progress, self.jobs = progress, jobs
        self.fetched: set[str] = set()
        self._remote: Remote | None = None
        self._looked = False

    def fetch(
        self,
        hashes: set[str],
        pending: list[tuple[Pointer, Scan | None]],
        stored: Callable[[str], None] | None = None,
        sizes: Mapping[str, int] | None = None,
        copies: Copies | None = None,
    ) -> None:
        missing = hashes - self.cache.present(hashes)
        if not missing:
            return
        remote = self._remote_or_fail(missing, pending)
        remote.pull(
            self.cache,
            missing,
            jobs=self.jobs,
            sizes=sizes,
            progress=self.progress,
            stored=stored,
            copies=copies,
        )
        still = sorted(missing - self.cache.present(missing))
        if still:
            raise NotFoundError(
                f"{len(still)} object(s) are on neither the data cache nor {remote.describe()} "
                f"(first: {still[0]}); push them from a machine that has the data"
            )
        self.fetched |= missing

    def remote(self) -> Remote | None:
        """The remote to fetch from, None when none is configured (or named)."""
        if self._remote is None and not self._looked:
            from keel.data.remote import configured_remote

            self._remote = configured_remote(self.project, self.name)
            self._looked = True
        return self._remote

    def _remote_or_fail(
        self, missing: set[str], pending: list[tuple[Pointer, Scan | None]]
    ) -> Remote:
        remote = self.remote()
        if remote is None:
            from keel.data.remote import HOW_TO_ADD

            paths = [p.path for p, _ in pending] or ["?"]
            raise NotFoundError(
                f"{len(missing)} object(s) needed for {', '.join(paths[:3])} are not in the "
                f"data cache and no data remote is configured; {HOW_TO_ADD}\n"
                "(or run `keel data add` on a machine that has the data, then push)"
            )
        return remote


def _verify(cache: DataCache, stats: StatCache, hashes: set[str], jobs: int | None) -> None:
    """Hash the objects about to be written unless the stat cache says they were verified
    unchanged before; a mismatch is refused before anything is written."""
    todo: list[tuple[str, os.stat_result]] = []
    for sha in sorted(hashes):
        st = os.stat(cache.file_of(sha))
        if not stats.object_verified(sha, st):
            todo.append((sha, st))
    if not todo:
        return
    found = hash_files(
        [cache.file_of(s) for s, _ in todo], [st.st_size for _, st in todo], jobs=jobs
    )
    for (sha, _), (digest, _) in zip(todo, found, strict=True):
        if digest != sha:
            raise cache.corrupted(sha)
    stats.record_objects(todo)


_Written = tuple[str, os.stat_result, str, str]  # rel path, its stat, sha256, link type
SMALL_FILE = 1 << 20  # workspace files under this size are written on one thread (_Writers)


def _write(cache: DataCache, root: Path, rel: str, sha: str) -> _Written:
    try:
        how = cache.link_to(sha, root / rel)
        return rel, os.stat(root / rel), sha, how
    except OSError as exc:  # a full disk, a read-only folder: one clear error, no traceback
        raise StoreError(f"cannot write {root / rel} from the data cache: {exc}") from exc


class _Writers:
    """Writes workspace files from the cache: large ones on ``jobs`` threads (copying
    hundreds of MB is one long system call, run without the GIL), small ones on a single
    thread — creating a small file is a few short system calls with Python in between, at
    the GIL's pace, and more threads only hand the GIL back and forth (10,000 files of 40 KB
    on 2 cores: 8 threads 3.5-4.6 CPU-s, 2 threads 3.0, 1 thread 2.3)."""

    def __init__(self, jobs: int) -> None:
        self._large = ThreadPoolExecutor(jobs, thread_name_prefix="keel-write")
        self._small = ThreadPoolExecutor(1, thread_name_prefix="keel-write-small")

    def submit(
        self, size: int, cache: DataCache, root: Path, rel: str, sha: str
    ) -> Future[_Written]:
        pool = self._small if size < SMALL_FILE else self._large
        return pool.submit(_write, cache, root, rel, sha)

    def __enter__(self) -> _Writers:
        return self

    def __exit__(self, *exc: object) -> None:
        self._small.shutdown()
        self._large.shutdown()


class _EarlyWrites:
    """The files of ``plans`` — tracked paths with nothing in the workspace yet, so nothing
    to lose — written on ``pool`` as soon as their objects are in the cache, or by the
    download itself as the bytes arrive (`claim`)."""

    def __init__(self, root: Path, cache: DataCache, plans: list[_Plan], pool: _Writers) -> None:
        self.root, self.cache, self.pool = root, cache, pool
        # sha256 -> (tracked path, file, size) still waiting for the object, and those the
        # download writes; futures by tracked path
        self.waiting: dict[str, list[tuple[str, str, int]]] = {}
        self.claimed: dict[str, list[tuple[str, str, int]]] = {}
        self.futures: dict[str, list[Future[_Written]]] = {p.pointer.path: [] for p in plans}
        self._lock = threading.Lock()
        for plan in plans:
            if plan.pointer.kind == "dir":  # an empty folder has no file to create it
                (root / plan.pointer.path).mkdir(parents=True, exist_ok=True)
            for rel, sha, size in plan.writes:
                self.waiting.setdefault(sha, []).append((plan.pointer.path, rel, size))

    def claim(self, sha: str) -> list[Path]:
        """The files waiting for object ``sha``, handed to its download to write (they are
        named before `ready` is called for it)."""
        with self._lock:
            files = self.waiting.pop(sha, [])
            self.claimed[sha] = files
        return [self.root / rel for _, rel, _ in files]

    def ready(self, sha: str) -> None:
        """Object ``sha`` is in the cache, verified (called from transfer threads)."""
        with self._lock:
            for tracked, rel, _ in self.claimed.pop(sha, []):
                done: Future[_Written] = Future()
                done.set_result((rel, os.stat(self.root / rel), sha, "copy"))
                self.futures[tracked].append(done)
            for tracked, rel, size in self.waiting.pop(sha, []):
                future = self.pool.submit(size, self.cache, self.root, rel, sha)
                self.futures[tracked].append(future)

    def submit_rest(self) -> None:
        """Write the files whose objects were already in the cache (verified since)."""
        for sha in list(self.waiting):
            self.ready(sha)

    def results(self, plan: _Plan) -> list[_Written]:
        return [future.result() for future in self.futures[plan.pointer.path]]


def _apply(root: Path, cache: DataCache, plan: _Plan, pool: _Writers) -> list[_Written]:
    target = root / plan.pointer.path
    if plan.replace and target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif plan.replace:
        target.unlink()
    for rel in plan.deletes:
        (root / rel).unlink(missing_ok=True)
    if plan.deletes and target.is_dir():
        _prune_empty(target)
    if plan.pointer.kind == "dir":
        target.mkdir(parents=True, exist_ok=True)  # an empty folder has no file to create it
    futures = [pool.submit(size, cache, root, rel, sha) for rel, sha, size in plan.writes]
    return [future.result() for future in futures]


def _remember(stats: StatCache, plan: _Plan, written: list[_Written]) -> None:
    # Trusted: these bytes were just written from verified objects.
    cut = len(plan.pointer.path) + 1
    is_dir = plan.pointer.kind == "dir"
    name = Path(plan.pointer.path).name
    remember_written(
        stats,
        plan.pointer.path,
        [(rel[cut:] if is_dir else name, st, sha) for rel, st, sha, _ in written],
        [rel[cut:] for rel in plan.deletes],
        fresh=plan.replace or plan.current is None,
    )


def _prune_empty(folder: Path) -> None:
    """Remove the folders under ``folder`` left empty by deletions (bottom up)."""
    for here, _, _ in os.walk(folder, topdown=False):
        if here != str(folder):
            with contextlib.suppress(OSError):  # not empty: keep it
                os.rmdir(here)
