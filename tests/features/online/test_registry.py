"""Opening online stores by URL: schemes, paths, install hints, errors at the boundary."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import keel.features.online as registry
from keel.errors import InvalidInputError, StoreError
from keel.features.online import known_schemes, open_online_store, register_online_store
from keel.features.online.sqlite_store import SQLiteOnlineStore


def test_unknown_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown scheme 'dynamo'.*redis://, rediss://"):
        open_online_store("dynamo://table")
    with pytest.raises(InvalidInputError, match="unknown scheme ''"):
        open_online_store(".keel/online.db")


def test_sqlite_paths_are_relative_to_the_project_root(tmp_path: Path) -> None:
    store = open_online_store("sqlite:///.keel/online.db", root=tmp_path)
    assert isinstance(store, SQLiteOnlineStore)
    assert store.path == tmp_path / ".keel" / "online.db"
    assert store.path.exists()
    store.close()
    absolute = open_online_store(f"sqlite:///{tmp_path / 'abs.db'}", root=Path("/elsewhere"))
    assert isinstance(absolute, SQLiteOnlineStore)
    assert absolute.path == tmp_path / "abs.db"
    absolute.close()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_sqlite_needs_a_file(url: str) -> None:
    with pytest.raises(InvalidInputError, match="needs a file path"):
        open_online_store(url)


def test_missing_redis_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "keel.features.online.redis_store", raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` fail
    with pytest.raises(StoreError, match=r"needs the 'redis' package.*pip install keel\[redis\]"):
        open_online_store("redis://127.0.0.1:6379/0")


def test_registered_backends_open_by_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    register_online_store("mem", "keel.features.online.sqlite_store:SQLiteOnlineStore")
    assert "mem" in known_schemes()
    with pytest.raises(InvalidInputError, match="needs a file path"):  # the class was reached
        open_online_store("mem://x")
    with pytest.raises(InvalidInputError, match=r"package\.module:ClassName"):
        register_online_store("bad", "no_colon")


def test_unreachable_redis_is_a_store_error_without_the_password() -> None:
    store = open_online_store("redis://:hunter2@127.0.0.1:1/0?prefix=x")
    assert "hunter2" not in store.url
    with pytest.raises(StoreError, match=r"Redis at redis://127.0.0.1:1/0 failed") as caught:
        store.views()
    assert "hunter2" not in str(caught.value)
    with pytest.raises(StoreError, match="failed"):
        store.read("v", [(1,)], ["x"])
    store.close()


def test_redis_prefix_is_validated() -> None:
    with pytest.raises(InvalidInputError, match="prefix"):
        open_online_store("redis://127.0.0.1:6379/0?prefix=a*")


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "online.db"
    bogus.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match=r"online store .*online\.db.*not a database"):
        open_online_store(f"sqlite:///{bogus}")


def test_a_newer_sqlite_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="format 99, newer than this Keel"):
        open_online_store(f"sqlite:///{path}")


def test_importing_the_registry_loads_no_backend() -> None:
    code = (
        "import sys; before = set(sys.modules); import keel.features.online; "
        "new = set(sys.modules) - before; "
        "print(sorted(m for m in new if m.split('.')[0] in ('numpy', 'redis', 'sqlite3') "
        "or m.endswith('_store')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
