"""A large downloaded object, put where it belongs as its bytes arrive.

Pulling a large object used to mean writing it into a cache file (a copy of every byte into
newly allocated page-cache pages), then copying that file into the workspace (another). On a
VM whose memory is still fresh every new page is expensive: a pull of the data benchmark's
2 GB spent most of its CPU time there. Here the bytes arrive in two page-aligned buffers
taken in turn, and each block, while the next one is received, is hashed, written into the
cache with direct I/O (no page-cache copy, keel.data.direct_io) and written into the
workspace files waiting for the object, if any. Nothing gets a name before the whole object
hashed to its own: the cache object and the workspace files are unnamed files (O_TMPFILE)
until then, so a failure or a corrupt download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from keel.data.cache import DataCache, refused_download
from keel.data.direct_io import DirectWriter
from keel.data.links import name_unnamed, write_all
from keel.errors import StoreError

Copies = Callable[[str], list[Path]]
"""Given an object's sha256, the workspace files to write from its bytes as they arrive (and
the caller no longer writes them itself); [] for none."""


class Arrival:
    """Receives one object: `buffer` for the next bytes, `take` them once received (on a
    worker thread), `finish` to verify and name everything, `discard` on failure.

    >>> arrival = Arrival.open(cache, sha, size, copies)        # doctest: +SKIP
    >>> view = arrival.buffer(); n = sock.recv_into(view); arrival.take(view[:n])
    >>> arrival.finish()
    """

    def __init__(self, cache: DataCache, sha256: str, writer: DirectWriter) -> None:
        self.cache, self.sha256 = cache, sha256
        self._writer = writer
        self._digest = hashlib.sha256()
        # workspace file, the file its bytes go into, that file's temporary name (None: an
        # unnamed file)
        self._copies: list[tuple[Path, int, Path | None]] = []
        self.size = 0

    @classmethod
    def open(
        cls, cache: DataCache, sha256: str, size: int, copies: Copies | None
    ) -> Arrival | None:
        """An arrival for object ``sha256`` of ``size`` bytes; None where it would not help
        (a small object) or direct I/O is unavailable: the caller downloads as usual."""
        writer = cache.download_writer(size)
        if writer is None:
            return None
        arrival = cls(cache, sha256, writer)
        if copies is not None and cache.copies_to_workspace():
            try:
                for path in copies(sha256):
                    arrival._copy_to(path)
            except BaseException:
                arrival.discard()
                raise
        return arrival

    @property
    def copies(self) -> list[Path]:
        return [path for path, _, _ in self._copies]

    def buffer(self) -> memoryview:
        """A free buffer (8 MiB, page-aligned) for the next bytes."""
        return self._writer.next_buffer()

    def take(self, view: memoryview) -> None:
        """The object's next bytes, received into the buffer last handed out."""
        self._digest.update(view)
        for path, fd, _ in self._copies:
            try:
                write_all(fd, view)
            except OSError as exc:
                raise StoreError(f"cannot write {path}: {exc}") from exc
        self._writer.write_now(view)
        self.size += len(view)

    def restart(self) -> None:
        """Forget every byte taken (the download starts again)."""
        self._digest = hashlib.sha256()
        self._writer.restart()
        for _, fd, _ in self._copies:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        self.size = 0

    def finish(self) -> None:
        """Name the cache object and the workspace files, once the bytes hashed to the
        object's name; a mismatch raises ArtifactCorruptedError and names nothing."""
        try:
            digest = self._digest.hexdigest()
            if digest != self.sha256:
                raise refused_download(self.sha256, digest)
            self.cache.publish(self._writer, self.sha256)
            for path, fd, temp in self._copies:
                _name(fd, temp, path)
        finally:
            self.discard()

    def discard(self) -> None:
        """Close everything: what was not named vanishes. Safe to call more than once."""
        self._writer.discard()
        copies, self._copies = self._copies, []
        for _, fd, temp in copies:
            os.close(fd)
            if temp is not None:
                temp.unlink(missing_ok=True)

    def _copy_to(self, path: Path) -> None:
        temp: Path | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
            except (AttributeError, OSError):  # no unnamed files here: a temporary name
                temp = path.with_name(f".{path.name}.keel-tmp-{os.getpid()}")
                temp.unlink(missing_ok=True)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc
        self._copies.append((path, fd, temp))


def _name(fd: int, temp: Path | None, path: Path) -> None:
    """Give the file being written (unnamed, or at ``temp``) the name ``path``, replacing
    whatever appeared there meanwhile."""
    try:
        if temp is None:
            try:
                name_unnamed(fd, path)
                return
            except FileExistsError:
                temp = path.with_name(f".{path.name}.keel-tmp-{os.getpid()}")
                temp.unlink(missing_ok=True)
                name_unnamed(fd, temp)
        os.replace(temp, path)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc}") from exc
