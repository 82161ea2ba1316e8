"""Parallel sha256 of many files.

hashlib releases the GIL while it digests, so threads hash files of 1 MiB or more on every
core at once, each file one task, read in 1 MiB chunks. Smaller files are read whole, batched
(ten thousand 40 KB files do not cost ten thousand task hand-offs), and all go to one thread
of their own beside those: their work is mostly short system calls with Python in between,
at the GIL's pace, and two threads doing it only hand the GIL back and forth (a first add of
the benchmark's 10,000 small files: 3.7-4.0 s on one thread, 4.5-5.0 s on two). A file can
also be read into the buffers of a `Sink` (keel.data.direct_io), which writes each block
elsewhere as soon as it is hashed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from keel.data.links import StrPath

CHUNK = 1 << 20
BATCH_BYTES = 8 << 20  # files under CHUNK are grouped into tasks of about this many bytes
BATCH_FILES = 256

Progress = Callable[[int], None]
"""Called with the number of bytes just hashed (from worker threads)."""


class Sink(Protocol):
    """Takes a file's bytes as they are hashed: hands out the buffer to read the next block
    into, is told how much was read, and is dropped if hashing fails."""

    def next_buffer(self) -> memoryview: ...

    def wrote(self, n: int) -> None: ...

    def discard(self) -> None: ...


def hash_file(
    path: StrPath, progress: Progress | None = None, sink: Sink | None = None
) -> tuple[str, int]:
    """sha256 and size of one file, read in 1 MiB chunks (or into ``sink``'s buffers, each
    block handed to it once hashed).

    >>> hash_file(Path("data/train.csv"))                    # doctest: +SKIP
    ('9f2c...', 1048576)
    """
    if sink is not None:
        try:
            return _hash_into(path, progress, sink)
        except BaseException:
            sink.discard()
            raise
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
            size += n
            if progress is not None:
                progress(n)
    return digest.hexdigest(), size


def _hash_into(path: StrPath, progress: Progress | None, sink: Sink) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            view = sink.next_buffer()
            n = f.readinto(view)
            if not n:
                return digest.hexdigest(), size
            digest.update(view[:n])
            sink.wrote(n)
            size += n
            if progress is not None:
                progress(n)


def _read_small(path: StrPath, size: int) -> bytes:
    """The whole file, expected to hold ``size`` bytes (< CHUNK, from a stat made before)."""
    # One read is faster than a chunk loop for files well under a chunk, and a bare file
    # descriptor skips what a file object costs (an fstat, a seek) on 10,000s of files. Asking
    # for one byte more than expected and getting exactly the size expected means the end was
    # reached: no second read looks for it. (Asking for a whole chunk would also make
    # glibc map and unmap a fresh 1 MiB block on every read.)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = [os.read(fd, size + 1)]
        if len(parts[0]) != size:  # the file changed since its stat: read to its end
            while part := os.read(fd, CHUNK):
                parts.append(part)
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def hash_files(
    paths: Sequence[StrPath],
    sizes: Sequence[int] | None = None,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    then: Callable[[int, str, int, bytes | None], None] | None = None,
    sink_for: Callable[[int], Sink | None] | None = None,
) -> list[tuple[str, int]]:
    """(sha256, size) of each file in ``paths``, in order: files of 1 MiB or more hashed by
    ``jobs`` threads (default: one per CPU), the smaller ones meanwhile by one thread of their
    own (``jobs=1``: everything on the calling thread). ``sizes`` (from a stat already made)
    helps batch small files. ``then(index, sha256, size, data)`` runs on the hashing thread
    as each file is done (while its bytes are fresh in the page cache), with ``data`` the
    bytes hashed when the file was small enough to be read whole (else None).
    ``sink_for(index)`` may give a file of at least 1 MiB a `Sink` for its bytes (`then`
    finishes it).

    >>> hash_files([Path("a.bin"), Path("b.bin")], jobs=2)  # doctest: +SKIP
    [('9f2c...', 10), ('1b4e...', 20)]
    """
    if sizes is None:
        sizes = [os.stat(p).st_size for p in paths]
    results: list[tuple[str, int]] = [("", 0)] * len(paths)
    large, small = _plan(sizes)
    workers = max(1, min(jobs or os.cpu_count() or 1, len(large) + len(small)))

    def run(task: list[int]) -> None:
        for i in task:
            data: bytes | None = None
            if sizes[i] < CHUNK:
                data = _read_small(paths[i], sizes[i])
                results[i] = hashlib.sha256(data).hexdigest(), len(data)
                if progress is not None:
                    progress(len(data))
            else:
                sink = sink_for(i) if sink_for is not None else None
                results[i] = hash_file(paths[i], progress, sink)
            if then is not None:
                then(i, *results[i], data)

    if workers == 1:
        for task in large + small:
            run(task)
        return results
    from concurrent.futures import ThreadPoolExecutor

    with (
        ThreadPoolExecutor(workers, thread_name_prefix="keel-hash") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="keel-hash-small") as one,
    ):
        futures = [pool.submit(run, task) for task in large]
        futures += [one.submit(run, task) for task in small]
        for future in futures:
            future.result()  # re-raises the first error (a file vanished, no permission)
    return results


def _plan(sizes: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
    """Group file indexes into tasks: files of CHUNK or more alone, largest first (so the
    last task to finish is a short one); smaller files in batches, largest first too."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    large: list[list[int]] = []
    small: list[list[int]] = []
    batch: list[int] = []
    batch_bytes = 0
    for i in order:
        if sizes[i] >= CHUNK:
            large.append([i])
            continue
        batch.append(i)
        batch_bytes += sizes[i]
        if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            small.append(batch)
            batch, batch_bytes = [], 0
    if batch:
        small.append(batch)
    return large, small
