"""Parallel push and pull between the data cache and a remote.

Only missing objects move: a push first lists which objects the remote already has (prefix
listings in parallel, or one existence check per object when there are few), a pull skips
what the cache holds. Transfers run as coroutines on one event loop, ``jobs`` at a time,
largest objects first so big files overlap with the many small ones.

What "verified" means:
- push to S3: the PUT carries ``x-amz-checksum-sha256`` (the object's name, so free to
  compute); the server hashes what it received and refuses a mismatch (BadDigest), and its
  answer must echo the checksum. A server that ignores the header gets a HEAD afterwards
  (size, and the ETag against the MD5 when it is one).
- push to a local folder: the bytes are hashed while they are copied to a temporary name and
  renamed into place only when they match.
- push to other fsspec remotes: the source is hashed before the upload, the size after it.
- pull: every object is hashed before it enters the cache (DataCache.put_verified).

An interrupted push never leaves an object that looks complete: an S3 PUT is atomic (the
object appears whole or not at all), local uploads go through a temporary name. A rerun
lists the remote again and sends whatever is still missing.

One object failing does not stop the others; the error raised at the end names the failures.
A remote that refuses the credentials or cannot be reached stops everything at once with
one RemoteAccessError.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from keel.data.inventory import checked, find_missing, run, with_backend
from keel.errors import KeelError, NotFoundError, StoreError

if TYPE_CHECKING:
    from keel.data.cache import DataCache
    from keel.data.remote import Backend, Remote

T = TypeVar("T")
INLINE_BYTES = 1 << 20  # smaller objects are hashed on the event loop (cheaper than a thread)


class TransferProgress(Protocol):
    """Receives progress: ``start`` once with the totals, then ``advance`` as bytes move and
    objects complete (called on the transferring thread)."""

    def start(self, objects: int, nbytes: int) -> None: ...

    def advance(self, nbytes: int, objects: int = 0) -> None: ...


@dataclass(frozen=True)
class TransferReport:
    """What a push or pull did: ``transferred`` objects of ``bytes`` in total moved,
    ``present`` were already there."""

    transferred: int
    bytes: int
    present: int
    seconds: float


class _NoProgress:
    def start(self, objects: int, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int, objects: int = 0) -> None:
        pass


def push(
    remote: Remote,
    cache: DataCache,
    hashes: Iterable[str],
    *,
    jobs: int,
    progress: TransferProgress | None = None,
) -> TransferReport:
    """Upload the objects of ``hashes`` that ``remote`` lacks, ``jobs`` at a time.

    >>> push(remote, cache, objects_of(cache, pointers), jobs=8).transferred  # doctest: +SKIP
    10004
    """
    wanted = checked(hashes)
    started = time.monotonic()
    if not wanted:
        return TransferReport(0, 0, 0, 0.0)
    sizes, absent = _local_sizes(cache, wanted)
    bar = progress or _NoProgress()

    async def work(backend: Backend) -> TransferReport:
        todo = await find_missing(backend, wanted, sizes, jobs)
        lost = sorted(todo & absent)
        if lost:
            raise NotFoundError(
                f"{len(lost)} object(s) to push are neither in the data cache nor on "
                f"{remote.describe()} (first: {lost[0]}); `keel data add` the data again"
            )
        order = sorted(todo, key=lambda sha: sizes[sha], reverse=True)
        total = sum(sizes[sha] for sha in order)
        if order:
            bar.start(len(order), total)

        async def one(sha: str) -> None:
            await backend.upload(sha, cache.path_of(sha), sizes[sha], bar.advance)

        await _run_all(order, one, jobs, bar, "push", remote)
        return TransferReport(len(order), total, len(wanted) - len(order), _since(started))

    return run(with_backend(remote, work))


def pull(
    remote: Remote,
    cache: DataCache,
    hashes: Iterable[str],
    *,
    jobs: int,
    sizes: Mapping[str, int] | None = None,
    progress: TransferProgress | None = None,
) -> TransferReport:
    """Download the objects of ``hashes`` that ``cache`` lacks, ``jobs`` at a time; each is
    sha256-verified before it enters the cache. ``sizes`` (sha256 -> bytes, when known)
    gives the progress bar its byte total up front.

    >>> pull(remote, cache, ["9f2c..."], jobs=8).transferred   # doctest: +SKIP
    1
    """
    wanted = checked(hashes)
    started = time.monotonic()
    sizes = dict(sizes or {})
    order = sorted(
        (sha for sha in wanted if not cache.has(sha)), key=lambda s: sizes.get(s, 0), reverse=True
    )
    bar = progress or _NoProgress()
    if not order:
        return TransferReport(0, 0, len(wanted), _since(started))

    async def work(backend: Backend) -> TransferReport:
        bar.start(len(order), sum(sizes.get(sha, 0) for sha in order))
        moved = 0

        async def one(sha: str) -> None:
            nonlocal moved
            temp = cache.new_temp(sha)
            try:
                await backend.download(sha, temp, bar.advance)
                size = temp.stat().st_size
                if size > INLINE_BYTES:
                    await asyncio.get_running_loop().run_in_executor(
                        None, cache.put_verified, temp, sha
                    )
                else:
                    cache.put_verified(temp, sha)
                moved += size
            finally:
                temp.unlink(missing_ok=True)

        await _run_all(order, one, jobs, bar, "pull", remote)
        return TransferReport(len(order), moved, len(wanted) - len(order), _since(started))

    return run(with_backend(remote, work))


async def _run_all(
    order: list[str],
    one: Callable[[str], Awaitable[None]],
    jobs: int,
    bar: TransferProgress,
    verb: str,
    remote: Remote,
) -> None:
    """Run ``one`` over ``order`` with ``jobs`` workers. A RemoteAccessError stops all
    workers at once; other failures are collected and raised together at the end."""
    from keel.data.remote import RemoteAccessError, access_error

    queue = iter(order)
    failures: dict[str, KeelError] = {}

    async def worker() -> None:
        for sha in queue:
            try:
                await one(sha)
            except RemoteAccessError:
                raise
            except KeelError as exc:
                failures[sha] = exc
            except Exception as exc:  # translated: per object, or fatal for the remote
                fatal = access_error(remote, exc)
                if fatal is not None:
                    raise fatal from exc
                failures[sha] = StoreError(
                    f"object {sha} failed to {verb}: {type(exc).__name__}: {exc}"
                )
            else:
                bar.advance(0, 1)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(jobs, len(order))))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if failures:
        raise _combined(failures, len(order), verb, remote)


def _combined(failures: dict[str, KeelError], total: int, verb: str, remote: Remote) -> KeelError:
    if len(failures) == 1:
        return next(iter(failures.values()))
    kinds = {type(exc) for exc in failures.values()}
    kind: type[KeelError] = kinds.pop() if len(kinds) == 1 else StoreError
    first = next(iter(failures.values()))
    return kind(
        f"{len(failures)} of {total} objects failed to {verb} with {remote.describe()}; the "
        f"others were transferred. First failure: {first} — fix it and run "
        f"`keel data {verb}` again to finish"
    )


def _local_sizes(cache: DataCache, wanted: set[str]) -> tuple[dict[str, int], set[str]]:
    sizes: dict[str, int] = {}
    absent: set[str] = set()
    for sha in wanted:
        try:
            sizes[sha] = cache.path_of(sha).stat().st_size
        except FileNotFoundError:
            absent.add(sha)
    return sizes, absent


def _since(started: float) -> float:
    return time.monotonic() - started
