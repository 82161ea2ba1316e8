"""Remote backends other than S3: a local (or mounted) folder, and any other fsspec URL.

Both run blocking filesystem calls on a thread pool sized to the number of parallel jobs, so
the transfer loop in keel.data.transfer drives them like the asynchronous S3 backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from keel.core.hashing import CHUNK, is_sha256, sha256_file
from keel.errors import ArtifactCorruptedError, NotFoundError, StoreError

if TYPE_CHECKING:
    from keel.data.arrival import Arrival
    from keel.data.remote import Remote

T = TypeVar("T")
# Object stores whose uploads are atomic on their own (no temporary name needed).
ATOMIC_PUT = frozenset({"gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"})
INSTALL_HINT = {"gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


def corrupted_source(sha256: str, src: str | Path) -> ArtifactCorruptedError:
    """The error for a cache object whose bytes no longer match its name (found on upload)."""
    return ArtifactCorruptedError(
        f"data cache object {sha256} ({src}) is corrupted (its bytes hash differently), so it "
        "was not pushed; delete it and `keel data add` the original data again"
    )


class _Threaded:
    """Runs blocking calls on a private pool sized to the jobs of the remote."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self._pool: ThreadPoolExecutor | None = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(4, self.remote.jobs))
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _modified(entry: dict[str, Any]) -> float | None:
    """An fsspec listing entry's modification time, under the names backends use."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value: Any = entry.get(name)
        if isinstance(value, int | float):
            return float(value)
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
    return None


class LocalBackend(_Threaded):
    """A folder remote (a local disk, NFS or SMB mount): ``<url>/objects/ab/cdef...``."""

    def __init__(self, remote: Remote) -> None:
        super().__init__(remote)
        self.root = Path(remote.url)

    def path_of(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256[2:]

    async def open(self) -> None:
        pass

    async def list_small(self) -> dict[str, int] | None:
        return None  # listing a folder's prefixes is cheap: no need for a shortcut

    async def list_prefix(self, prefix: str) -> dict[str, int]:
        return await self._call(self._list, prefix)

    def _list(self, prefix: str) -> dict[str, int]:
        found: dict[str, int] = {}
        try:
            entries = list(os.scandir(self.root / "objects" / prefix))
        except FileNotFoundError:
            return found
        for entry in entries:
            # Temporary files start with '.', so never look like objects.
            if is_sha256(prefix + entry.name) and entry.is_file():
                found[prefix + entry.name] = entry.stat().st_size
        return found

    async def stat(self, sha256: str) -> int | None:
        return await self._call(self._stat, sha256)

    def _stat(self, sha256: str) -> int | None:
        try:
            return self.path_of(sha256).stat().st_size
        except FileNotFoundError:
            return None

    async def upload(
        self, sha256: str, src: Path, size: int, advance: Callable[[int], None]
    ) -> None:
        loop = asyncio.get_running_loop()

        def report(n: int) -> None:  # called on a pool thread: hand over to the loop
            loop.call_soon_threadsafe(advance, n)

        await self._call(self._upload, sha256, src, size, report if size > CHUNK else None)
        if size <= CHUNK:
            advance(size)

    def _upload(
        self, sha256: str, src: Path, size: int, report: Callable[[int], None] | None
    ) -> None:
        target = self.path_of(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            digest = hashlib.sha256()
            with open(src, "rb") as source, open(temp, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    if report is not None:
                        report(len(chunk))
                written = out.tell()
            if digest.hexdigest() != sha256:
                raise corrupted_source(sha256, src)
            if written != size:
                raise StoreError(f"{src} changed size while it was pushed; push again")
            os.replace(temp, target)  # atomic: the object appears whole or not at all
        finally:
            temp.unlink(missing_ok=True)

    async def download(self, sha256: str, dest: Path, advance: Callable[[int], None]) -> str | None:
        size, digest = await self._call(self._download, sha256, dest)
        advance(size)
        return digest

    def receives_into(self) -> bool:
        return True

    async def download_into(
        self, sha256: str, arrival: Arrival, advance: Callable[[int], None]
    ) -> None:
        advance(await self._call(self._download_into, sha256, arrival))

    def _download_into(self, sha256: str, arrival: Arrival) -> int:
        try:
            with open(self.path_of(sha256), "rb", buffering=0) as source:
                while n := source.readinto(view := arrival.buffer()):
                    arrival.take(view[:n])
        except FileNotFoundError:
            raise self._not_found(sha256) from None
        return arrival.size

    def _download(self, sha256: str, dest: Path) -> tuple[int, str]:
        digest = hashlib.sha256()
        try:
            with open(self.path_of(sha256), "rb") as source, open(dest, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                return out.tell(), digest.hexdigest()
        except FileNotFoundError:
            raise self._not_found(sha256) from None

    def _not_found(self, sha256: str) -> NotFoundError:
        return NotFoundError(
            f"object {sha256} is not on remote '{self.remote.name}' ({self.remote.url}); "
            "push it from a machine whose cache has it"
        )

    async def delete(self, hashes: list[str]) -> None:
        await self._call(self._delete, [self.path_of(sha) for sha in hashes])

    def _delete(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    async def put_blob(self, name: str, data: bytes | memoryview, sha256: str) -> None:
        await self._call(self._put_blob, self.root / name, data)

    def _put_blob(self, target: Path, data: bytes | memoryview) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            temp.write_bytes(data)
            os.replace(temp, target)  # atomic: the blob appears whole or not at all
        finally:
            temp.unlink(missing_ok=True)

    async def get_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        return await self._call(self._get_blob, self.root / name, start, length)

    def _get_blob(self, path: Path, start: int, length: int | None) -> bytes:
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            raise NotFoundError(f"{path} is not on {self.remote.describe()}") from None

    async def get_blob_into(self, name: str, start: int, buffer: memoryview) -> None:
        await self._call(self._get_blob_into, self.root / name, start, buffer)

    def _get_blob_into(self, path: Path, start: int, buffer: memoryview) -> None:
        try:
            with open(path, "rb", buffering=0) as f:
                f.seek(start)
                filled = 0
                while filled < len(buffer) and (n := f.readinto(buffer[filled:])):
                    filled += n
        except FileNotFoundError:
            raise NotFoundError(f"{path} is not on {self.remote.describe()}") from None
        if filled < len(buffer):
            raise StoreError(
                f"{path} on {self.remote.describe()} ended {len(buffer) - filled} bytes short "
                "of a read; it is damaged or truncated — push again"
            )

    async def list_blobs(self, folder: str) -> dict[str, tuple[int, float | None]]:
        return await self._call(self._list_blobs, folder)

    def _list_blobs(self, folder: str) -> dict[str, tuple[int, float | None]]:
        try:
            entries = list(os.scandir(self.root / folder))
        except FileNotFoundError:
            return {}
        found: dict[str, tuple[int, float | None]] = {}
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_file():  # '.': temporary files
                st = entry.stat()
                found[f"{folder}/{entry.name}"] = (st.st_size, st.st_mtime)
        return found

    async def delete_blobs(self, names: list[str]) -> None:
        await self._call(self._delete, [self.root / name for name in names])


class FsspecBackend(_Threaded):
    """Any other fsspec URL (gs://, az://, ...; the tests run it on fsspec's in-memory
    filesystem). Uploads to the object stores in ATOMIC_PUT go straight to their name,
    others through a temporary name."""

    def __init__(self, remote: Remote) -> None:
        super().__init__(remote)
        self._fs: Any = None
        self._base = ""

    async def open(self) -> None:
        from fsspec.core import url_to_fs

        try:
            self._fs, base = url_to_fs(self.remote.url, **dict(self.remote.options))
        except ImportError as exc:
            package = INSTALL_HINT.get(self.remote.protocol, "the fsspec backend for it")
            raise StoreError(
                f"{self.remote.describe()} needs {package}, which is not installed "
                f"(pip install {package})"
            ) from exc
        self._base = str(base).rstrip("/")

    def _path(self, sha256: str) -> str:
        return f"{self._base}/objects/{sha256[:2]}/{sha256[2:]}"

    async def list_small(self) -> dict[str, int] | None:
        return None

    async def list_prefix(self, prefix: str) -> dict[str, int]:
        return await self._call(self._list, prefix)

    def _list(self, prefix: str) -> dict[str, int]:
        try:
            entries = self._fs.ls(f"{self._base}/objects/{prefix}", detail=True)
        except FileNotFoundError:
            return {}
        found: dict[str, int] = {}
        for entry in entries:
            sha = prefix + str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if is_sha256(sha) and entry.get("type") != "directory":
                found[sha] = int(entry.get("size") or 0)
        return found

    async def stat(self, sha256: str) -> int | None:
        return await self._call(self._stat, sha256)

    def _stat(self, sha256: str) -> int | None:
        try:
            return int(self._fs.info(self._path(sha256))["size"])
        except FileNotFoundError:
            return None

    async def upload(
        self, sha256: str, src: Path, size: int, advance: Callable[[int], None]
    ) -> None:
        await self._call(self._upload, sha256, src, size)
        advance(size)

    def _upload(self, sha256: str, src: Path, size: int) -> None:
        if sha256_file(src)[0] != sha256:
            raise corrupted_source(sha256, src)
        target = self._path(sha256)
        if self.remote.protocol in ATOMIC_PUT:
            self._fs.put_file(str(src), target)
        else:
            temp = f"{target}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
            self._fs.put_file(str(src), temp)
            self._fs.mv(temp, target)
        stored = self._stat(sha256)
        if stored != size:
            self._fs.rm_file(target)
            raise StoreError(
                f"object {sha256} arrived on {self.remote.describe()} with {stored} bytes "
                f"instead of {size}; it was removed — push again"
            )

    async def download(self, sha256: str, dest: Path, advance: Callable[[int], None]) -> str | None:
        size = await self._call(self._download, sha256, dest)
        advance(size)
        return None

    def receives_into(self) -> bool:
        return False  # fsspec writes whole files itself: `download`

    async def download_into(
        self, sha256: str, arrival: Arrival, advance: Callable[[int], None]
    ) -> None:
        raise RuntimeError("an fsspec remote downloads whole files: use download")

    def _download(self, sha256: str, dest: Path) -> int:
        try:
            self._fs.get_file(self._path(sha256), str(dest))
        except FileNotFoundError:
            raise NotFoundError(
                f"object {sha256} is not on {self.remote.describe()}; "
                "push it from a machine whose cache has it"
            ) from None
        return dest.stat().st_size

    async def delete(self, hashes: list[str]) -> None:
        await self._call(self._remove, [self._path(sha) for sha in hashes])

    async def put_blob(self, name: str, data: bytes | memoryview, sha256: str) -> None:
        # bytes: a filesystem may keep what it was given past the call, and the caller
        # reuses the buffer behind a memoryview
        await self._call(self._put_blob, f"{self._base}/{name}", bytes(data))

    def _put_blob(self, target: str, data: bytes) -> None:
        if self.remote.protocol in ATOMIC_PUT:
            self._fs.pipe_file(target, data)
        else:
            temp = f"{target}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
            self._fs.pipe_file(temp, data)
            self._fs.mv(temp, target)
        stored = int(self._fs.info(target)["size"])
        if stored != len(data):
            self._fs.rm_file(target)
            raise StoreError(
                f"{target} arrived on {self.remote.describe()} with {stored} bytes instead "
                f"of {len(data)}; it was removed — push again"
            )

    async def get_blob(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        end = None if length is None else start + length
        try:
            data = await self._call(self._fs.cat_file, f"{self._base}/{name}", start, end)
        except FileNotFoundError:
            raise NotFoundError(f"{name} is not on {self.remote.describe()}") from None
        return bytes(data)

    async def get_blob_into(self, name: str, start: int, buffer: memoryview) -> None:
        raise RuntimeError("an fsspec remote reads whole ranges: use get_blob")

    async def list_blobs(self, folder: str) -> dict[str, tuple[int, float | None]]:
        return await self._call(self._list_blobs, folder)

    def _list_blobs(self, folder: str) -> dict[str, tuple[int, float | None]]:
        try:
            entries = self._fs.ls(f"{self._base}/{folder}", detail=True)
        except FileNotFoundError:
            return {}
        found: dict[str, tuple[int, float | None]] = {}
        for entry in entries:
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") != "directory" and ".tmp-" not in name:
                found[f"{folder}/{name}"] = (int(entry.get("size") or 0), _modified(entry))
        return found

    async def delete_blobs(self, names: list[str]) -> None:
        await self._call(self._remove, [f"{self._base}/{name}" for name in names])

    def _remove(self, paths: list[str]) -> None:
        """Delete ``paths`` (in one bulk call where the store has one), absent ones ignored:
        some filesystems' rm raises for them, then each is deleted on its own."""
        if not paths:
            return
        try:
            self._fs.rm(paths)
        except FileNotFoundError:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    self._fs.rm_file(path)
