"""What a remote holds: which objects it lacks, all it has, deleting some; and the small
event-loop helpers every remote operation runs on (one loop per call, a backend opened and
closed around it, errors translated at the boundary).

Finding what a push must send is the expensive question on a big remote: up to HEAD_LIMIT
objects are checked one by one (in parallel); beyond that, a remote of up to some thousands of
objects is listed page by page, and a bigger one only in the prefixes that hold wanted
objects, in parallel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from keel.core.hashing import is_sha256
from keel.data import packs
from keel.data.packs import PackIndex, packed_sizes
from keel.errors import InvalidInputError, KeelError, StoreError

if TYPE_CHECKING:
    from keel.data.remote import Backend, Remote

T = TypeVar("T")
HEAD_LIMIT = 64  # up to this many hashes, ask per object; beyond, list


@dataclass(frozen=True)
class Contents:
    """What a remote holds: its ``loose`` objects (sha256 -> size), its complete ``packs``
    (pack sha256 -> index) and the packs whose index never arrived (``unindexed``: pack
    sha256 -> (size, modified))."""

    loose: dict[str, int]
    packs: dict[str, PackIndex]
    unindexed: dict[str, tuple[int, float | None]] = field(default_factory=dict)

    def objects(self) -> dict[str, int]:
        """Every object, loose or packed: sha256 -> size."""
        return {**packed_sizes(self.packs), **self.loose}


def missing(
    remote: Remote,
    hashes: Iterable[str],
    sizes: Mapping[str, int] | None = None,
    *,
    indexes: Path | None = None,
) -> set[str]:
    """The hashes that ``remote`` lacks (or holds with a size other than ``sizes`` says).
    ``indexes`` is where pack indexes are kept between calls (DataCache.pack_indexes).

    >>> missing(remote_for(project), ["9f2c..."])           # doctest: +SKIP
    {'9f2c...'}
    """
    wanted = checked(hashes)
    if not wanted:
        return set()

    async def work(backend: Backend) -> set[str]:
        held = await packs.load(backend, indexes, remote.jobs)
        return await find_missing(backend, wanted, sizes or {}, remote.jobs, packed_sizes(held))

    return run(with_backend(remote, work))


def contents(remote: Remote, *, indexes: Path | None = None) -> Contents:
    """Everything on ``remote``: its loose objects (its 256 prefixes listed in parallel, or a
    few pages when it is small) and its packs."""

    async def work(backend: Backend) -> Contents:
        listed = await backend.list_blobs(packs.FOLDER)
        held = await packs.load(backend, indexes, remote.jobs, listed)
        unfinished = packs.unindexed(listed)
        small = await backend.list_small()
        if small is not None:
            return Contents(small, held, unfinished)
        found: dict[str, int] = {}
        prefixes = [f"{n:02x}" for n in range(256)]
        for listing in await gather_limited([backend.list_prefix(p) for p in prefixes], 32):
            found.update(listing)
        return Contents(found, held, unfinished)

    return run(with_backend(remote, work))


def list_objects(remote: Remote) -> dict[str, int]:
    """Every object on ``remote``, loose or packed: sha256 -> size."""
    return contents(remote).objects()


def delete_objects(remote: Remote, hashes: Iterable[str], whole_packs: Iterable[str] = ()) -> None:
    """Delete loose objects and whole packs from ``remote`` (absent ones are ignored). A
    pack's index goes first, so a pack is never listed without its bytes."""
    doomed = sorted(checked(hashes))
    dead = sorted(checked(whole_packs))

    async def work(backend: Backend) -> None:
        if doomed:
            await backend.delete(doomed)
        if dead:
            await backend.delete_blobs([packs.index_name(sha) for sha in dead])
            await backend.delete_blobs([packs.pack_name(sha) for sha in dead])

    if doomed or dead:
        run(with_backend(remote, work))


def run(coro: Awaitable[T]) -> T:
    """Run ``coro`` to completion from synchronous code, also when the caller is itself
    inside a running event loop (a notebook): then on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_as_coroutine(coro))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _as_coroutine(coro)).result()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def with_backend(remote: Remote, work: Callable[[Backend], Awaitable[T]]) -> T:
    from keel.data.remote import access_error, open_backend

    backend = open_backend(remote)
    try:
        try:
            await backend.open()
            return await work(backend)
        finally:
            await backend.close()  # also after a half-done open: close what was opened
    except KeelError:
        raise
    except Exception as exc:
        fatal = access_error(remote, exc)
        if fatal is not None:
            raise fatal from exc
        raise StoreError(f"{remote.describe()}: {type(exc).__name__}: {exc}") from exc


async def find_missing(
    backend: Backend,
    wanted: set[str],
    sizes: Mapping[str, int],
    jobs: int,
    packed: Mapping[str, int],
) -> set[str]:
    """The objects of ``wanted`` the remote lacks; ``packed`` (sha256 -> size) are those its
    packs hold, the rest are looked up loose."""
    in_packs = {
        sha for sha in wanted if sha in packed and sizes.get(sha, packed[sha]) == packed[sha]
    }
    wanted = wanted - in_packs
    if not wanted:
        return set()
    present: dict[str, int] = {}
    if len(wanted) <= HEAD_LIMIT:
        ordered = sorted(wanted)
        found = await gather_limited([backend.stat(sha) for sha in ordered], jobs)
        present = {sha: size for sha, size in zip(ordered, found, strict=True) if size is not None}
    else:
        # A small remote answers in a few pages; otherwise list only the prefixes holding
        # wanted objects, in parallel.
        small = await backend.list_small()
        if small is not None:
            present = small
        else:
            prefixes = sorted({sha[:2] for sha in wanted})
            listings = await gather_limited([backend.list_prefix(p) for p in prefixes], jobs)
            for listing in listings:
                present.update(listing)
    return {
        sha for sha in wanted if sha not in present or (sha in sizes and present[sha] != sizes[sha])
    }


async def gather_limited(coros: list[Awaitable[T]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(max(limit, 1))

    async def gated(coro: Awaitable[T]) -> T:
        async with gate:
            return await coro

    return list(await asyncio.gather(*(gated(c) for c in coros)))


def checked(hashes: Iterable[str]) -> set[str]:
    wanted = set(hashes)
    bad = sorted(sha for sha in wanted if not is_sha256(sha))
    if bad:
        raise InvalidInputError(f"{bad[0]!r} is not a sha256 hex digest (64 hex characters)")
    return wanted
