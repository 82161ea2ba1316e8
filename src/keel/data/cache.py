"""The local content-addressed cache of versioned data (``.keel/cache`` by default).

Objects live at ``<cache>/objects/ab/cdef...`` named by their sha256 — the same layout as the
remotes, so push and pull move files without renaming. Rules that keep the cache trustworthy:

- An object appears under its real name whole or not at all: bytes go into an unnamed file
  named only when complete (keel.data.links; large files added are written so with direct
  I/O as they are hashed, keel.data.direct_io), or where that is not possible to
  ``<cache>/tmp/`` first, moved into place with ``os.replace`` (atomic on one filesystem).
- Objects are made read-only (mode 0444) once stored.
- Workspace files are made from objects by the first link type in ``links`` that works
  (keel.data.links).
  ``reflink`` (copy-on-write clone) and ``copy`` give the workspace its own bytes, so editing a
  workspace file can never change an object. ``hardlink`` shares the object's inode (no extra
  space): it is opt-in, and ``keel.data.workspace`` guards it (see that module's docstring).
- Reads (``read_bytes``, ``verify``, ``put_verified``) check the sha256, so a corrupted object
  is refused, never served.

Objects are not fsync'ed (like git and DVC): after a power loss an object may be truncated;
verification finds it and it is re-fetched or re-added.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from keel.core.hashing import sha256_bytes, sha256_file
from keel.data.direct_io import DirectWriter
from keel.data.links import Linker, StrPath, changed_while_added, write_all
from keel.data.manifest import is_sha256
from keel.errors import ArtifactCorruptedError, InvalidInputError, NotFoundError, StoreError

if TYPE_CHECKING:
    from keel.project import Project

RACY_NS = 100_000_000  # a folder changed this recently may change again within its mtime tick
LIST_THRESHOLD = 512  # from this many hashes, `present` lists folders instead of stat'ing
DIRECT_BYTES = 16 << 20  # files this large are written into the cache with direct I/O


class DataCache:
    """Objects by sha256 under ``root``; ``links`` orders how workspace files are made.

    >>> cache = DataCache(Path(".keel/cache"), ["reflink", "copy"])
    >>> cache.add_file(Path("train.csv"), sha, size)            # doctest: +SKIP
    >>> cache.link_to(sha, Path("train.csv"))                    # doctest: +SKIP
    'copy'
    """

    def __init__(self, root: Path, links: Sequence[str] = ("reflink", "copy")) -> None:
        self.root = Path(root)
        # Plain strings where each of ten thousand objects costs path work (file_of): building
        # and testing a Path per object took 13 µs, the same with strings 3 µs.
        self._objects = os.path.join(self.root, "objects")
        self.linker = Linker(links)
        self.links = self.linker.links
        self._dirs: set[str] = set()

    # -- names ---------------------------------------------------------------------------
    def path_of(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise InvalidInputError(f"{sha256!r} is not a sha256 hex digest (64 hex characters)")
        return self.root / "objects" / sha256[:2] / sha256[2:]

    def file_of(self, sha256: str) -> str:
        """The object's path as a plain string, for loops over thousands of objects (a push
        packing them, a checkout verifying them): building a Path each costs several times
        the string."""
        if not is_sha256(sha256):
            self.path_of(sha256)  # raises the error for a malformed hash
        return f"{self._objects}/{sha256[:2]}/{sha256[2:]}"

    @property
    def pack_indexes(self) -> Path:
        """Where the indexes of remote packs are kept once read (keel.data.packs)."""
        return self.root / "packs"

    def has(self, sha256: str) -> bool:
        return os.path.isfile(self.file_of(sha256))

    def present(self, hashes: Iterable[str]) -> set[str]:
        """The subset of ``hashes`` held in the cache. Many hashes are answered by listing
        the 256 prefix folders once instead of one stat per object."""
        wanted = set(hashes)
        if len(wanted) < LIST_THRESHOLD:
            return {sha for sha in wanted if self.has(sha)}
        found: set[str] = set()
        for prefix in {sha[:2] for sha in wanted}:
            try:
                names = os.listdir(os.path.join(self._objects, prefix))
            except FileNotFoundError:
                continue
            found.update(prefix + name for name in names)
        return wanted & found

    def sizes(self, hashes: Iterable[str]) -> dict[str, int]:
        """sha256 -> size of each of ``hashes`` the cache holds (the others are left out).
        One stat per object on a plain string path: a push asks this of every object, and
        building ten thousand Path objects took four times as long as the stats."""
        found: dict[str, int] = {}
        for sha in hashes:
            try:
                found[sha] = os.stat(self.file_of(sha)).st_size
            except FileNotFoundError:
                continue
        return found

    def fingerprint(self) -> str | None:
        """A digest that changes whenever an object is removed from (or added to) the cache:
        the prefix folders' inodes and modification times (a folder's mtime changes with its
        entries). None while a folder changed too recently to trust its mtime (same clock
        tick). Costs one stat per prefix folder."""
        base = self._objects
        try:
            prefixes = sorted(os.listdir(base))
        except FileNotFoundError:
            return None
        parts = []
        newest = 0
        for prefix in prefixes:
            try:
                st = os.stat(os.path.join(base, prefix))
            except FileNotFoundError:
                continue
            newest = max(newest, st.st_mtime_ns)
            parts.append(f"{prefix}:{st.st_ino}:{st.st_mtime_ns}")
        if time.time_ns() - newest < RACY_NS:
            return None
        return sha256_bytes("\n".join(parts).encode())

    def objects(self) -> Iterator[str]:
        """Every object's sha256 (temporary files are never listed)."""
        base = self.root / "objects"
        if not base.is_dir():
            return
        for prefix in sorted(os.listdir(base)):
            if len(prefix) != 2:
                continue
            for name in sorted(os.listdir(base / prefix)):
                if is_sha256(prefix + name):
                    yield prefix + name

    def new_temp(self, hint: str = "obj") -> Path:
        """A fresh path inside the cache (same filesystem as the objects, so a finished temp
        file can be moved into place atomically)."""
        temp = self.root / "tmp"
        self._ensure_dir(temp)
        return temp / f"{hint[:16]}.{os.getpid()}.{os.urandom(6).hex()}"

    def _ensure_dir(self, folder: StrPath) -> None:
        # Ten thousand objects share 256 folders: create each once per process, not per object.
        key = os.fspath(folder)
        if key not in self._dirs:
            os.makedirs(key, exist_ok=True)
            self._dirs.add(key)

    # -- writing -------------------------------------------------------------------------
    def add_file(
        self, src: StrPath, sha256: str, size: int, data: bytes | None = None
    ) -> os.stat_result | None:
        """Store the file ``src`` (already hashed to ``sha256``/``size``) as an object and
        return the object's stat; None when the object was already there. Never leaves a
        partial object under the real name.

        With ``hardlink`` configured the object is hard-linked to ``src`` (no copy);
        otherwise it is cloned (reflink) or copied — from ``data``, the bytes just hashed,
        when the caller has them and a copy is what would be made.
        """
        target = self.file_of(sha256)
        if os.path.isfile(target):
            return None
        # An unnamed file in the object's own folder: threads storing many files at once do
        # not all wait on one temporary folder's lock.
        self._ensure_dir(os.path.dirname(target))
        try:
            stored = self.linker.store_unnamed(src, target, size, data)
        except FileExistsError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot store {src} in the data cache {self.root}: {exc}") from exc
        if stored is not None:
            return stored
        temp = self.new_temp(sha256)
        try:
            how, st = self.linker.materialize(
                src, temp, 0o444, prefer_link="hardlink" in self.links
            )
            if st.st_size != size:
                raise changed_while_added(src, st.st_size, size)
            os.replace(temp, target)
        except BaseException as exc:
            temp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StoreError(
                    f"cannot store {src} in the data cache {self.root}: {exc}"
                ) from exc
            raise
        if how == "hardlink":
            os.chmod(target, 0o444)  # the shared inode: also makes the workspace file read-only
            st = os.stat(target)
        return st

    def direct_writer(self, src: StrPath, size: int) -> DirectWriter | None:
        """Somewhere to write a large file's bytes as they are hashed (keel.data.direct_io),
        then `publish`; None where the file is small, or the cache would not copy it (a hard
        link or a reflink configured and working), or direct I/O is unavailable."""
        if size < DIRECT_BYTES or "hardlink" in self.links:
            return None
        folder = self.root / "tmp"
        self._ensure_dir(folder)
        if not self.linker.copies(src, folder):
            return None
        return DirectWriter.open(folder)

    def download_writer(self, size: int) -> DirectWriter | None:
        """Somewhere to write a downloaded object of ``size`` bytes with direct I/O as it
        arrives (then `publish`); None where it is small or direct I/O is unavailable."""
        if size < DIRECT_BYTES:
            return None
        folder = self.root / "tmp"
        self._ensure_dir(folder)
        return DirectWriter.open(folder)

    def copies_to_workspace(self) -> bool:
        """Whether workspace files are made from objects by copying their bytes (no hard
        link, no working reflink configured before ``copy``)."""
        folder = self.root / "tmp"
        self._ensure_dir(folder)
        return self.linker.copies(None, folder)

    def publish(self, writer: DirectWriter, sha256: str) -> os.stat_result | None:
        """Name what ``writer`` holds (bytes that hashed to ``sha256``) as that object; its
        stat, or None when the object was already there."""
        target = self.path_of(sha256)
        self._ensure_dir(target.parent)
        try:
            return writer.publish(target)  # drops the file when the object exists already
        except OSError as exc:
            raise StoreError(f"cannot store {sha256} in the data cache {self.root}: {exc}") from exc

    def add_bytes(self, data: bytes) -> str:
        """Store ``data`` (e.g. a manifest) as an object; returns its sha256."""
        sha = sha256_bytes(data)
        target = self.path_of(sha)
        if not target.is_file():
            temp = self.new_temp(sha)
            try:
                temp.write_bytes(data)
                os.chmod(temp, 0o444)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temp, target)
            finally:
                temp.unlink(missing_ok=True)
        return sha

    def put_bytes_verified(self, data: bytes | memoryview, sha256: str) -> None:
        """Store downloaded ``data`` as object ``sha256`` after checking its hash; on a
        mismatch nothing is written and ArtifactCorruptedError raised."""
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ArtifactCorruptedError(
                f"object {sha256} as downloaded hashes to {digest} (tampered or truncated); "
                "it was refused — check the remote's copy, or push it again from a good cache"
            )
        target = self.path_of(sha256)
        self._ensure_dir(target.parent)
        if self.linker.publish_unnamed(target, data):
            return
        temp = self.new_temp(sha256)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def put_verified(self, src: Path, sha256: str, digest: str | None = None) -> None:
        """Move the downloaded file ``src`` into place as object ``sha256`` after checking its
        hash (``digest``, when it was hashed as it was written); on a mismatch ``src`` is
        deleted and ArtifactCorruptedError raised."""
        target = self.path_of(sha256)
        if digest is None:
            digest, _ = sha256_file(src)
        if digest != sha256:
            Path(src).unlink(missing_ok=True)
            raise refused_download(sha256, digest)
        os.chmod(src, 0o444)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, target)

    def remove(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------
    def verify(self, sha256: str) -> bool:
        """True when the object exists and its bytes hash to its name."""
        try:
            return sha256_file(self.path_of(sha256))[0] == sha256
        except FileNotFoundError:
            return False

    def read_bytes(self, sha256: str) -> bytes:
        """The object's bytes, verified; a corrupt object raises ArtifactCorruptedError."""
        path = self.path_of(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"object {sha256} is not in the data cache {self.root}; "
                "`keel data pull` fetches it from the remote"
            ) from None
        if sha256_bytes(data) != sha256:
            raise self.corrupted(sha256)
        return data

    def corrupted(self, sha256: str) -> ArtifactCorruptedError:
        return ArtifactCorruptedError(
            f"data cache object {sha256} ({self.path_of(sha256)}) is corrupted (its bytes hash "
            "differently); it was refused — delete it and run `keel data pull`, or "
            "`keel data add` the original data again"
        )

    # -- materializing -------------------------------------------------------------------
    def link_to(self, sha256: str, dest: Path) -> str:
        """Make ``dest`` hold object ``sha256`` by the first configured link type that works;
        returns the one used. ``dest`` is replaced atomically (never half-written)."""
        source = self.path_of(sha256)
        if not source.is_file():
            raise NotFoundError(
                f"object {sha256} is not in the data cache {self.root}; "
                "`keel data pull` fetches it from the remote"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(dest):
            made = self.linker.copy_unnamed(source, dest)
            if made is not None:
                return made
        temp = dest.with_name(f".{dest.name}.keel-tmp-{os.getpid()}")
        try:
            how, _ = self.linker.materialize(source, temp, 0o666, prefer_link=False)
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)
        return how


def refused_download(sha256: str, digest: str) -> ArtifactCorruptedError:
    return ArtifactCorruptedError(
        f"object {sha256} as downloaded hashes to {digest} (tampered or truncated); "
        "it was refused — check the remote's copy, or push it again from a good cache"
    )


def cache_for(project: Project) -> DataCache:
    """The project's data cache, from ``data.cache`` and ``data.link`` in keel.yaml."""
    root = Path(project.data_settings.cache)
    if not root.is_absolute():
        root = project.root / root
    return DataCache(root, list(project.data_settings.link))
