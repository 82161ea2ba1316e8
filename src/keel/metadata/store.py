"""The metadata store: one SQLAlchemy engine, migrated on first use, with write transactions
that serialize on SQLite (BEGIN IMMEDIATE) and lock rows on PostgreSQL (SELECT ... FOR UPDATE).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from keel.errors import SchemaTooNewError, StoreError

# The newest migration this code knows. tests/metadata checks it equals Alembic's head.
SCHEMA_HEAD = "0004"
_BUSY_TIMEOUT_MS = 30_000


class MetadataStore:
    """Connections to the metadata database.

    ``read()`` yields a connection for queries; ``write()`` yields one inside a transaction that
    commits on success and rolls back on any error, so nothing is ever half-written.
    """

    def __init__(self, url: str, *, root: Path | None = None) -> None:
        self.url = _normalise(url, root)
        self._engine: Engine | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._connect()
        return self._engine

    def _connect(self) -> Engine:
        url = make_url(self.url)
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})
            _configure_sqlite(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        try:
            _migrate(engine)
        except SchemaTooNewError:
            engine.dispose()
            raise
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(
                f"cannot open the metadata store {self.display_url}: {_first_line(exc)}; "
                "check metadata.url in keel.yaml (or KEEL_METADATA_URL) and that the server runs"
            ) from exc
        return engine

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(keel_write=True)
            with conn.begin():
                yield conn

    def lock_row(self, conn: Connection, table: str, key_column: str, key: Any) -> None:
        """Serialize writers on one row (PostgreSQL); SQLite's BEGIN IMMEDIATE already does."""
        if self.dialect == "postgresql":
            conn.execute(
                text(f"SELECT 1 FROM {table} WHERE {key_column} = :key FOR UPDATE"),
                {"key": key},
            )

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _normalise(url: str, root: Path | None) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and root is not None:
        relative = url.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            return "sqlite:///" + str((root / relative).resolve())
    return url


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: two read-then-write transactions can then
        # never deadlock or lose an update, and readers still never block (WAL).
        if conn.get_execution_options().get("keel_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _switch_to_wal(cursor: Any) -> None:
    """Switch a database to WAL, retrying while other processes do the same.

    Several processes opening a new database at once can deadlock on the switch (each holds a
    shared lock and wants the exclusive one); SQLite then answers "locked" at once, without
    waiting for the busy timeout, so the wait happens here.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def current_revision(conn: Connection) -> str | None:
    try:
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except (OperationalError, ProgrammingError):
        conn.rollback()
        return None
    return None if row is None else str(row[0])


def _migrate(engine: Engine) -> None:
    with engine.connect() as conn:
        revision = current_revision(conn)
    if revision == SCHEMA_HEAD:
        return
    from keel.metadata import migrate  # Alembic is imported only when a migration is due

    migrate.upgrade(engine, revision)


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
