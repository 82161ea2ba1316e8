"""Making files from cache objects, by the configured link types in order: ``reflink``
(a copy-on-write clone), ``hardlink`` (the object's own inode) or ``copy`` (in the kernel where
it can). New files are written into unnamed files (O_TMPFILE) in their folder and given their
name only when complete: nothing partial is ever visible, a crash leaves nothing behind, and
threads writing many files do not contend twice for a shared temporary folder's lock. Where
O_TMPFILE is missing (another OS, some filesystems) the caller falls back to a temporary name
and a rename. What works is learned on first try, per Linker.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

from keel.errors import InvalidInputError, StoreError

StrPath: TypeAlias = "str | os.PathLike[str]"  # where a plain string saves a Path's cost

LINK_TYPES = ("reflink", "hardlink", "copy")
FICLONE = 0x40049409  # Linux ioctl: clone a file's extents (btrfs, xfs, bcachefs, ...)
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}
_NO_HARDLINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOSYS}


class Linker:
    """The link types of a cache (``data.link``), and what this filesystem was found to
    support.

    >>> linker = Linker(["reflink", "copy"])
    >>> linker.materialize(src, dest, 0o666, prefer_link=False)[0]  # doctest: +SKIP
    'copy'
    """

    def __init__(self, links: Sequence[str]) -> None:
        bad = [link for link in links if link not in LINK_TYPES]
        if bad or not links:
            raise InvalidInputError(
                f"data.link {list(links)!r} is invalid; use a list of {', '.join(LINK_TYPES)}"
            )
        self.links = tuple(links)
        self._reflink_works: bool | None = None  # learned on first try
        self._tmpfile_works: bool | None = None  # likewise for unnamed files (O_TMPFILE)

    def publish_unnamed(self, target: StrPath, data: bytes | memoryview) -> bool:
        """Write ``data`` into an unnamed read-only file in ``target``'s folder and name it
        ``target`` once complete. False where that cannot be done here (the caller then uses
        a temporary name)."""

        def fill(fd: int) -> str:
            write_all(fd, data)
            return "written"

        try:
            return self._unnamed(target, 0o444, fill) is not None
        except FileExistsError:
            return True  # the same bytes (the same hash) arrived another way

    def copy_unnamed(self, src: Path, dest: Path) -> str | None:
        """A new workspace file as an unnamed clone or copy of ``src``, named ``dest`` once
        complete; the link type used, or None to take the temporary-name path (no O_TMPFILE
        here, a hardlink configured first, or ``dest`` appeared meanwhile)."""
        if self.links[0] == "hardlink":
            return None

        def fill(fd: int) -> str | None:
            with open(src, "rb", buffering=0) as source:
                return self._fill_unnamed(source.fileno(), fd)

        try:
            return self._unnamed(dest, 0o666, fill)
        except FileExistsError:
            return None

    def store_unnamed(
        self, src: StrPath, target: StrPath, size: int, data: bytes | None = None
    ) -> os.stat_result | None:
        """``target`` as a read-only unnamed clone or copy of ``src``, named once complete and
        only if it holds ``size`` bytes; its stat, or None to take the temporary-name path (no
        O_TMPFILE here, or a hard link configured first). FileExistsError when ``target``
        appeared meanwhile. ``data``, when given, is ``src``'s bytes as just read: a copy is
        written from it (no second read of ``src``)."""
        if self.links[0] == "hardlink":
            return None
        stats: list[os.stat_result] = []

        def fill(fd: int) -> str | None:
            if data is not None and self.copies(src, os.path.dirname(target)):
                write_all(fd, data)
                made: str | None = "copy"
            else:
                with open(src, "rb", buffering=0) as source:
                    made = self._fill_unnamed(source.fileno(), fd)
            stats.append(os.fstat(fd))
            if stats[0].st_size != size:
                raise changed_while_added(src, stats[0].st_size, size)
            return made

        return stats[0] if self._unnamed(target, 0o444, fill) is not None else None

    def _unnamed(self, target: StrPath, mode: int, fill: Callable[[int], str | None]) -> str | None:
        """Make ``target`` from an unnamed file (O_TMPFILE) in its folder that ``fill``
        writes, named (linkat) only once complete; what ``fill`` returned, or None when
        unnamed files do not work here or ``fill`` gave up. FileExistsError when ``target``
        appeared meanwhile."""
        if self._tmpfile_works is False:
            return None
        try:
            fd = os.open(os.path.dirname(target), os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, mode)
        except (AttributeError, OSError):
            self._tmpfile_works = False
            return None
        try:
            made = fill(fd)
            if made is None:
                return None
            try:
                name_unnamed(fd, target)
            except FileExistsError:
                raise
            except OSError:
                self._tmpfile_works = False
                return None
        finally:
            os.close(fd)
        self._tmpfile_works = True
        return made

    def _fill_unnamed(self, src: int, dest: int) -> str | None:
        """Clone or copy ``src`` into ``dest`` by the configured order; None when a hardlink
        comes first (the temporary-name path makes those)."""
        for how in self.links:
            if how == "reflink":
                if self._reflink_works is not False and self._clone_fd(src, dest):
                    return how
                continue
            if how == "copy":
                copy_fds(src, dest, os.fstat(src).st_size)
                return how
            return None
        return None

    def copies(self, src: StrPath | None, folder: StrPath) -> bool:
        """Whether a file made in ``folder`` from ``src`` (None: from any file there) would be
        a copy of its bytes (not a hard link, not a reflink). Whether reflinks work here is
        learned, if not yet known, by cloning ``src`` (or a one-block probe file) into an
        unnamed file that is then dropped."""
        for how in self.links:
            if how == "hardlink":
                return False
            if how == "copy":
                return True
            if self._reflink_works is None:
                self._probe_reflink(src, folder)
            if self._reflink_works is not False:
                return False
        return False

    def _probe_reflink(self, src: StrPath | None, folder: StrPath) -> None:
        if src is None:
            probe = Path(folder) / f".reflink-probe-{os.getpid()}-{threading.get_ident()}"
            try:
                probe.write_bytes(bytes(4096))
                self._probe_reflink(probe, folder)
            except OSError:
                pass  # unknown still: the caller keeps to the usual path
            finally:
                probe.unlink(missing_ok=True)
            return
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o444)
        except (AttributeError, OSError):
            return  # unknown still: the caller keeps to the usual path
        try:
            with open(src, "rb", buffering=0) as source:
                self._clone_fd(source.fileno(), fd)
        finally:
            os.close(fd)

    def _clone_fd(self, src: int, dest: int) -> bool:
        import fcntl

        try:
            fcntl.ioctl(dest, FICLONE, src)
        except OSError as exc:
            if exc.errno not in _NO_REFLINK:
                raise
            self._reflink_works = False
            return False
        self._reflink_works = True
        return True

    def materialize(
        self, src: StrPath, dest: Path, mode: int, *, prefer_link: bool
    ) -> tuple[str, os.stat_result]:
        """Make ``dest`` (which must not exist) from ``src``; copies get ``mode`` (masked by
        the umask). Returns the link type used and dest's stat."""
        order = self.links
        if prefer_link:
            order = ("hardlink", *(link for link in order if link != "hardlink"))
        last: OSError | None = None
        for how in order:
            try:
                if how == "reflink" and self._reflink(src, dest, mode):
                    return how, os.stat(dest)
                if how == "hardlink":
                    os.link(src, dest)
                    return how, os.stat(dest)
                if how == "copy":
                    return how, copy_file(src, dest, mode)
            except OSError as exc:
                if how == "copy" or exc.errno not in _NO_HARDLINK:
                    raise
                last = exc
        raise StoreError(
            f"none of the link types {list(self.links)} works from {os.path.dirname(src)} "
            f"to {dest} ({last}); add 'copy' to data.link in keel.yaml"
        )

    def _reflink(self, src: StrPath, dest: Path, mode: int) -> bool:
        if self._reflink_works is False:
            return False
        cloned = False
        try:
            with open(src, "rb", buffering=0) as source:
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
                try:
                    cloned = self._clone_fd(source.fileno(), fd)
                finally:
                    os.close(fd)
        finally:
            if not cloned:
                dest.unlink(missing_ok=True)
        return cloned


def changed_while_added(src: StrPath, now: int, hashed: int) -> StoreError:
    return StoreError(
        f"{src} changed while it was being added ({now} bytes, hashed {hashed}); run "
        "`keel data add` again once it is no longer being written"
    )


def name_unnamed(fd: int, target: StrPath) -> None:
    """Give the O_TMPFILE file ``fd`` the name ``target``: linkat(AT_SYMLINK_FOLLOW) on its
    /proc/self/fd link. A dir fd argument is what makes os.link call linkat with that flag
    (plain link() would link the /proc symlink itself); the absolute source ignores it."""
    os.link(f"/proc/self/fd/{fd}", target, src_dir_fd=fd, follow_symlinks=True)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def copy_file(src: StrPath, dest: Path, mode: int) -> os.stat_result:
    """Copy src to a new file dest created with ``mode``, in the kernel where it can
    (copy_file_range, else sendfile); returns dest's stat once written."""
    with open(src, "rb", buffering=0) as source:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            remaining = os.fstat(source.fileno()).st_size
            copy_fds(source.fileno(), fd, remaining)
            return os.fstat(fd)
        finally:
            os.close(fd)


def copy_fds(src: int, dst: int, size: int) -> None:
    done = 0
    try:
        while True:
            n = os.copy_file_range(src, dst, max(size - done, 1 << 30))
            if n == 0:
                return
            done += n
    except OSError as exc:
        if done or exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, 1 << 20):  # no in-kernel copy here: plain reads and writes
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
