"""The stat cache: (path, inode, size, mtime) -> sha256, so unchanged data is never rehashed.

A small SQLite database at ``.keel/data-state.db``. A workspace file whose inode, size and
modification time (in nanoseconds) match its row has the recorded hash; anything else is hashed
again. Like git's index it guards the "racy" case: a file modified within the same clock tick
as it was hashed would keep its mtime, so rows for files modified less than RACY_NS before
they were examined are not stored (they are simply hashed again next time).

Rows are kept per tracked path — one row holding the whole folder's files (marshal-encoded)
and the folder hash computed from exactly those files — because a 10,000-file folder is then
one read, and an unchanged folder needs no manifest rebuilt to know its hash.

Two more tables: ``complete`` remembers, per pointer hash, that the cache held every object
it needs while the cache's folders had a given fingerprint (DataCache.fingerprint), so an
unchanged folder is not checked object by object on every status; ``objects`` remembers which
cache objects were verified (their inode, size and mtime then), so large objects are hashed
once, not on every checkout or open.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

RACY_NS = 100_000_000  # 100 ms: above any file-system timestamp granularity Linux/macOS use

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tracked (
    path TEXT PRIMARY KEY, sha256 TEXT, rows BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS complete (
    sha256 TEXT PRIMARY KEY, fingerprint TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    sha256 TEXT PRIMARY KEY, inode INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""

Row = tuple[int, int, int, str]  # inode, size, mtime_ns, sha256


def stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class Tracked:
    """What the stat cache knows of one tracked path: ``rows`` by file name (relative to the
    folder; the file's own name for a single file) and ``sha256``, the hash of the path when
    its files were exactly ``rows`` (None when unknown)."""

    rows: dict[str, Row] = field(default_factory=dict)
    sha256: str | None = None


class StatCache:
    """Open with ``with StatCache(project.keel_dir / "data-state.db") as stats:``.

    >>> with StatCache(Path(".keel/data-state.db")) as stats:   # doctest: +SKIP
    ...     stats.load("data/images").rows["a/x.png"]
    (1234, 40960, 1718000000000000000, '9f2c...')
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves, one per batch of writes.
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a lost row only costs a rehash
        self._db.executescript(_SCHEMA)

    def __enter__(self) -> StatCache:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- workspace files -------------------------------------------------------------------
    def load(self, path: str) -> Tracked:
        """The rows of tracked ``path`` (empty when never seen or unreadable)."""
        found = self._db.execute(
            "SELECT sha256, rows FROM tracked WHERE path = ?", (path,)
        ).fetchone()
        if found is None:
            return Tracked()
        try:
            rows = marshal.loads(found[1])
        except (EOFError, ValueError, TypeError):
            return Tracked()  # damaged: a cache, so start over
        return Tracked(rows if isinstance(rows, dict) else {}, found[0])

    def save(self, path: str, tracked: Tracked) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO tracked VALUES (?, ?, ?)",
                (path, tracked.sha256, marshal.dumps(tracked.rows)),
            )

    # -- cache objects ---------------------------------------------------------------------
    def object_verified(self, sha256: str, st: os.stat_result) -> bool:
        found = self._db.execute(
            "SELECT inode, size, mtime_ns FROM objects WHERE sha256 = ?", (sha256,)
        ).fetchone()
        return found is not None and tuple(found) == stat_key(st)

    def record_objects(
        self, items: Iterable[tuple[str, os.stat_result]], *, trusted: bool = False
    ) -> None:
        """Remember objects as verified at their stat. Objects modified within the racy
        window are skipped unless ``trusted`` (Keel wrote them this instant from bytes it
        had just hashed)."""
        seen_ns = time.time_ns()
        rows = [
            (sha, *stat_key(st))
            for sha, st in items
            if trusted or seen_ns - st.st_mtime_ns > RACY_NS
        ]
        if rows:
            with self._transaction():
                self._db.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)", rows)

    def forget_objects(self, hashes: Iterable[str]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM objects WHERE sha256 = ?", [(h,) for h in hashes])

    # -- complete pointers -----------------------------------------------------------------
    def complete(self, sha256: str) -> str | None:
        """The cache fingerprint at which every object of pointer ``sha256`` was present."""
        found = self._db.execute(
            "SELECT fingerprint FROM complete WHERE sha256 = ?", (sha256,)
        ).fetchone()
        return None if found is None else str(found[0])

    def record_complete(self, sha256: str, fingerprint: str) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO complete VALUES (?, ?)", (sha256, fingerprint))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def stat_cache_for(keel_dir: Path) -> StatCache:
    return StatCache(keel_dir / "data-state.db")
