"""Row writes of the Redis online store (redis_writes.py): MSETNX for keys that do not exist
yet, the upsert script for the rest, and the newest row winning whichever path a chunk takes."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from keel.features.online import RowBatch, open_online_store
from keel.features.online.keys import KeyColumns
from keel.features.online.redis_store import RedisOnlineStore
from keel.features.online.redis_writes import PACK_BLOCK, PROBE_KEYS, WRITE_CHUNK
from tests.conftest import service_unavailable

T0 = datetime(2025, 3, 1, tzinfo=UTC)
SERVER = "redis://127.0.0.1:6379/15"

pytestmark = pytest.mark.redis


@pytest.fixture
def store() -> Iterator[RedisOnlineStore]:
    """A store under a key prefix of its own on db 15, its keys removed afterwards."""
    prefix = f"keeltest-{uuid.uuid4().hex[:12]}"
    opened = open_online_store(f"{SERVER}?prefix={prefix}")
    assert isinstance(opened, RedisOnlineStore)
    try:
        opened.views()
    except Exception as exc:  # any connection failure: the server is not reachable
        opened.close()
        service_unavailable("Redis", str(exc).splitlines()[0])
    yield opened
    client = opened._client
    leftovers = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if leftovers:
        client.delete(*leftovers)
    opened.close()


class CommandLog:
    """Wraps a store's round trips and counts the commands sent, by name."""

    def __init__(self, store: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: Counter[str] = Counter()
        original = store._roundtrip

        def logged(commands: Iterable[Any], **options: Any) -> list[Any]:
            return original(self._seen(commands), **options)

        monkeypatch.setattr(store, "_roundtrip", logged)

    def _seen(self, commands: Iterable[Any]) -> Iterator[Any]:
        for command in commands:
            head = command[0] if isinstance(command, tuple) else command
            self.names[head.split(b"\r\n")[2].decode()] += 1
            yield command


def int_rows(keys: list[int], events: list[int], value: list[float] | None = None) -> RowBatch:
    """Integer keys given as an Arrow column (the materialization path); ``events`` in µs."""
    values = value if value is not None else [float(e) for e in events]
    return RowBatch(
        keys=KeyColumns([pa.array(keys, pa.int64())]),
        features={"x": pa.array(values, pa.float64()), "n": pa.array(events, pa.int64())},
        event_ts=[T0 + timedelta(microseconds=e) for e in events],
    )


def read_x(store: RedisOnlineStore, view: str, keys: list[Any]) -> list[Any]:
    got = store.read(view, [k if isinstance(k, tuple) else (k,) for k in keys], ["x"])
    return [None if row is None else row[0] for row in got.values]


def test_a_fresh_batch_is_stored_with_msetnx_only(
    store: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = CommandLog(store, monkeypatch)
    size = PACK_BLOCK + 3 * WRITE_CHUNK + 7  # two blocks, packed into the same memory
    keys = list(range(-5, size - 5))
    applied = store.write_batch("v", "v1", int_rows(keys, list(range(size))))
    assert applied == size
    assert log.names["MSETNX"] == -(-size // WRITE_CHUNK)
    assert log.names["EVAL"] == 0
    assert read_x(store, "v", keys) == [float(e) for e in range(size)]


def test_existing_keys_go_through_the_script_and_keep_the_newest(
    store: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = list(range(2 * WRITE_CHUNK))
    store.write_batch("v", "v1", int_rows(keys, [10] * len(keys)))
    log = CommandLog(store, monkeypatch)
    # Even keys get a newer row, odd keys an older one.
    events = [20 if k % 2 == 0 else 5 for k in keys]
    applied = store.write_batch("v", "v1", int_rows(keys, events))
    assert applied == WRITE_CHUNK
    assert log.names["MSETNX"] == 0
    assert log.names["EVAL"] == 2
    assert read_x(store, "v", keys) == [20.0 if k % 2 == 0 else 10.0 for k in keys]


def test_a_refused_msetnx_falls_back_to_the_script(
    store: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One stored key the probe does not sample: MSETNX refuses its chunk, the script then
    # keeps the stored (newer) row and stores the rest of the chunk.
    size = 4 * WRITE_CHUNK
    step = -(-size // PROBE_KEYS)
    hidden = step + 1  # not a multiple of the sampling step
    store.write_batch("v", "v1", int_rows([hidden], [100], [-1.0]))
    log = CommandLog(store, monkeypatch)
    keys = list(range(size))
    applied = store.write_batch("v", "v1", int_rows(keys, [50] * size))
    assert applied == size - 1
    assert log.names["MSETNX"] == 4
    assert log.names["EVAL"] == 1
    got = read_x(store, "v", keys)
    assert got[hidden] == -1.0
    assert got[:hidden] + got[hidden + 1 :] == [50.0] * (size - 1)


def test_repeated_keys_in_a_fresh_batch_keep_the_newest(
    store: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = CommandLog(store, monkeypatch)
    size = PACK_BLOCK + WRITE_CHUNK
    # Key 1 repeats within the first chunk (newer first), key 2 across chunks (older
    # first), key 3 across blocks (newer first); the rest are distinct.
    keys = list(range(size))
    events = [10] * size
    keys[5], events[1], events[5] = 1, 30, 20
    keys[WRITE_CHUNK + 3], events[2], events[WRITE_CHUNK + 3] = 2, 5, 40
    keys[PACK_BLOCK + 1], events[3], events[PACK_BLOCK + 1] = 3, 60, 15
    rows = int_rows(keys, events)
    store.write_batch("v", "v1", rows)
    assert log.names["EVAL"] >= 1  # the chunk repeating key 1 cannot go as MSETNX
    newest: dict[int, int] = {}
    for key, event in zip(keys, events, strict=True):
        newest[key] = max(newest.get(key, event), event)
    unique = sorted(newest)
    assert read_x(store, "v", unique) == [float(newest[k]) for k in unique]


@pytest.mark.parametrize("kind", ["str keys", "str feature", "two-part keys"])
def test_fresh_batches_without_a_key_table_round_trip(store: RedisOnlineStore, kind: str) -> None:
    size = WRITE_CHUNK + 3
    label = [f"row-{i}" * (i % 3) for i in range(size)]
    if kind == "str keys":
        keys: Any = [(f"user-{i}" * (1 + i % 2),) for i in range(size)]
    elif kind == "two-part keys":
        keys = KeyColumns([pa.array(range(size)), pa.array([i % 7 for i in range(size)])])
    else:
        keys = KeyColumns([pa.array(range(size))])
    rows = RowBatch(
        keys=keys,
        features={"x": np.arange(size, dtype=np.float64), "label": label},
        event_ts=[T0] * size,
    )
    assert store.write_batch("v", "v1", rows) == size
    wanted = list(keys)
    got = store.read("v", wanted, ["x", "label"])
    assert got.values == [(float(i), label[i]) for i in range(size)]


def test_expiring_writes_keep_using_the_script(
    store: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = CommandLog(store, monkeypatch)
    now = datetime.now(UTC)
    rows = RowBatch(keys=[(1,), (2,)], features={"x": [1.0, 2.0]}, event_ts=[now, now])
    assert store.write_batch("v", "v1", rows, expire_after=timedelta(hours=1)) == 2
    assert log.names["MSETNX"] == 0
    ttl = store._client.pttl(store._row_prefix("v") + b"i" + (1).to_bytes(8, "big"))
    assert 0 < ttl <= 3_600_000


def test_an_empty_batch_registers_the_view(store: RedisOnlineStore) -> None:
    rows = RowBatch(keys=[], features={"x": []}, event_ts=[])
    assert store.write_batch("v", "v1", rows) == 0
    assert store.views() == {"v": "v1"}
