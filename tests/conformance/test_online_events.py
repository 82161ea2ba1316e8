"""The event-log contract (append_events / read_events in base.py), run over every backend."""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError
from keel.features.online import OnlineStore, RowBatch
from tests.conformance.test_online_store import colliding_keys, fresh_view, store_settings

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T0_US = int(T0.timestamp()) * 1_000_000
DAY = timedelta(days=1)
EVERYTHING = (-(2**64), 2**64)  # a read range that holds every event (bounds are clamped)


def events(
    keys: list[tuple[Any, ...]], event_ts: Any, created_ts: Any = None, **columns: Any
) -> RowBatch:
    return RowBatch(keys=keys, features=columns, event_ts=event_ts, created_ts=created_ts)


def test_every_value_type_round_trips(store: OnlineStore) -> None:
    berlin = timezone(timedelta(hours=1))
    columns = {
        "i": [7, -(2**63), None],
        "f": [math.nan, -math.inf, None],
        "b": [True, False, None],
        "s": ["héllo ✓", "", None],
        "y": [b"\x00\xff", b"", None],
        "t": [T0, datetime(2025, 3, 1, 13, 0, 0, 123456, tzinfo=berlin), None],
        "n": [None, None, None],
    }
    stamps = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert (
        store.append_events("types", "v1", events([(1,)] * 3, stamps, **columns), retain=DAY) == 3
    )
    got = store.read_events("types", [(1,)], list(columns), *EVERYTHING)
    assert got.columns == tuple(columns)
    assert got.event_us == [[T0_US, T0_US + 1_000_000, T0_US + 2_000_000]]
    assert got.created_us == got.event_us  # no created_ts: the event time
    first, second, third = got.values[0]
    assert math.isnan(first[1])
    assert first[:1] + first[2:] == (7, True, "héllo ✓", b"\x00\xff", T0, None)
    assert second == (-(2**63), -math.inf, False, "", b"", T0.replace(microsecond=123456), None)
    assert third == (None,) * 7
    assert [type(v) for v in first[:6]] == [int, float, bool, str, bytes, datetime]
    assert second[5].tzinfo == UTC


def test_numpy_and_arrow_columns_and_int_times(store: OnlineStore) -> None:
    import pyarrow as pa

    rows = events(
        [(1,), (1,)],
        np.array([5, 6], dtype=np.int64),
        created_ts=pa.array([7, None], pa.int64()),
        x=np.array([1.5, 2.5]),
        n=pa.array([None, 4], pa.int64()),
    )
    store.append_events("arrays", "v1", rows, retain=DAY)
    got = store.read_events("arrays", [(1,)], ["x", "n"], 0, 10)
    assert got.event_us == [[5, 6]]
    assert got.created_us == [[7, 6]]  # a null created time counts as the event time
    assert got.values == [[(1.5, None), (2.5, 4)]]
    assert type(got.values[0][1][1]) is int


def test_the_window_is_open_below_and_closed_above(store: OnlineStore) -> None:
    times = [9, 10, 11, 19, 20, 21]
    store.append_events("edges", "v1", events([(1,)] * 6, times, at=times), retain=DAY)
    got = store.read_events("edges", [(1,)], ["at"], 10, 20)
    assert got.event_us == [[11, 19, 20]]
    assert got.values == [[(11,), (19,), (20,)]]
    assert store.read_events("edges", [(1,)], ["at"], 20, 20).event_us == [[]]
    assert store.read_events("edges", [(1,)], ["at"], 21, 10).event_us == [[]]
    assert store.read_events("edges", [(1,)], ["at"], *EVERYTHING).event_us == [times]
    huge = store.read_events("edges", [(1,)], ["at"], -(2**70), 2**70)
    assert huge.event_us == [times]  # bounds beyond int64 are clamped, not refused


def test_times_across_the_whole_int64_range(store: OnlineStore) -> None:
    times = [-(2**63), -(2**53) - 1, -1, 0, 2**53 + 1, 2**63 - 1]  # beyond float precision too
    store.append_events("wide", "v1", events([(1,)] * 6, times, at=times), retain=timedelta.max)
    assert store.read_events("wide", [(1,)], ["at"], *EVERYTHING).event_us == [times]
    inner = store.read_events("wide", [(1,)], ["at"], -(2**53) - 1, 2**53 + 1)
    assert inner.event_us == [[-1, 0, 2**53 + 1]]


def test_typed_keys_never_collide_simple(store: OnlineStore) -> None:
    keys = [(1, 23), (12, 3), ("1", 23), ("a_b", "c"), ("a", "b_c"), (True,), (1,), ("1",), (b"1",)]
    stamps = [T0] * len(keys)
    store.append_events("keys", "v1", events(keys, stamps, idx=list(range(len(keys)))), retain=DAY)
    got = store.read_events("keys", keys, ["idx"], *EVERYTHING)
    assert got.values == [[(i,)] for i in range(len(keys))]


@store_settings
@given(keys=colliding_keys())
def test_distinct_typed_keys_never_collide(store: OnlineStore, keys: list[tuple[Any, ...]]) -> None:
    view = fresh_view()
    rows = events(keys, [T0] * len(keys), idx=list(range(len(keys))))
    store.append_events(view, "v1", rows, retain=DAY)
    assert store.read_events(view, keys, ["idx"], *EVERYTHING).values == [
        [(i,)] for i in range(len(keys))
    ]


def test_events_are_ordered_by_event_created_and_sequence(store: OnlineStore) -> None:
    first = events([(1,)] * 4, [5, 5, 3, 5], [9, 7, 1, 7], x=["a", "b", "c", "d"])
    store.append_events("order", "v1", first, retain=DAY)
    store.append_events("order", "v1", events([(1,)] * 2, [5, 4], [7, 8], x=["e", "f"]), retain=DAY)
    got = store.read_events("order", [(1,)], ["x"], *EVERYTHING)
    assert [v[0] for v in got.values[0]] == ["c", "f", "b", "d", "e", "a"]
    assert got.event_us == [[3, 4, 5, 5, 5, 5]]
    assert got.created_us == [[1, 8, 7, 7, 7, 9]]
    seq = dict(zip((v[0] for v in got.values[0]), got.seq[0], strict=True))
    # The sequence increases in write order: within an append and across appends.
    assert seq["a"] < seq["b"] < seq["c"] < seq["d"] < seq["e"] < seq["f"]


def test_a_replayed_append_stores_its_rows_again(store: OnlineStore) -> None:
    rows = events([(1,), (1,)], [5, 5], x=[1, 1])
    assert store.append_events("replay", "v1", rows, retain=DAY) == 2
    assert store.append_events("replay", "v1", rows, retain=DAY) == 2
    got = store.read_events("replay", [(1,)], ["x"], *EVERYTHING)
    assert got.values == [[(1,)] * 4]
    assert len(set(got.seq[0])) == 4


def test_rows_that_never_count_are_skipped(store: OnlineStore) -> None:
    rows = events([(1,), (None,), (1, None), (1,)], [None, 5, 6, 7], x=[1, 2, 3, 4])
    assert store.append_events("skips", "v1", rows, retain=DAY) == 1
    got = store.read_events("skips", [(1,)], ["x"], *EVERYTHING)
    assert got.values == [[(4,)]]
    assert store.append_events("skips", "v1", events([(1,)], [None], x=[1]), retain=DAY) == 0


def test_missing_and_repeated_keys_in_request_order(store: OnlineStore) -> None:
    store.append_events(
        "m", "v1", events([(1,), (2,)], [1, 2], x=[10, 20], y=["a", "b"]), retain=DAY
    )
    got = store.read_events("m", [(3,), (2,), (1,), (2,)], ["y", "zz", "x"], *EVERYTHING)
    assert len(got) == 4
    assert got.values == [[], [("b", None, 20)], [("a", None, 10)], [("b", None, 20)]]
    assert got.event_us == [[], [2], [1], [2]]
    assert got.values[0] is not got.values[1]
    assert store.read_events("m", [], ["x"], *EVERYTHING).values == []
    assert store.read_events("never_written", [(1,)], ["x"], *EVERYTHING).values == [[]]


def test_many_keys_in_one_read(store: OnlineStore) -> None:
    keys = [(i, "k") for i in range(700)]  # several SQL statements / pipelined commands
    rows = events(keys * 2, [1] * 700 + [2] * 700, x=list(range(1400)))
    assert store.append_events("big", "v1", rows, retain=DAY) == 1400
    wanted = [(i, "k") for i in range(699, -1, -2)] + [(5000, "k")]
    got = store.read_events("big", wanted, ["x"], 0, 2)
    assert got.values == [[(i,), (700 + i,)] for i in range(699, -1, -2)] + [[]]
    assert store.read_events("big", wanted, ["x"], 1, 2).values[0] == [(1399,)]


def test_columns_may_change_between_appends(store: OnlineStore) -> None:
    store.append_events("layout", "v1", events([(1,)], [1], x=[1]), retain=DAY)
    store.append_events("layout", "v2", events([(1,)], [2], x=[2.5], z=["new"]), retain=DAY)
    got = store.read_events("layout", [(1,)], ["z", "x"], *EVERYTHING)
    assert got.values == [[(None, 1), ("new", 2.5)]]


# (key, event µs): few keys and times, so ties and late events are common.
append = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40)), min_size=1, max_size=8)


@settings(store_settings, max_examples=30)
@given(batches=st.lists(append, min_size=1, max_size=6), retain_us=st.integers(1, 15))
def test_pruning_keeps_every_event_a_window_can_need(
    store: OnlineStore, batches: list[list[tuple[int, int]]], retain_us: int
) -> None:
    view = fresh_view()
    retain = timedelta(microseconds=retain_us)
    appended: dict[int, list[tuple[int, int]]] = {}  # key -> (event, id)
    ids = itertools.count()
    for rows in batches:
        numbered = [(key, event, next(ids)) for key, event in rows]
        for key, event, ident in numbered:
            appended.setdefault(key, []).append((event, ident))
        batch = events(
            [(key,) for key, _, _ in numbered],
            [event for _, event, _ in numbered],
            id=[ident for _, _, ident in numbered],
        )
        store.append_events(view, "v1", batch, retain=retain)
    got = store.read_events(view, [(0,), (1,), (2,)], ["id"], *EVERYTHING)
    for key in range(3):
        pairs = zip(got.event_us[key], got.values[key], strict=True)
        present = {(event, value[0]) for event, value in pairs}
        everything = set(appended.get(key, []))
        assert present <= everything
        if everything:
            newest = max(event for event, _ in everything)
            # A request at T >= newest with a window <= retain reads events after T - retain.
            needed = {(event, ident) for event, ident in everything if event > newest - retain_us}
            assert needed <= present


def test_an_append_prunes_what_no_window_can_need(store: OnlineStore) -> None:
    retain = timedelta(microseconds=10)
    store.append_events(
        "prune", "v1", events([(1,)] * 3 + [(2,)], [1, 5, 9, 1], x=[1, 2, 3, 4]), retain=retain
    )
    store.append_events("prune", "v1", events([(1,)], [15], x=[5]), retain=retain)
    got = store.read_events("prune", [(1,), (2,)], ["x"], *EVERYTHING)
    assert got.event_us == [[5, 9, 15], [1]]  # 1 < 15 - 10 is gone; key 2 had no new event


def test_concurrent_appends_get_distinct_increasing_sequences(store: OnlineStore) -> None:
    def writer(number: int) -> None:
        for i in range(15):
            rows = events([(1,)] * 3, [i] * 3, w=[number] * 3, i=[i] * 3)
            store.append_events("race", "v1", rows, retain=DAY)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))
    got = store.read_events("race", [(1,)], ["w", "i"], *EVERYTHING)
    assert len(got.seq[0]) == 180
    assert len(set(got.seq[0])) == 180
    for number in range(4):
        mine = sorted(
            (i, seq) for (w, i), seq in zip(got.values[0], got.seq[0], strict=True) if w == number
        )
        seqs = [seq for _, seq in mine]
        assert seqs == sorted(seqs)  # each writer's later appends have greater sequences


def test_events_live_beside_the_newest_rows(store: OnlineStore) -> None:
    store.write_batch("both", "v1", RowBatch(keys=[(1,)], features={"x": [1]}, event_ts=[T0]))
    store.append_events("both", "v1", events([(1,)], [T0], amount=[2.5]), retain=DAY)
    assert store.read("both", [(1,)], ["x"]).values == [(1,)]
    assert store.read_events("both", [(1,)], ["amount"], *EVERYTHING).values == [[(2.5,)]]
    assert store.views() == {"both": "v1"}


def test_delete_view_removes_its_events_only(store: OnlineStore) -> None:
    store.append_events("gone", "v1", events([(1,)], [1], x=[1]), retain=DAY)
    store.append_events("kept", "v1", events([(1,)], [1], x=[9]), retain=DAY)
    store.delete_view("gone")
    assert store.read_events("gone", [(1,)], ["x"], *EVERYTHING).values == [[]]
    assert store.read_events("kept", [(1,)], ["x"], *EVERYTHING).values == [[(9,)]]
    store.append_events("gone", "v2", events([(1,)], [2], y=["new"]), retain=DAY)
    assert store.read_events("gone", [(1,)], ["y"], *EVERYTHING).values == [[("new",)]]


@pytest.mark.parametrize(
    ("rows", "retain", "match"),
    [
        (events([(1,)], [1], x=[1]), timedelta(0), "retain"),
        (events([(1,)], [1], x=[1]), 10, "retain"),
        (events([(1,), (2,)], [1], x=[1, 2]), DAY, "event_ts"),
        (events([(1,)], [1], x=[1, 2]), DAY, "column 'x'"),
        (events([(1,)], [datetime(2025, 1, 1)], x=[1]), DAY, "naive"),
        (events([(1,)], ["soon"], x=[1]), DAY, "event_ts"),
        (events([(1.5,)], [1], x=[1]), DAY, "key"),
    ],
)
def test_bad_appends_are_refused_before_writing(
    store: OnlineStore, rows: RowBatch, retain: Any, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        store.append_events("bad", "v1", rows, retain=retain)
    assert store.read_events("bad", [(1,)], ["x"], *EVERYTHING).values == [[]]


def test_bad_reads_are_refused(store: OnlineStore) -> None:
    with pytest.raises(InvalidInputError, match="since_us"):
        store.read_events("v", [(1,)], ["x"], 1.5, 2)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="view name"):
        store.read_events("bad name!", [(1,)], ["x"], 0, 1)
    with pytest.raises(InvalidInputError, match="not a tuple"):
        store.read_events("v", [1], ["x"], 0, 1)  # type: ignore[list-item]


def test_views_list_event_only_views_and_keep_row_layouts(store: OnlineStore) -> None:
    store.append_events("spend", "v1", events([(1,)], [T0], amount=[2.0]), retain=DAY)
    assert store.views()["spend"] == "v1"
    # A view with newest rows too: appending events keeps the entry its rows wrote.
    store.write_batch("mixed", "v2", RowBatch(keys=[(1,)], features={"x": [1.5]}, event_ts=[T0]))
    store.append_events("mixed", "v2", events([(1,)], [T0], amount=[2.0]), retain=DAY)
    assert store.views()["mixed"] == "v2"
    assert store.read("mixed", [(1,)], ["x"]).values == [(1.5,)]
    store.delete_view("spend")
    assert "spend" not in store.views()
