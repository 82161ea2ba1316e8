"""Keys given as columns encode to exactly the bytes of the same keys given as tuples."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError
from keel.features.online import RowBatch, open_online_store
from keel.features.online.batch import prepare_batch
from keel.features.online.keys import KeyColumns, encode_keys, encode_table

INT64 = st.integers(-(2**63), 2**63 - 1)
PARTS: dict[str, tuple[Any, pa.DataType]] = {
    "int64": (INT64, pa.int64()),
    "int8": (st.integers(-128, 127), pa.int8()),
    "uint64": (st.integers(0, 2**63 - 1), pa.uint64()),
    "string": (st.text(max_size=5), pa.string()),
    "binary": (st.binary(max_size=5), pa.binary()),
    "bool": (st.booleans(), pa.bool_()),
}


@settings(deadline=None)  # the first example imports pyarrow.compute and NumPy paths
@given(
    kinds=st.lists(st.sampled_from(sorted(PARTS)), min_size=1, max_size=3),
    data=st.data(),
)
def test_columns_encode_like_tuples(kinds: list[str], data: st.DataObject) -> None:
    rows = data.draw(st.integers(0, 20))
    columns = [data.draw(st.lists(PARTS[k][0], min_size=rows, max_size=rows)) for k in kinds]
    arrays = [pa.array(values, PARTS[k][1]) for values, k in zip(columns, kinds, strict=True)]
    tuples = list(zip(*columns, strict=True))
    keys = KeyColumns(arrays)
    assert len(keys) == rows
    assert keys.encode() == encode_keys(tuples)
    assert list(keys) == tuples
    if rows:
        assert keys[rows - 1] == tuples[-1]
    # Integer columns also encode as one table, row by row the same bytes.
    table = encode_table(keys)
    if all(pa.types.is_integer(PARTS[k][1]) for k in kinds):
        assert [row.tobytes() for row in table] == encode_keys(tuples)
        batch = RowBatch(keys=keys, features={"x": [0.0] * rows}, event_ts=[1] * rows)
        assert prepare_batch("v", "1", batch, expire_after=None).keys == encode_keys(tuples)
    else:
        assert table is None
    assert encode_table(tuples) is None  # tuples are encoded one by one


def test_null_parts_and_out_of_range_integers_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="null"):
        KeyColumns([pa.array([1, None], pa.int64())]).encode()
    with pytest.raises(InvalidInputError, match="int64 range"):
        KeyColumns([pa.array([2**63], pa.uint64())]).encode()
    with pytest.raises(InvalidInputError, match="null"):
        encode_table(KeyColumns([pa.array([1, None], pa.int64())]))
    with pytest.raises(InvalidInputError, match="int64 range"):
        encode_table(KeyColumns([pa.array([1]), pa.array([2**63], pa.uint64())]))
    with pytest.raises(InvalidInputError, match="equal length"):
        KeyColumns([pa.array([1]), pa.array([1, 2])])


def test_a_store_reads_rows_written_with_key_columns(tmp_path: Any) -> None:
    with open_online_store(f"sqlite:///{tmp_path / 'online.db'}") as store:
        keys = KeyColumns([pa.array([3, -1], pa.int64()), pa.array(["a", "b"])])
        rows = RowBatch(keys=keys, features={"x": [1.5, 2.5]}, event_ts=[10, 10])
        assert store.write_batch("v", "1", rows) == 2
        assert store.read("v", [(-1, "b"), (3, "a")], ["x"]).values == [(2.5,), (1.5,)]
        events = RowBatch(
            keys=KeyColumns([pa.array([3, None], pa.int64()), pa.array(["a", "b"])]),
            features={"x": [1.0, 2.0]},
            event_ts=[10, 11],
        )
        from datetime import timedelta

        assert store.append_events("v", "1", events, retain=timedelta(days=1)) == 1
