"""Helpers shared by the remote tests: caches filled with random objects, and remotes of each
kind (a local folder, S3 through the lean signed client, S3 through botocore only)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from keel.data.cache import DataCache
from keel.data.remote import Backend, Remote

# "fsspec": the generic backend (gs://, az://, ... take that path) on fsspec's in-memory
# filesystem, so it runs for real here too.
REMOTE_KINDS = ["local", "s3", "s3-botocore", "fsspec"]


def new_cache(root: Path) -> DataCache:
    return DataCache(root, ["copy"])


def fill(cache: DataCache, sizes: Iterable[int]) -> dict[str, bytes]:
    """Add one random object per size; returns sha256 -> bytes."""
    made: dict[str, bytes] = {}
    for size in sizes:
        data = os.urandom(size)
        made[cache.add_bytes(data)] = data
    return made


def s3_remote(server: Any, bucket: str, prefix: str = "team/keel data", **extra: Any) -> Remote:
    return Remote("s3", f"s3://{bucket}/{prefix}", {**server.fsspec_options, **extra}, jobs=16)


def botocore_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send S3 object bodies through botocore too (the path AWS endpoints take)."""
    import keel.data.remote as remote_module
    from keel.data.s3 import S3Backend

    original = remote_module.open_backend

    def open_backend(remote: Remote) -> Backend:
        if remote.protocol == "s3":
            return S3Backend(remote, fast=False)
        return original(remote)

    monkeypatch.setattr(remote_module, "open_backend", open_backend)


def make_remote(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    if kind == "local":
        return Remote("shared", str(tmp_path / "remote"), {}, jobs=8)
    if kind == "fsspec":
        import uuid

        return Remote("memory", f"memory://keel-{uuid.uuid4().hex}/data", {}, jobs=8)
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    if kind == "s3-botocore":
        botocore_only(request.getfixturevalue("monkeypatch"))
        # botocore retries a refused body 4 times (S3 may have garbled it in transit).
        return s3_remote(server, bucket, config_kwargs={"retries": {"max_attempts": 1}})
    return s3_remote(server, bucket)


class Recorder:
    """A TransferProgress that remembers what it was told."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.nbytes = 0
        self.objects = 0

    def start(self, objects: int, nbytes: int) -> None:
        self.started.append((objects, nbytes))

    def advance(self, nbytes: int, objects: int = 0) -> None:
        self.nbytes += nbytes
        self.objects += objects


def remote_bytes(remote: Remote, sha: str) -> bytes:
    """The raw bytes stored on the remote for ``sha`` (no verification)."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(remote.object_url(sha), **dict(remote.options))
    data: bytes = fs.cat_file(path)
    return data


def overwrite_on_remote(remote: Remote, sha: str, data: bytes) -> None:
    """Replace an object's bytes on the remote behind Keel's back (to simulate damage)."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(remote.object_url(sha), **dict(remote.options))
    if remote.protocol == "file":
        Path(path).chmod(0o644)
    fs.pipe_file(path, data)
