"""Fixtures of the online-store conformance suite: every test runs on SQLite and on Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.features.online import OnlineStore, open_online_store
from tests.conftest import service_unavailable

REDIS_SERVER = os.environ.get("KEEL_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The machine's Redis (skipped when unreachable outside CI, a failure in CI)."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # a missing package or any connection failure: not reachable
        service_unavailable("Redis", str(exc).splitlines()[0])
    return REDIS_SERVER


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """An online-store URL on the test Redis with a key prefix of its own, removed afterwards."""
    import redis

    prefix = f"keeltest-{uuid.uuid4().hex[:12]}"
    yield f"{redis_server}?prefix={prefix}"
    client = redis.Redis.from_url(redis_server)
    leftovers = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if leftovers:
        client.delete(*leftovers)
    client.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty online store of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'online.db'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def store(online_url: str) -> Iterator[OnlineStore]:
    opened = open_online_store(online_url)
    yield opened
    opened.close()
