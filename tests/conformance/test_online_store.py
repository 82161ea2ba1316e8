"""The online-store contract (keel/features/online/base.py), run over every backend."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError, NotFoundError
from keel.features.online import OnlineStore, RowBatch, open_online_store
from tests.conformance import online_writer

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_views = itertools.count()
# Each hypothesis example writes a view of its own in the store the test received.
store_settings = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def fresh_view() -> str:
    return f"view_{next(_views)}"


def batch(keys: list[tuple[Any, ...]], event_ts: Any = None, **features: Any) -> RowBatch:
    return RowBatch(keys=keys, features=features, event_ts=event_ts or [T0] * len(keys))


def test_every_value_type_round_trips(store: OnlineStore) -> None:
    berlin = timezone(timedelta(hours=1))
    columns = {
        "i": [7, -(2**63), None],
        "f": [1.5, math.inf, None],
        "b": [True, False, None],
        "s": ["héllo ✓", "", None],
        "y": [b"\x00\xff", b"", None],
        "t": [T0, datetime(2025, 3, 1, 13, 0, 0, 123456, tzinfo=berlin), None],
        "n": [None, None, None],
    }
    keys = [(1,), (2,), (3,)]
    store.write_batch("types", "v1", batch(keys, **columns))
    got = store.read("types", keys, list(columns))
    assert got.values[0] == (7, 1.5, True, "héllo ✓", b"\x00\xff", T0, None)
    assert got.values[1] == (
        -(2**63),
        math.inf,
        False,
        "",
        b"",
        T0.replace(microsecond=123456),
        None,
    )
    assert got.values[2] == (None,) * 7
    types = [type(v) for v in got.values[0][:6]]
    assert types == [int, float, bool, str, bytes, datetime]
    assert got.values[1][5].tzinfo == UTC  # timestamps come back in UTC


def test_nan_and_negative_zero_stay_floats(store: OnlineStore) -> None:
    store.write_batch("floats", "v1", batch([(1,), (2,)], f=[math.nan, -0.0]))
    nan, zero = (row[0] for row in store.read("floats", [(1,), (2,)], ["f"]).values)  # type: ignore[index]
    assert math.isnan(nan)
    assert zero == 0.0
    assert math.copysign(1, zero) == -1


def test_numpy_and_arrow_columns_keep_types(store: OnlineStore) -> None:
    keys = [(1,), (2,)]
    stamps = pa.array([0, 1_000_001], type=pa.timestamp("us", tz="UTC"))
    rows = RowBatch(
        keys=keys,
        features={
            "np_f": np.array([0.25, 2.0], dtype=np.float32),
            "np_i": np.array([3, 4], dtype=np.int32),
            "np_b": np.array([True, False]),
            "pa_i": pa.array([5, None], type=pa.int64()),
            "pa_s": pa.array(["x", None]),
            "pa_t": stamps,
        },
        event_ts=np.array([1, 2], dtype=np.int64),  # epoch microseconds
    )
    store.write_batch("arrays", "v1", rows)
    got = store.read("arrays", keys, list(rows.features))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert got.values == [
        (0.25, 3, True, 5, "x", epoch),
        (2.0, 4, False, None, None, epoch + timedelta(seconds=1, microseconds=1)),
    ]
    assert type(got.values[0][1]) is int
    assert got.event_us == [1, 2]
    assert got.event_ts == [epoch + timedelta(microseconds=1), epoch + timedelta(microseconds=2)]


def test_keys_that_collide_when_joined_stay_apart(store: OnlineStore) -> None:
    keys = [(1, 23), (12, 3), ("1", 23), ("a_b", "c"), ("a", "b_c"), (True,), (1,), ("1",), (b"1",)]
    store.write_batch("keys", "v1", batch(keys, idx=list(range(len(keys)))))
    got = store.read("keys", keys, ["idx"])
    assert got.values == [(i,) for i in range(len(keys))]


# Small alphabets and ranges make parts whose text forms collide ("1", 1, b"1", "1_2", ...).
key_part = st.one_of(
    st.integers(0, 30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(alphabet="12_a", max_size=4),
    st.text(max_size=4),
    st.binary(max_size=3),
    st.booleans(),
)
key_tuple = st.lists(key_part, min_size=1, max_size=3).map(tuple)


def typed(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """A key with the type of each part made explicit (Python says True == 1; Keel does not)."""
    return tuple((type(part).__name__, part) for part in key)


def confusables(key: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Keys a string-joining encoder would confuse with ``key``."""
    text = [part.decode("latin-1") if isinstance(part, bytes) else str(part) for part in key]
    found = [tuple(text), ("_".join(text),), ("".join(text),), (":".join(text),)]
    found.append(tuple(p.encode() if isinstance(p, str) else p for p in key))
    if len(key) == 2 and all(type(p) is int and p >= 0 for p in key) and key[1] >= 10:
        head, tail = str(key[0]) + str(key[1])[0], str(key[1])[1:]
        if int(head) < 2**63:  # keys past int64 are refused, not stored: no collision to test
            found.append((int(head), int(tail)))  # (1, 23) -> (12, 3)
    return found


@st.composite
def colliding_keys(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    base = draw(st.lists(key_tuple, min_size=1, max_size=10))
    base.append((draw(st.integers(0, 9)), draw(st.integers(10, 99))))
    unique: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for key in base:
        for candidate in [key, *confusables(key)]:
            unique.setdefault(typed(candidate), candidate)
    return list(unique.values())


@store_settings
@given(keys=colliding_keys())
def test_distinct_typed_keys_never_collide(store: OnlineStore, keys: list[tuple[Any, ...]]) -> None:
    view = fresh_view()
    store.write_batch(view, "v1", batch(keys, idx=list(range(len(keys)))))
    assert store.read(view, keys, ["idx"]).values == [(i,) for i in range(len(keys))]


# (key, event, created): small ranges, so equal keys, events and ties are frequent.
write = st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2))


@settings(store_settings, max_examples=100)
@given(writes=st.lists(write, min_size=1, max_size=40), cuts=st.sets(st.integers(1, 39)))
def test_newest_row_wins_in_any_batching(
    store: OnlineStore, writes: list[tuple[int, int, int]], cuts: set[int]
) -> None:
    view = fresh_view()
    bounds = [0, *sorted(c for c in cuts if c < len(writes)), len(writes)]
    for start, end in itertools.pairwise(bounds):
        part = writes[start:end]
        store.write_batch(
            view,
            "v1",
            RowBatch(
                keys=[(key,) for key, _, _ in part],
                features={"seq": list(range(start, end))},
                event_ts=[event for _, event, _ in part],
                created_ts=[created for _, _, created in part],
            ),
        )
    expected: dict[int, tuple[int, int, int]] = {}
    for seq, (key, event, created) in enumerate(writes):
        best = expected.get(key)
        if best is None or (event, created) >= best[:2]:  # ties: the later write wins
            expected[key] = (event, created, seq)
    got = store.read(view, [(key,) for key in range(4)], ["seq"])
    for key in range(4):
        if key in expected:
            assert got.values[key] == (expected[key][2],)
            assert got.event_us[key] == expected[key][0]
        else:
            assert got.values[key] is None


@pytest.mark.parametrize(
    ("expire_after", "with_text"), [(None, False), (timedelta(days=36500), True)]
)
def test_a_large_batch_with_repeated_keys_keeps_the_newest(
    store: OnlineStore, expire_after: timedelta | None, with_text: bool
) -> None:
    rng = np.random.default_rng(7)
    size, distinct = 20_000, 7_000  # spans many write chunks and packing blocks
    keys = [(int(k), "k") for k in rng.integers(0, distinct, size)]
    events = rng.integers(0, 1_000, size)
    features = {"event": events, "seq": np.arange(size)}
    if with_text:  # variable-width rows take another packing path
        features["s"] = [f"#{i}" for i in range(size)]
    rows = RowBatch(keys=keys, features=features, event_ts=events)
    assert store.write_batch("large", "v1", rows, expire_after=expire_after) >= distinct // 2
    newest: dict[tuple[Any, ...], int] = {}
    for seq, key in enumerate(keys):
        if key not in newest or events[seq] >= events[newest[key]]:
            newest[key] = seq
    wanted = sorted(newest)
    got = store.read("large", wanted, ["seq", "event"])
    assert got.values == [(newest[k], int(events[newest[k]])) for k in wanted]
    if with_text:
        texts = store.read("large", wanted, ["s"]).values
        assert texts == [(f"#{newest[k]}",) for k in wanted]


def test_late_rows_older_are_ignored_newer_applied(store: OnlineStore) -> None:
    hour = timedelta(hours=1)
    assert store.write_batch("late", "v1", batch([(1,)], [T0], x=[1])) == 1
    assert store.write_batch("late", "v1", batch([(1,)], [T0 - hour], x=[0])) == 0
    assert store.read("late", [(1,)], ["x"]).values == [(1,)]
    assert store.write_batch("late", "v1", batch([(1,)], [T0 + hour], x=[2])) == 1
    got = store.read("late", [(1,)], ["x"])
    assert got.values == [(2,)]
    assert got.event_ts == [T0 + hour]


def test_created_ts_breaks_event_ties(store: OnlineStore) -> None:
    def put(created: datetime, value: int) -> int:
        rows = RowBatch(keys=[(1,)], features={"x": [value]}, event_ts=[T0], created_ts=[created])
        return store.write_batch("ties", "v1", rows)

    assert put(T0 + timedelta(minutes=5), 1) == 1
    assert put(T0 + timedelta(minutes=1), 2) == 0  # same event time, ingested earlier
    assert put(T0 + timedelta(minutes=5), 3) == 1  # an exact tie: the replay wins
    assert store.read("ties", [(1,)], ["x"]).values == [(3,)]


def test_missing_and_repeated_keys_in_request_order(store: OnlineStore) -> None:
    store.write_batch("m", "v1", batch([(1,), (2,)], x=[10, 20], y=["a", "b"]))
    got = store.read("m", [(3,), (2,), (1,), (2,)], ["y", "x"])
    assert got.values == [None, ("b", 20), ("a", 10), ("b", 20)]
    assert got.event_us[0] is None
    assert got.versions == [None, "v1", "v1", "v1"]
    assert got.as_dicts()[1] == {"y": "b", "x": 20}
    assert store.read("m", [], ["x"]).values == []


def test_many_keys_in_one_read(store: OnlineStore) -> None:
    keys = [(i,) for i in range(1500)]
    store.write_batch("big", "v1", batch(keys, x=list(range(1500))))
    wanted = [(i,) for i in range(1499, -1, -3)] + [(5000,)]
    got = store.read("big", wanted, ["x"])
    assert got.values == [(i,) for i in range(1499, -1, -3)] + [None]


def test_versions_are_reported_per_view_and_per_row(store: OnlineStore) -> None:
    assert store.views() == {}
    store.write_batch("a", "v1", batch([(1,), (2,)], x=[1, 2]))
    store.write_batch("b", "w1", batch([(1,)], x=[1]))
    assert store.views() == {"a": "v1", "b": "w1"}
    store.write_batch("a", "v2", batch([(1,)], x=[10], z=[True]))  # a new version adds z
    assert store.views() == {"a": "v2", "b": "w1"}
    got = store.read("a", [(1,), (2,)], ["x", "z"])
    assert got.versions == ["v2", "v1"]
    assert got.values == [(10, True), (2, None)]  # the v1 row has no z


def test_unknown_view_and_feature_are_refused(store: OnlineStore) -> None:
    with pytest.raises(NotFoundError, match="no feature view 'ghost'"):
        store.read("ghost", [(1,)], ["x"])
    store.write_batch("real", "v1", batch([(1,)], x=[1]))
    with pytest.raises(InvalidInputError, match=r"no feature 'y'.*features: x"):
        store.read("real", [(1,)], ["x", "y"])


def test_delete_view_removes_only_that_view(store: OnlineStore) -> None:
    store.write_batch("gone", "v1", batch([(1,), (2,)], x=[1, 2]))
    store.write_batch("kept", "v1", batch([(1,)], x=[9]))
    store.delete_view("gone")
    store.delete_view("never_written")  # no error
    assert store.views() == {"kept": "v1"}
    with pytest.raises(NotFoundError):
        store.read("gone", [(1,)], ["x"])
    assert store.read("kept", [(1,)], ["x"]).values == [(9,)]
    store.write_batch("gone", "v2", batch([(2,)], y=["new"]))
    assert store.read("gone", [(1,), (2,)], ["y"]).values == [None, ("new",)]


def test_views_are_isolated(store: OnlineStore) -> None:
    store.write_batch("left", "v1", batch([(1, "k")], x=[1]))
    store.write_batch("right", "v1", batch([(1, "k")], x=[2]))
    assert store.read("left", [(1, "k")], ["x"]).values == [(1,)]
    assert store.read("right", [(1, "k")], ["x"]).values == [(2,)]


def test_a_second_store_on_the_same_url_sees_the_rows(store: OnlineStore, online_url: str) -> None:
    store.write_batch("shared", "v7", batch([(1,)], s=["x"], t=[T0]))
    with open_online_store(online_url) as other:
        got = other.read("shared", [(1,)], ["t", "s"])
        assert got.values == [(T0, "x")]
        assert got.versions == ["v7"]
        assert other.views() == {"shared": "v7"}


def test_expired_rows_may_be_dropped(store: OnlineStore) -> None:
    old = datetime.now(UTC) - timedelta(hours=2)
    fresh = datetime.now(UTC)
    rows = batch([(1,), (2,)], [old, fresh], x=[1, 2])
    store.write_batch("ttl", "v1", rows, expire_after=timedelta(hours=1))
    got = store.read("ttl", [(1,), (2,)], ["x"])
    assert got.values[1] == (2,)  # not expired yet: kept
    assert got.values[0] is None  # expired on write: both backends drop it at once


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (batch([(1,), (2,)], x=[1]), "1 values for 2 entity keys"),
        (batch([(1,)], x=[1.5, 2.5]), "2 values for 1 entity keys"),
        (batch([(1,), (2,)], x=[1, 2.5]), "mixes float, int values"),
        (batch([(1,)], [datetime(2025, 1, 1)], x=[1]), "naive datetime"),
        (batch([(1,)], x=[datetime(2025, 1, 1)]), "naive datetime"),
        (batch([(1.5,)], x=[1]), "part of type float"),
        (batch([(None,)], x=[1]), "null part"),
        (batch([1], x=[1]), "is not a tuple"),  # type: ignore[list-item]
        (batch([(2**64,)], x=[1]), "outside the int64 range"),
        (batch([(1,)], x=[{"a": 1}]), "type dict"),
        (RowBatch(keys=[(1,)], features={"x": [1]}, event_ts=[None]), "null values"),
    ],
)
def test_bad_batches_are_refused_before_any_write(
    store: OnlineStore, rows: RowBatch, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        store.write_batch("bad", "v1", rows)
    assert store.views() == {}


@pytest.mark.parametrize("name", ["", "a b", "x:y", "1abc", "a*"])
def test_bad_view_names_are_refused(store: OnlineStore, name: str) -> None:
    with pytest.raises(InvalidInputError, match="view name"):
        store.write_batch(name, "v1", batch([(1,)], x=[1]))


def test_threads_share_a_store(store: OnlineStore) -> None:
    keys = [(i,) for i in range(200)]
    store.write_batch(
        "threads", "v1", batch(keys, x=list(range(200)), s=[str(i) for i in range(200)])
    )

    def reads(offset: int) -> bool:
        wanted = keys[offset:] + keys[:offset]
        for _ in range(30):
            got = store.read("threads", wanted, ["s", "x"])
            if got.values != [(str(k), k) for (k,) in wanted]:
                return False
            if store.read("threads", [wanted[0]], ["x"]).values != [(wanted[0][0],)]:
                return False
        return True

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(reads, [0, 50, 100, 150]))
    assert isinstance(store, OnlineStore)


def test_concurrent_writers_keep_the_newest_row(
    store: OnlineStore, online_url: str, tmp_path: Path
) -> None:
    root = Path(__file__).resolve().parents[2]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    command = [sys.executable, "-m", "tests.conformance.online_writer", online_url, "race"]
    writers = [subprocess.Popen([*command, str(seed), str(barrier)], cwd=root) for seed in (1, 2)]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    newest: dict[int, tuple[int, int]] = {}
    for seed in (1, 2):
        for rows in online_writer.plan(seed):
            for key, event in rows:
                if event >= newest.get(key, (-1, 0))[0]:
                    newest[key] = (event, seed)
    keys = sorted(newest)
    got = store.read("race", [(key, "k") for key in keys], ["event", "writer"])
    assert got.values == [newest[key] for key in keys]


@pytest.mark.redis
@pytest.mark.parametrize(("protocol", "spin_us"), [(2, 0), (3, 200)])
def test_redis_speaks_resp2_and_resp3(redis_url: str, protocol: int, spin_us: int) -> None:
    with open_online_store(f"{redis_url}&protocol={protocol}&spin_us={spin_us}") as store:
        assert store.write_batch("p", "v1", batch([(1,), (2,)], x=[1, 2], s=["a", None])) == 2
        assert store.read("p", [(2,), (3,)], ["s", "x"]).values == [(None, 2), None]
        assert store.read("p", [(1,)], ["x"]).values == [(1,)]
        assert store.views() == {"p": "v1"}


@pytest.mark.redis
def test_redis_error_replies_become_store_errors(redis_url: str) -> None:
    import redis

    from keel.errors import StoreError
    from keel.features.online.keys import encode_key

    with open_online_store(redis_url) as store:
        store.write_batch("w", "v1", batch([(1,), (2,)], x=[1, 2]))
        client = redis.Redis.from_url(redis_url.split("?")[0])
        row_key = f"{store.prefix}:r:w:".encode() + encode_key((1,))
        client.delete(row_key)
        client.hset(row_key, "not", "a string")
        client.close()
        with pytest.raises(StoreError, match="refused a command: WRONGTYPE"):
            store.read("w", [(1,)], ["x"])  # GET; an MGET would just say "missing"
        assert store.read("w", [(2,)], ["x"]).values == [(2,)]  # the connection recovered
    with pytest.raises(InvalidInputError, match="spin_us='soon'"):
        open_online_store(f"{redis_url}&spin_us=soon")


@pytest.mark.redis
def test_redis_reads_reconnect_after_a_dropped_connection(redis_url: str) -> None:
    import redis

    from keel.features.online.redis_wire import command

    with open_online_store(redis_url) as store:
        store.write_batch("d", "v1", batch([(1,)], x=[1]))
        (client_id,) = store._roundtrip([command(b"CLIENT", b"ID")])  # the link reads use
        admin = redis.Redis.from_url(redis_url.split("?")[0])
        assert admin.client_kill_filter(_id=client_id) == 1
        admin.close()
        assert store.read("d", [(1,)], ["x"]).values == [(1,)]  # retried on a new connection
