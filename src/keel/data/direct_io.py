"""Large cache objects written with direct I/O while their source is hashed.

A buffered copy into the cache costs a memcpy of every byte into newly allocated page-cache
pages (on a freshly booted VM, where each page is touched for the first time, that copy was
most of a first ``keel data add``: 7 of its 16 CPU-seconds for 2 GB), and it fills the page
cache with a second copy of the data that nobody reads soon, evicting what the user had
there. Instead, the hashing thread reads each block of a large file into an aligned buffer,
hashes it, and hands the same buffer to the disk with ``O_DIRECT``: no copy, no cache
pollution. One write is in flight on a writer thread while the next block is read and hashed,
so the disk works alongside the hashing. The object is an unnamed file (O_TMPFILE) until its
hash is known; a failure leaves nothing behind.

Where direct I/O is not possible (tmpfs, another OS, stricter alignment), the caller copies as
before; a write refused for alignment finishes the file with plain writes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from keel.data.links import name_unnamed
from keel.errors import StoreError

BLOCK = 8 << 20  # bytes per read, hash and write
ALIGN = 4096  # O_DIRECT needs offsets, lengths and buffers aligned to the logical block size


class DirectWriter:
    """An unnamed file in ``folder``, fed block by block (`next_buffer`, then `wrote`) and
    named by `publish` once complete, or dropped by `discard`.

    >>> writer = DirectWriter.open(cache_tmp)                   # doctest: +SKIP
    >>> view = writer.next_buffer(); n = f.readinto(view); writer.wrote(n)
    >>> writer.publish(target)
    """

    def __init__(self, fd: int, folder: Path) -> None:
        self._fd = fd
        self._folder = folder
        self._buffers = [mmap.mmap(-1, BLOCK), mmap.mmap(-1, BLOCK)]  # page-aligned
        self._turn = 0
        self._offset = 0
        self._direct = True
        self._pending: Future[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="keel-direct")

    @classmethod
    def open(cls, folder: Path) -> DirectWriter | None:
        """A writer in ``folder``; None where unnamed files with direct I/O are unavailable."""
        unnamed, direct = getattr(os, "O_TMPFILE", 0), getattr(os, "O_DIRECT", 0)
        if not (unnamed and direct):  # another OS
            return None
        try:
            fd = os.open(folder, unnamed | direct | os.O_WRONLY | os.O_CLOEXEC, 0o444)
        except OSError:
            return None
        return cls(fd, folder)

    def next_buffer(self) -> memoryview:
        """A free buffer to read the file's next bytes into (the other may still be on its
        way to the disk)."""
        self._turn ^= 1
        return memoryview(self._buffers[self._turn])

    def wrote(self, n: int) -> None:
        """The first ``n`` bytes of the buffer last handed out are the file's next bytes."""
        self._wait()
        view = memoryview(self._buffers[self._turn])[:n]
        offset, self._offset = self._offset, self._offset + n
        if n % ALIGN:  # the tail: direct I/O cannot write a partial block
            self._buffered()
        self._pending = self._pool.submit(self._write, view, offset)

    def write_now(self, view: memoryview) -> None:
        """Write ``view`` (bytes in a buffer from `next_buffer`) as the file's next bytes on
        the calling thread, returning once they are written."""
        self._wait()
        offset, self._offset = self._offset, self._offset + len(view)
        if len(view) % ALIGN:  # the tail: direct I/O cannot write a partial block
            self._buffered()
        try:
            self._write(view, offset)
        except OSError as exc:
            raise self._failed(exc) from exc

    def restart(self) -> None:
        """Drop every byte written so far (a download starts again)."""
        self._wait()
        os.ftruncate(self._fd, 0)
        self._offset = 0

    def publish(self, target: Path) -> os.stat_result | None:
        """Name the file ``target`` once every byte is on its way; its stat, or None (and the
        file dropped) when ``target`` exists already."""
        try:
            self._wait()
            st = os.fstat(self._fd)
            try:
                name_unnamed(self._fd, target)
            except FileExistsError:
                return None
            return st
        finally:
            self.discard()

    def discard(self) -> None:
        """Close the file: unnamed, it vanishes. Safe to call more than once."""
        if self._fd < 0:
            return
        try:
            if self._pending is not None:
                self._pending.exception()  # let the write finish before closing its file
        finally:
            os.close(self._fd)
            self._fd = -1
            self._pool.shutdown(wait=True)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                pending.result()
            except OSError as exc:
                raise self._failed(exc) from exc

    def _failed(self, exc: OSError) -> StoreError:
        return StoreError(f"cannot write into the data cache at {self._folder}: {exc}")

    def _write(self, view: memoryview, offset: int) -> None:
        while view:
            try:
                n = os.pwrite(self._fd, view, offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._direct:
                    raise
                self._buffered()  # this device wants another alignment: finish plainly
                continue
            view, offset = view[n:], offset + n

    def _buffered(self) -> None:
        if self._direct:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            self._direct = False
