"""The as-of merge over a sorted stream, against a brute-force search.

The stream is cut into batches at random places (down to one row each): a key's run, and the
source row that wins for an entity row, often lie in an earlier batch than the entity row.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any
from unittest import mock

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.features.offline import DuckDBEngine, FeatureInput, JoinRequest, ViewInput, duckdb_engine
from keel.features.offline.latest_merge import ENTITY_REF, latest_rows
from tests.features.reference_pit import reference_training_set
from tests.features.test_pit_join import check_point_join, ttls

KEY_VALUES = {1: st.integers(0, 2), 2: st.sampled_from(["a", "b", "ab"])}


@st.composite
def streams(draw: st.DrawFn) -> dict[str, Any]:
    key_count = draw(st.integers(1, 2))
    key = st.tuples(*(KEY_VALUES[i + 1] for i in range(key_count)))
    time = st.integers(0, 5)  # few times: ties between source rows, and with entity times
    source = draw(st.lists(st.tuples(key, time), max_size=20))
    entities = draw(st.lists(st.tuples(key, time), min_size=1, max_size=12))
    rows = [(k, t, seq) for seq, (k, t) in enumerate(source)]
    rows += [(k, t, ENTITY_REF + row) for row, (k, t) in enumerate(entities)]
    rows.sort()
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(rows) - 1)))))
    ttl = draw(st.one_of(st.none(), st.integers(0, 3)))
    return {
        "key_count": key_count,
        "source": source,
        "entities": entities,
        "rows": rows,
        "cuts": [c for c in cuts if c < len(rows)],
        "ttl": ttl,
    }


def _batches(drawn: dict[str, Any]) -> list[pa.RecordBatch]:
    rows, key_count = drawn["rows"], drawn["key_count"]
    columns: dict[str, Any] = {}
    for i in range(key_count):
        columns[f"__k{i}"] = pa.array([r[0][i] for r in rows])
    columns["__time"] = pa.array([r[1] for r in rows], pa.int64())
    columns["__ref"] = pa.array([r[2] for r in rows], pa.int64())
    whole = pa.RecordBatch.from_pydict(columns)
    bounds = [0, *drawn["cuts"], len(rows)]
    return [whole.slice(a, b - a) for a, b in itertools.pairwise(bounds)]


def _brute_force(drawn: dict[str, Any]) -> list[int]:
    """Per entity row: the sequence of the greatest (time, sequence) of its key at or before
    its time, if within the TTL; else -1."""
    answers = []
    for key, t in drawn["entities"]:
        candidates = [
            (ev, seq) for seq, (k, ev) in enumerate(drawn["source"]) if k == key and ev <= t
        ]
        best = max(candidates, default=None)
        fresh = best is not None and (drawn["ttl"] is None or best[0] >= t - drawn["ttl"])
        answers.append(best[1] if best is not None and fresh else -1)
    return answers


@settings(max_examples=300, deadline=None)
@given(drawn=streams())
def test_the_merge_finds_the_latest_row_of_each_key_across_batches(drawn: dict[str, Any]) -> None:
    winner = latest_rows(_batches(drawn), drawn["key_count"], len(drawn["entities"]), drawn["ttl"])
    assert winner.tolist() == _brute_force(drawn)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_engine_gives_the_same_training_set_with_tiny_merge_batches(
    data: st.DataObject,
) -> None:
    """The DuckDB engine through batches of one to three rows equals the reference join (the
    hypothesis test of `test_pit_join` runs it with one batch)."""
    size = data.draw(st.integers(1, 3))
    with mock.patch.object(duckdb_engine, "_BATCH_ROWS", size):
        check_point_join(
            data,
            key_count=data.draw(st.integers(1, 2)),
            created=False,
            ttl=data.draw(ttls),
            known_at=data.draw(st.booleans()),
            default=data.draw(st.sampled_from([None, -1.0])),
        )


WIDE_KEYS = {
    "int64": st.sampled_from([-(1 << 40), 0, 7, 1 << 40, None]),  # a span past 2**32
    "string": st.sampled_from(["a", "b", "ab", "", None]),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(sorted(WIDE_KEYS)), ttl=ttls)
def test_keys_that_cannot_be_narrowed_to_32_bits_join_like_the_reference(
    data: st.DataObject, kind: str, ttl: timedelta | None
) -> None:
    """Integer keys spanning more than 2**32 and string keys are sorted as they are; narrow
    integer keys are covered by `test_pit_join`."""
    key = WIDE_KEYS[kind]
    arrow_type = pa.int64() if kind == "int64" else pa.string()
    n = data.draw(st.integers(1, 16))
    source = pa.table(
        {
            "k": pa.array([data.draw(key) for _ in range(n)], arrow_type),
            "ev": pa.array([data.draw(st.integers(0, 4)) for _ in range(n)], pa.int64()).cast(
                pa.timestamp("s", tz="UTC")
            ),
            "x": pa.array([float(i) for i in range(n)]),
        }
    )
    m = data.draw(st.integers(1, 8))
    entities = pa.table(
        {
            "k": pa.array([data.draw(key) for _ in range(m)], arrow_type),
            "t": pa.array([data.draw(st.integers(0, 5)) for _ in range(m)], pa.int64()).cast(
                pa.timestamp("s", tz="UTC")
            ),
        }
    )
    view = ViewInput("v", ("k",), source, "ev", ttl=ttl, features=(FeatureInput("x", "float64"),))
    request = JoinRequest(entities, (view,), timestamp_column="t")
    got = DuckDBEngine(threads=1).get_training_set(request)
    assert got.column("x").to_pylist() == reference_training_set(request)["x"]
