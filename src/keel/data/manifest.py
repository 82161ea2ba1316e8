"""Folder manifests: a versioned folder is stored as one manifest object listing its files.

The manifest is canonical JSON (sorted entries, no whitespace, UTF-8), so the same folder
content always gives the same bytes, and its sha256 is the folder's hash:

    [{"path":"a/x.png","sha256":"9f2c...","size":40960}, ...]

Each entry's bytes are a separate cache object, so two versions of a folder share the files
they have in common.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from itertools import pairwise
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from keel.errors import InvalidInputError

_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: object) -> bool:
    """Fast check for a 64-digit lowercase hex string (used on every manifest entry)."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


class Entry(NamedTuple):
    """One file of a folder: ``path`` is posix and relative to the folder."""

    path: str
    sha256: str
    size: int


def build_manifest(entries: Iterable[Entry]) -> bytes:
    """Canonical manifest bytes for ``entries`` (any order; duplicates refused). Entries come
    from a scan of the workspace; ``parse_manifest`` validates what is read back.

    >>> build_manifest([Entry("b.txt", "ab" * 32, 3)])[:20]
    b'[{"path":"b.txt","sh'
    """
    ordered = sorted(entries, key=lambda e: e.path)
    for before, after in pairwise(ordered):
        if before.path == after.path:
            raise InvalidInputError(f"manifest lists {before.path!r} twice")
    # Written by hand (3x faster than json.dumps on 10,000 entries), byte for byte what
    # json.dumps(rows, separators=(",", ":"), ensure_ascii=False) gives.
    rows = ",".join(
        f'{{"path":{encode_basestring(e.path)},"sha256":"{e.sha256}","size":{e.size:d}}}'
        for e in ordered
    )
    return ("[" + rows + "]").encode("utf-8")


def parse_manifest(data: bytes) -> list[Entry]:
    """Entries of manifest bytes, validated (sorted, unique, safe relative paths).

    >>> parse_manifest(build_manifest([Entry("b.txt", "ab" * 32, 3)]))
    [Entry(path='b.txt', sha256='abab...', size=3)]                 # doctest: +SKIP
    """
    try:
        rows: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"folder manifest is not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise InvalidInputError("folder manifest is not a JSON list of entries")
    entries: list[Entry] = []
    for row in rows:
        if not isinstance(row, dict) or set(row) != {"path", "sha256", "size"}:
            raise InvalidInputError(f"folder manifest entry {row!r} needs path, sha256 and size")
        _check_entry(row["path"], row["sha256"], row["size"])
        entries.append(Entry(row["path"], row["sha256"], row["size"]))
    for before, after in pairwise(entries):
        if before.path >= after.path:
            raise InvalidInputError(f"folder manifest is not sorted/unique at {after.path!r}")
    return entries


def _check_entry(path: Any, sha: Any, size: Any) -> None:
    # A manifest can come from a remote: never let an entry escape its folder on checkout.
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\0" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise InvalidInputError(f"folder manifest entry path {path!r} is not a safe relative path")
    if not is_sha256(sha):
        raise InvalidInputError(f"folder manifest entry {path!r} has a bad sha256 {sha!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInputError(f"folder manifest entry {path!r} has a bad size {size!r}")
