"""Content-addressed object store on fsspec.

Objects are named by the sha256 of their bytes (``objects/ab/cdef...``), written once, and
verified on every read: a tampered or truncated object raises ArtifactCorruptedError and is
never returned. Writes go to a temporary name first, so a crash never leaves a partial object
under a real name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.core.hashing import is_sha256, sha256_bytes, sha256_file
from keel.errors import ArtifactCorruptedError, InvalidInputError, NotFoundError, StoreError


@dataclass(frozen=True)
class ObjectInfo:
    sha256: str
    size: int


class ArtifactStore:
    """Objects by sha256 under ``url`` (a local folder or any fsspec URL such as s3://b/p)."""

    def __init__(
        self, url: str, *, options: dict[str, Any] | None = None, root: Path | None = None
    ) -> None:
        if "://" not in url and root is not None and not Path(url).is_absolute():
            url = str((root / url).resolve())
        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self._fs: Any = None
        self._base = ""

    @property
    def fs(self) -> Any:
        if self._fs is None:
            from fsspec.core import url_to_fs

            try:
                self._fs, self._base = url_to_fs(self.url, **self.options)
            except ImportError as exc:
                raise StoreError(
                    f"artifacts.url {self.url!r} needs an fsspec backend that is not installed "
                    f"({exc}); for s3:// install keel[s3]"
                ) from exc
            self._base = self._base.rstrip("/")
        return self._fs

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    def path_of(self, sha256: str) -> str:
        if not is_sha256(sha256):
            raise InvalidInputError(f"{sha256!r} is not a sha256 hex digest (64 hex characters)")
        fs = self.fs
        return f"{self._base}/objects/{sha256[:2]}/{sha256[2:]}" if fs else ""

    def exists(self, sha256: str) -> bool:
        return bool(self.fs.exists(self.path_of(sha256)))

    def put_bytes(self, data: bytes) -> ObjectInfo:
        info = ObjectInfo(sha256_bytes(data), len(data))
        if not self.exists(info.sha256):
            with tempfile.NamedTemporaryFile(delete=False) as tmp:
                tmp.write(data)
            try:
                self._upload(Path(tmp.name), info)
            finally:
                Path(tmp.name).unlink(missing_ok=True)
        return info

    def put_file(self, path: str | Path) -> ObjectInfo:
        digest, size = sha256_file(path)
        info = ObjectInfo(digest, size)
        if not self.exists(digest):
            self._upload(Path(path), info)
        return info

    def _upload(self, source: Path, info: ObjectInfo) -> None:
        target = self.path_of(info.sha256)
        fs = self.fs
        temp = f"{target}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            if self.is_local:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, temp)
                os.replace(temp, target)  # atomic: readers see nothing or the whole object
            else:
                # An object-store PUT is atomic on its own: the object appears whole or not at all.
                fs.put_file(str(source), target)
                if fs.info(target).get("size") != info.size:
                    fs.rm_file(target)
                    raise StoreError(f"upload of object {info.sha256} to {self.url} was truncated")
        except OSError as exc:
            Path(temp).unlink(missing_ok=True)
            raise StoreError(f"cannot write object {info.sha256} to {self.url}: {exc}") from exc

    def get_bytes(self, sha256: str) -> bytes:
        path = self.path_of(sha256)
        try:
            with self.fs.open(path, "rb") as f:
                data: bytes = f.read()
        except FileNotFoundError:
            raise NotFoundError(
                f"object {sha256} is not in the artifact store {self.url}"
            ) from None
        if sha256_bytes(data) != sha256:
            raise ArtifactCorruptedError(
                f"object {sha256} at {path} is corrupted (its content hashes differently; "
                "tampered or truncated) — it was refused; restore it from a backup or re-log it"
            )
        return data

    def get_file(self, sha256: str, dest: str | Path) -> Path:
        """Copy an object to ``dest`` after verifying it; dest never holds unverified bytes."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        temp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        path = self.path_of(sha256)
        try:
            self.fs.get_file(path, str(temp))
        except FileNotFoundError:
            raise NotFoundError(
                f"object {sha256} is not in the artifact store {self.url}"
            ) from None
        digest, _ = sha256_file(temp)
        if digest != sha256:
            temp.unlink(missing_ok=True)
            raise ArtifactCorruptedError(
                f"object {sha256} at {path} is corrupted (its content hashes differently; "
                "tampered or truncated) — it was refused; restore it from a backup or re-log it"
            )
        os.replace(temp, dest)
        return dest


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
