from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import insert, select, text, update

from keel.errors import SchemaTooNewError, StoreError
from keel.metadata import MetadataStore
from keel.metadata import migrate as migrate_module
from keel.metadata.schema import experiments
from keel.metadata.store import SCHEMA_HEAD


def test_code_head_matches_alembic_head() -> None:
    assert migrate_module.head() == SCHEMA_HEAD


def test_migrates_on_first_use(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)
    with store.read() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
    store.dispose()


def test_sqlite_uses_wal_and_busy_timeout(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'k.db'}")
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.dispose()


def test_newer_schema_is_refused(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)
    with store.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    store.dispose()
    with pytest.raises(SchemaTooNewError, match="'9999', newer than this Keel"):
        MetadataStore(metadata_url).engine  # noqa: B018


def test_write_rolls_back_on_error(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)

    def half_write() -> None:
        with store.write() as conn:
            conn.execute(insert(experiments).values(name="half", created_at=1))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        half_write()
    with store.read() as conn:
        assert conn.execute(select(experiments.c.name)).all() == []
    with store.write() as conn:
        conn.execute(insert(experiments).values(name="whole", created_at=1))
        conn.execute(update(experiments).values(description="d"))
    with store.read() as conn:
        assert conn.execute(select(experiments.c.description)).scalar() == "d"
    store.dispose()


def test_unreachable_server_is_a_clear_error() -> None:
    store = MetadataStore("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StoreError, match=r"cannot open the metadata store.*metadata\.url"):
        store.engine  # noqa: B018


def _first_use(url: str, name: str) -> str:
    from sqlalchemy import insert

    store = MetadataStore(url)
    with store.write() as conn:
        conn.execute(insert(experiments).values(name=name, created_at=1))
    store.dispose()
    return name


def test_concurrent_first_use_migrates_once(metadata_url: str) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        names = pool.starmap(_first_use, [(metadata_url, f"e{i}") for i in range(6)])
    store = MetadataStore(metadata_url)
    with store.read() as conn:
        stored = sorted(conn.execute(select(experiments.c.name)).scalars())
        revisions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    store.dispose()
    assert stored == sorted(names)
    assert revisions == [SCHEMA_HEAD]


def test_migrations_build_exactly_the_declared_schema(metadata_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from keel.metadata.schema import metadata

    store = MetadataStore(metadata_url)
    with store.read() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    store.dispose()
