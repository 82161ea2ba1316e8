"""Parallel push and pull between the data cache and a remote.

Only missing objects move: a push first lists which objects the remote already has (its pack
indexes, then prefix listings in parallel, or one existence check per object when there are
few), a pull skips what the cache holds. Small objects travel in packs (keel.data.packs): a
push packs them, a pull reads the packs it needs with ranged reads. Transfers run as
coroutines on one event loop, ``jobs`` at a time, largest first so big files overlap with the
many small ones.

What "verified" means:
- push to S3: the PUT carries ``x-amz-checksum-sha256`` (the object's name, so free to
  compute); the server hashes what it received and refuses a mismatch (BadDigest), and its
  answer must echo the checksum. A server that ignores the header gets a HEAD afterwards
  (size, and the ETag against the MD5 when it is one).
- push to a local folder: the bytes are hashed while they are copied to a temporary name and
  renamed into place only when they match.
- push to other fsspec remotes: the source is hashed before the upload, the size after it.
- push of a pack: each member is hashed as it is read from the cache, the pack is uploaded
  as an object named by its own hash (verified as above), and its index only after that.
- pull: every object is hashed before it enters the cache (DataCache.put_verified), also
  each one cut out of a pack.

An interrupted push never leaves an object that looks complete: an S3 PUT is atomic (the
object appears whole or not at all), local uploads go through a temporary name, and a pack
counts only once its index is there. A rerun lists the remote again and sends whatever is
still missing.

One object failing does not stop the others; the error raised at the end names the failures.
A remote that refuses the credentials or cannot be reached stops everything at once with
one RemoteAccessError.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from keel.data import packs
from keel.data.arrival import Arrival
from keel.data.inventory import checked, find_missing, run, with_backend
from keel.errors import ArtifactCorruptedError, KeelError, NotFoundError, StoreError

if TYPE_CHECKING:
    from keel.data.arrival import Copies
    from keel.data.cache import DataCache
    from keel.data.remote import Backend, Remote

INLINE_BYTES = 1 << 20  # smaller objects are hashed on the event loop (cheaper than a thread)
PACK_BUFFERS = 4  # packs being read or sent at once (each holds a buffer of ~33 MB)
# Pulled packs written into the cache at once. Writing small files is short system calls
# with Python in between, so it runs at the GIL's pace: more threads only hand the GIL back
# and forth (the benchmark's 13 packs on 2 cores: 6 at once 1.9-3.2 CPU-s, 1 at once 1.0-1.5).
STORE_AT_ONCE = 1


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
    loose: Iterable[str] = (),
) -> TransferReport:
    """Upload the objects of ``hashes`` that ``remote`` lacks, ``jobs`` at a time. Small
    objects go in packs (keel.data.packs) unless they are among ``loose`` (the objects
    pointers name themselves, which keep an address of their own).

    >>> push(remote, cache, objects_of(cache, pointers), jobs=8).transferred  # doctest: +SKIP
    10004
    """
    wanted = checked(hashes)
    keep_loose = set(loose)
    started = time.monotonic()
    if not wanted:
        return TransferReport(0, 0, 0, 0.0)
    sizes = cache.sizes(wanted)
    absent = wanted - sizes.keys()
    bar = progress or _NoProgress()

    async def work(backend: Backend) -> TransferReport:
        held = await packs.load(backend, cache.pack_indexes, jobs)
        todo = await find_missing(backend, wanted, sizes, jobs, packs.packed_sizes(held))
        lost = sorted(todo & absent)
        if lost:
            raise NotFoundError(
                f"{len(lost)} object(s) to push are neither in the data cache nor on "
                f"{remote.describe()} (first: {lost[0]}); `keel data add` the data again"
            )
        groups = packs.plan(todo - keep_loose, sizes)
        grouped = {sha for group in groups for sha in group}
        transfers = [_upload_loose(backend, cache, sha, sizes[sha], bar) for sha in todo - grouped]
        buffers = _PackBuffers(PACK_BUFFERS)
        transfers += [_upload_pack(backend, cache, g, sizes, buffers, bar) for g in groups]
        total = sum(sizes[sha] for sha in todo)
        if todo:
            bar.start(len(todo), total)
        await _run_all(transfers, jobs, bar, "push", remote)
        return TransferReport(len(todo), total, len(wanted) - len(todo), _since(started))

    return run(with_backend(remote, work))


def pull(
    remote: Remote,
    cache: DataCache,
    hashes: Iterable[str],
    *,
    jobs: int,
    sizes: Mapping[str, int] | None = None,
    progress: TransferProgress | None = None,
    stored: Callable[[str], None] | None = None,
    copies: Copies | None = None,
) -> TransferReport:
    """Download the objects of ``hashes`` that ``cache`` lacks, ``jobs`` at a time; each is
    sha256-verified before it enters the cache. ``sizes`` (sha256 -> bytes, when known)
    gives the progress bar its byte total up front and lets a large object be received as it
    arrives (keel.data.arrival) — into the cache with direct I/O and into the workspace files
    ``copies`` names for it; ``stored`` is told each object as it enters the cache (on the
    transferring thread or a worker thread), after its copies were named.

    >>> pull(remote, cache, ["9f2c..."], jobs=8).transferred   # doctest: +SKIP
    1
    """
    wanted = checked(hashes)
    started = time.monotonic()
    known = dict(sizes or {})
    order = wanted - cache.present(wanted)
    bar = progress or _NoProgress()
    tell = stored or _ignore
    if not order:
        return TransferReport(0, 0, len(wanted), _since(started))

    async def work(backend: Backend) -> TransferReport:
        held = await packs.load(backend, cache.pack_indexes, jobs)
        known.update(packs.packed_sizes(held))
        reads, loose = packs.spans(order, held)
        bar.start(len(order), sum(known.get(sha, 0) for sha in order))
        moved = [0]
        transfers = [
            _download_loose(backend, cache, sha, known.get(sha, 0), bar, moved, tell, copies)
            for sha in loose
        ]
        storing = asyncio.Semaphore(STORE_AT_ONCE)
        buffers = _PackBuffers(PACK_BUFFERS)
        transfers += [
            _download_span(backend, cache, span, bar, moved, tell, storing, buffers)
            for span in reads
        ]
        await _run_all(transfers, jobs, bar, "pull", remote)
        return TransferReport(len(order), moved[0], len(wanted) - len(order), _since(started))

    return run(with_backend(remote, work))


@dataclass(frozen=True)
class _Work:
    """One request's worth of transfer: a loose object, or a pack (push) / a ranged read of
    one (pull). ``label`` names it in errors."""

    label: str
    nbytes: int
    objects: int
    run: Callable[[], Awaitable[None]]


def _upload_loose(
    backend: Backend, cache: DataCache, sha: str, size: int, bar: TransferProgress
) -> _Work:
    async def run() -> None:
        await backend.upload(sha, cache.path_of(sha), size, bar.advance)

    return _Work(f"object {sha}", size, 1, run)


def _upload_pack(
    backend: Backend,
    cache: DataCache,
    members: list[str],
    sizes: Mapping[str, int],
    buffers: _PackBuffers,
    bar: TransferProgress,
) -> _Work:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        async with buffers.lend() as buffer:
            body, index = await loop.run_in_executor(
                None, packs.build, cache, members, sizes, buffer
            )
            await packs.upload(backend, body, index)
        packs.keep_index(cache.pack_indexes, index)
        bar.advance(index.size)

    nbytes = sum(sizes[sha] for sha in members)
    return _Work(
        f"a pack of {len(members)} objects (first: {members[0]})", nbytes, len(members), run
    )


class _PackBuffers:
    """The buffers packs are built in (push) or ranges of packs read into (pull), each lent
    to one pack or range at a time and then reused."""

    def __init__(self, count: int) -> None:
        self._gate = asyncio.Semaphore(count)
        self._free: list[packs.Buffer] = []

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[packs.Buffer]:
        async with self._gate:
            buffer = self._free.pop() if self._free else packs.new_buffer()
            yield buffer
            # Not after a failure: a worker thread may still be reading a pack into it.
            self._free.append(buffer)


def _download_loose(
    backend: Backend,
    cache: DataCache,
    sha: str,
    size: int,
    bar: TransferProgress,
    moved: list[int],
    stored: Callable[[str], None],
    copies: Copies | None,
) -> _Work:
    async def run() -> None:
        arrival = Arrival.open(cache, sha, size, copies) if backend.receives_into() else None
        if arrival is not None:
            try:
                await backend.download_into(sha, arrival, bar.advance)
                arrival.finish()
            finally:
                arrival.discard()
            moved[0] += arrival.size
            stored(sha)
            return
        temp = cache.new_temp(sha)
        try:
            digest = await backend.download(sha, temp, bar.advance)
            got = temp.stat().st_size
            if got > INLINE_BYTES and digest is None:
                await asyncio.get_running_loop().run_in_executor(
                    None, cache.put_verified, temp, sha
                )
            else:
                cache.put_verified(temp, sha, digest)
            moved[0] += got
            stored(sha)
        finally:
            temp.unlink(missing_ok=True)

    return _Work(f"object {sha}", size, 1, run)


def _download_span(
    backend: Backend,
    cache: DataCache,
    span: packs.Span,
    bar: TransferProgress,
    moved: list[int],
    stored: Callable[[str], None],
    storing: asyncio.Semaphore,
    buffers: _PackBuffers,
) -> _Work:
    length = span.end - span.start

    async def run() -> None:
        if backend.receives_into() and length <= packs.BUFFER_BYTES:
            # Into a reused buffer: no fresh 32 MB allocation per read.
            async with buffers.lend() as buffer:
                data = memoryview(buffer)[:length]
                await backend.get_blob_into(packs.pack_name(span.pack), span.start, data)
                await store(data)
        else:
            await store(await backend.get_blob(packs.pack_name(span.pack), span.start, length))
        moved[0] += sum(size for _, _, size in span.members)

    async def store(data: bytes | memoryview) -> None:
        bar.advance(len(data))
        loop = asyncio.get_running_loop()
        async with storing:
            bad = await loop.run_in_executor(None, packs.store, cache, span, data, stored)
        if bad:
            raise ArtifactCorruptedError(
                f"{len(bad)} object(s) read from pack {span.pack} on the remote hash "
                f"differently than their names (first: {bad[0]}); they were refused — push "
                "them again from a clone whose cache holds them"
            )

    first = span.members[0][0]
    return _Work(
        f"object {first} (and {len(span.members) - 1} more from pack {span.pack})",
        length,
        len(span.members),
        run,
    )


async def _run_all(
    work: list[_Work], jobs: int, bar: TransferProgress, verb: str, remote: Remote
) -> None:
    """Run ``work`` (largest first) with ``jobs`` workers. A RemoteAccessError stops all
    workers at once; other failures are collected and raised together at the end."""
    from keel.data.remote import RemoteAccessError, access_error

    queue = iter(sorted(work, key=lambda item: item.nbytes, reverse=True))
    failures: dict[str, KeelError] = {}

    async def worker() -> None:
        for item in queue:
            try:
                await item.run()
            except RemoteAccessError:
                raise
            except KeelError as exc:
                failures[item.label] = exc
            except Exception as exc:  # translated: per object, or fatal for the remote
                fatal = access_error(remote, exc)
                if fatal is not None:
                    raise fatal from exc
                failures[item.label] = StoreError(
                    f"{item.label} failed to {verb}: {type(exc).__name__}: {exc}"
                )
            else:
                bar.advance(0, item.objects)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(jobs, len(work))))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if failures:
        raise _combined(failures, len(work), verb, remote)


def _combined(failures: dict[str, KeelError], total: int, verb: str, remote: Remote) -> KeelError:
    if len(failures) == 1:
        return next(iter(failures.values()))
    kinds = {type(exc) for exc in failures.values()}
    kind: type[KeelError] = kinds.pop() if len(kinds) == 1 else StoreError
    first = next(iter(failures.values()))
    return kind(
        f"{len(failures)} of {total} transfers failed to {verb} with {remote.describe()}; the "
        f"others were transferred. First failure: {first} — fix it and run "
        f"`keel data {verb}` again to finish"
    )


def _ignore(sha256: str) -> None:
    pass


def _since(started: float) -> float:
    return time.monotonic() - started
