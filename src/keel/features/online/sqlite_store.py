"""The embedded online store: one SQLite file (WAL), one row per (view, entity key), and the
event log of windowed aggregations in the same file (sqlite_events.py).

Each row holds the packed feature values (see codec.py) next to its event and created times,
so an upsert is one statement whose ``WHERE`` keeps the newest row, and a lookup of many keys is
one ``IN (...)`` query. Each thread gets its own connection (readers never block in WAL mode);
writers serialize on ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError, StoreError
from keel.features.online import sqlite_events
from keel.features.online.base import (
    ClosingMixin,
    EventRows,
    OnlineRows,
    OnlineStore,
    RowBatch,
    check_view_name,
    chunks,
)
from keel.features.online.batch import prepare_batch
from keel.features.online.catalog import Catalog, entry_version, view_entry
from keel.features.online.events import check_range, gather, prepare_events
from keel.features.online.keys import encode_keys

FORMAT = 2  # PRAGMA user_version of files this code writes (2: the event log)
_BUSY_TIMEOUT_S = 30.0
_MAX_IN = 512  # keys per SELECT; below SQLite's variable limit
_SCHEMA = """
CREATE TABLE IF NOT EXISTS online_views (
    name TEXT PRIMARY KEY, entry TEXT NOT NULL, updated_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS online_layouts (
    id INTEGER PRIMARY KEY, view TEXT NOT NULL, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS online_rows (
    view_id INTEGER NOT NULL, key BLOB NOT NULL,
    event_us INTEGER NOT NULL, created_us INTEGER NOT NULL, expires_us INTEGER,
    data BLOB NOT NULL,
    PRIMARY KEY (view_id, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS online_rows_expiry ON online_rows (expires_us)
    WHERE expires_us IS NOT NULL;
"""
_UPSERT = """
INSERT INTO online_rows (view_id, key, event_us, created_us, expires_us, data)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (view_id, key) DO UPDATE SET
    event_us = excluded.event_us, created_us = excluded.created_us,
    expires_us = excluded.expires_us, data = excluded.data
WHERE (excluded.event_us, excluded.created_us) >= (online_rows.event_us, online_rows.created_us)
"""
_SELECT_ONE = "SELECT event_us, data FROM online_rows WHERE view_id = ? AND key = ?"


def view_id(view: str) -> int:
    """A stable int64 id of a view name: the same in every process, never reused."""
    return int.from_bytes(hashlib.sha256(view.encode()).digest()[:8], "big", signed=True)


class SQLiteOnlineStore(ClosingMixin):
    """Online store in a local SQLite file.

    store = SQLiteOnlineStore(Path(".keel/online.db"))
    store.write_batch("user_stats", "v1", RowBatch(keys=[(1,)], features={"n": [3]},
                      event_ts=[datetime.now(UTC)]))
    store.read("user_stats", [(1,)], ["n"]).values  # [(3,)]
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._catalog = Catalog(self._fetch_layout, self._fetch_view)
        self._view_ids: dict[str, int] = {}
        self._in_sql = {size: self._select_in(size) for size in _IN_SIZES}
        self._prepare_file()

    @classmethod
    def from_url(cls, url: str, *, root: Path | None = None) -> SQLiteOnlineStore:
        """``sqlite:///relative/path.db`` (under ``root``) or ``sqlite:////absolute/path.db``."""
        path = url.removeprefix("sqlite:///")
        if not url.startswith("sqlite:///") or not path or path == ":memory:":
            raise InvalidInputError(
                f"online store URL {url!r} needs a file path, e.g. sqlite:///.keel/online.db"
            )
        resolved = Path(path) if path.startswith("/") or root is None else root / path
        return cls(resolved)

    # -- writing -------------------------------------------------------------------------------

    def write_batch(
        self, view: str, version: str, rows: RowBatch, *, expire_after: timedelta | None = None
    ) -> int:
        batch = prepare_batch(view, version, rows, expire_after=expire_after)
        layout = batch.layout
        expires = repeat(None) if batch.expires_us is None else batch.expires_us.tolist()
        # In key order: the B-tree then grows at its right edge instead of splitting pages all
        # over the file, several times faster for large batches.
        params = sorted(
            zip(
                repeat(view_id(view)),
                batch.keys,
                batch.event_us.tolist(),
                batch.created_us.tolist(),
                expires,
                batch.pack().rows(),
            ),
            key=itemgetter(1),
        )
        entry = view_entry(version, list(layout.names))
        with self._write() as conn:
            conn.execute(
                "INSERT INTO online_views (name, entry, updated_us) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET entry = excluded.entry, "
                "updated_us = excluded.updated_us",
                (view, entry, time.time_ns() // 1000),
            )
            conn.execute(
                "INSERT OR IGNORE INTO online_layouts (id, view, spec) VALUES (?, ?, ?)",
                (layout.id, view, layout.spec()),
            )
            applied = conn.executemany(_UPSERT, params).rowcount
            if batch.expires_us is not None:
                self._sweep(conn)
        self._catalog.remember(layout)
        return max(applied, 0)

    def append_events(self, view: str, version: str, rows: RowBatch, *, retain: timedelta) -> int:
        events = prepare_events(view, version, rows, retain=retain)
        if not len(events):
            return 0
        layout = events.layout
        with self._write() as conn:
            # A view fed only by events still shows in views() with its version; a view that
            # also has newest rows keeps the entry its row writes made.
            conn.execute(
                "INSERT OR IGNORE INTO online_views (name, entry, updated_us) VALUES (?, ?, ?)",
                (view, view_entry(version, []), time.time_ns() // 1000),
            )
            conn.execute(
                "INSERT OR IGNORE INTO online_layouts (id, view, spec) VALUES (?, ?, ?)",
                (layout.id, view, layout.spec()),
            )
            stored = sqlite_events.append(conn, view_id(view), events)
        self._catalog.remember(layout)
        return stored

    def sweep(self) -> int:
        """Delete rows whose ``expire_after`` has passed; returns how many were deleted."""
        with self._write() as conn:
            return self._sweep(conn)

    def delete_view(self, view: str) -> None:
        check_view_name(view)
        with self._write() as conn:
            conn.execute("DELETE FROM online_views WHERE name = ?", (view,))
            conn.execute("DELETE FROM online_rows WHERE view_id = ?", (view_id(view),))
            conn.execute("DELETE FROM online_layouts WHERE view = ?", (view,))
            sqlite_events.delete(conn, view_id(view))
        self._catalog.forget(view)

    # -- reading -------------------------------------------------------------------------------

    def read(
        self, view: str, keys: Sequence[tuple[Any, ...]], features: Sequence[str]
    ) -> OnlineRows:
        wanted = tuple(features)
        vid = self._view_ids.get(view)
        if vid is None:
            vid = self._view_ids[view] = view_id(check_view_name(view))
        self._catalog.check(view, wanted)
        encoded = encode_keys(keys)
        try:
            found = self._lookup(vid, encoded)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the online store {self.path}: {exc}") from exc
        values: list[tuple[Any, ...] | None] = []
        events: list[int | None] = []
        versions: list[str | None] = []
        decode = self._catalog.decoder(wanted)
        for key in encoded:
            hit = found.get(key)
            row = None if hit is None else decode(hit[1], 0)
            if hit is None or row is None:
                values.append(None)
                events.append(None)
                versions.append(None)
            else:
                values.append(row[0])
                events.append(hit[0])
                versions.append(row[1])
        return OnlineRows(wanted, values, events, versions)

    def read_events(
        self,
        view: str,
        keys: Sequence[tuple[Any, ...]],
        columns: Sequence[str],
        since_us: int,
        until_us: int,
    ) -> EventRows:
        wanted = tuple(columns)
        check_range(since_us, until_us)
        vid = self._view_ids.get(view)
        if vid is None:
            vid = self._view_ids[view] = view_id(check_view_name(view))
        encoded = encode_keys(keys)
        try:
            found = sqlite_events.select(self._reader(), vid, encoded, int(since_us), int(until_us))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the online store {self.path}: {exc}") from exc
        return gather(wanted, encoded, found, self._catalog.decoder(wanted), 0)

    def views(self) -> dict[str, str]:
        rows = self._reader().execute("SELECT name, entry FROM online_views ORDER BY name")
        return {name: entry_version(entry) for name, entry in rows}

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- internals -----------------------------------------------------------------------------

    def _lookup(self, vid: int, encoded: list[bytes]) -> dict[bytes, tuple[int, bytes]]:
        conn = self._reader()
        if len(encoded) == 1:
            hit = conn.execute(_SELECT_ONE, (vid, encoded[0])).fetchone()
            return {} if hit is None else {encoded[0]: hit}
        return self._select_many(conn, vid, encoded)

    def _select_many(
        self, conn: sqlite3.Connection, vid: int, encoded: list[bytes]
    ) -> dict[bytes, tuple[int, bytes]]:
        found: dict[bytes, tuple[int, bytes]] = {}
        for part in chunks(encoded, _MAX_IN):
            size = _padded(len(part))
            # Pad with a repeated key so a handful of statement shapes stay prepared.
            params = [vid, *part, *repeat(part[-1], size - len(part))]
            for key, event_us, data in conn.execute(self._in_sql[size], params):
                found[key] = (event_us, data)
        return found

    @staticmethod
    def _select_in(size: int) -> str:
        marks = ",".join("?" * size)
        return f"SELECT key, event_us, data FROM online_rows WHERE view_id = ? AND key IN ({marks})"

    def _sweep(self, conn: sqlite3.Connection) -> int:
        now_us = time.time_ns() // 1000
        cursor = conn.execute(
            "DELETE FROM online_rows WHERE expires_us IS NOT NULL AND expires_us <= ?", (now_us,)
        )
        return cursor.rowcount

    def _fetch_layout(self, layout_id: int) -> str | None:
        row = (
            self._reader()
            .execute("SELECT spec FROM online_layouts WHERE id = ?", (layout_id,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def _fetch_view(self, view: str) -> str | None:
        row = (
            self._reader()
            .execute("SELECT entry FROM online_views WHERE name = ?", (view,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._reader()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"online store {self.path} is locked or unusable: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot write the online store {self.path}: {exc}") from exc
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,  # transactions are begun explicitly
                check_same_thread=False,  # close() may run on another thread
                cached_statements=64,
            )
            # Large pages suit rows of hundreds of bytes; ignored unless the file is new.
            conn.execute("PRAGMA page_size=16384")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the online store {self.path}: {exc}") from exc
        with self._lock:
            self._connections.append(conn)
        return conn

    def _prepare_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._reader()
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > FORMAT:
                raise StoreError(
                    f"online store {self.path} has format {found}, newer than this Keel "
                    f"understands ({FORMAT}); upgrade Keel"
                )
            if found < FORMAT:
                # One script (executescript commits any open transaction before it runs).
                conn.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA} {sqlite_events.SCHEMA} "
                    f"PRAGMA user_version={FORMAT}; COMMIT;"
                )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable online store: {exc}") from exc


_IN_SIZES = (2, 4, 8, 16, 32, 64, 128, 256, _MAX_IN)


def _padded(count: int) -> int:
    return next(size for size in _IN_SIZES if size >= count)


if TYPE_CHECKING:  # mypy checks that the class honours the OnlineStore protocol
    _conforms: type[OnlineStore] = SQLiteOnlineStore
