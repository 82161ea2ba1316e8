"""sha256 over bytes, files and streams, read in chunks so memory stays flat."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    """Hash a binary stream to its end; returns (hex digest, bytes read)."""
    digest = hashlib.sha256()
    size = 0
    view = bytearray(CHUNK)
    while True:
        n = stream.readinto(view)  # type: ignore[attr-defined]
        if not n:
            break
        digest.update(view[:n])
        size += n
    return digest.hexdigest(), size


def sha256_file(path: str | Path) -> tuple[str, int]:
    """Hash a local file; returns (hex digest, size in bytes)."""
    with open(path, "rb", buffering=0) as f:
        return sha256_stream(f)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: str) -> bool:
    return _SHA256.fullmatch(value) is not None
