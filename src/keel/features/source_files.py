"""The files behind a feature view's source, in a fixed order, with what changes when a file
is rewritten or appended — so incremental materialization reads only what is new."""

from __future__ import annotations

import os
from typing import Any

from keel.errors import InvalidInputError
from keel.features.sources import is_url

Inventory = dict[str, list[Any]]  # file -> [size, modification stamp]


def list_files(source: str, view: str) -> list[str]:
    """The Parquet files of a resolved source (a file, glob or URL), in ingestion order."""
    if is_url(source):
        import fsspec

        fs, root = fsspec.core.url_to_fs(source)
        protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        found = [root] if fs.isfile(root) else fs.glob(root)
        files = sorted(f"{protocol}://{path}" for path in found)
    elif os.path.isfile(source):
        files = [source]
    else:
        files = duckdb_glob(source)
    if not files:
        raise InvalidInputError(
            f"the source of feature view {view!r} ({source!r}) matches no Parquet file; "
            "fix the source path or write the data first"
        )
    return files


def duckdb_glob(pattern: str) -> list[str]:
    """The files of a local glob in the order DuckDB reads them — sorted within a folder, a
    folder's own files before its subfolders' — which is the ingestion order of the
    point-in-time join, so materialization breaks exact ties the same way."""
    import duckdb

    with duckdb.connect(":memory:") as con:
        rows = con.sql("SELECT file FROM glob($pattern)", params={"pattern": pattern}).fetchall()
    return [str(row[0]) for row in rows]


def inventory(files: list[str]) -> Inventory:
    """``{file: [size, stamp]}``: a rewritten file gets a new stamp (mtime, or the ETag)."""
    out: Inventory = {}
    local = [f for f in files if not is_url(f)]
    for path in local:
        stat = os.stat(path)
        out[path] = [stat.st_size, stat.st_mtime_ns]
    remote = [f for f in files if is_url(f)]
    if remote:
        import fsspec

        for url in remote:
            fs, path = fsspec.core.url_to_fs(url)
            info = fs.info(path)
            stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified")
            out[url] = [int(info.get("size") or 0), str(stamp)]
    return out


def changes(before: Inventory, now: Inventory) -> tuple[list[str], list[str]]:
    """Files that are new since ``before``, and files that existed then but differ now."""
    new = [f for f in now if f not in before]
    changed = [f for f in now if f in before and list(before[f]) != list(now[f])]
    return new, changed
