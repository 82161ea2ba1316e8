"""Shared helpers of the data tests: data files with settled modification times."""

from __future__ import annotations

import os
import time
from pathlib import Path

from keel.data import tree


def write(path: Path, data: bytes, *, age: float = 10.0) -> Path:
    """Write ``data`` and date the file ``age`` seconds back, out of the stat cache's racy
    window (a file modified in the last 100 ms is always hashed again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    settle(path, age)
    return path


def settle(path: Path, age: float = 10.0) -> None:
    when = time.time_ns() - int(age * 1e9)
    os.utime(path, ns=(when, when))


def settle_tree(folder: Path, age: float = 10.0) -> None:
    for here, _, files in os.walk(folder):
        for name in files:
            settle(Path(here, name), age)


class HashCounter:
    """Counts the files keel.data hashes (patched over tree.hash_files)."""

    def __init__(self) -> None:
        self.files = 0
        self.real = tree.hash_files

    def __call__(self, paths, sizes=None, **kwargs):  # type: ignore[no-untyped-def]
        self.files += len(paths)
        return self.real(paths, sizes, **kwargs)
