"""The packed row format: every kind, nulls and projections survive a pack/decode round trip."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError
from keel.features.online.codec import Layout, layout_for, pack_rows
from keel.features.online.columns import to_column
from keel.features.online.keys import encode_key

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KIND_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "i": st.integers(-(2**63), 2**63 - 1),
    "f": st.floats(allow_nan=False),
    "b": st.booleans(),
    "s": st.text(max_size=8),
    "y": st.binary(max_size=8),
    "t": st.integers(-(2**40), 2**50).map(lambda us: EPOCH + timedelta(microseconds=us)),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[int, dict[str, list[Any]]]:
    rows = draw(st.integers(0, 6))
    kinds = draw(st.lists(st.sampled_from(sorted(KIND_VALUES)), min_size=1, max_size=12))
    columns = {}
    for i, kind in enumerate(kinds):
        value = st.none() | KIND_VALUES[kind]
        columns[f"c{i}"] = draw(st.lists(value, min_size=rows, max_size=rows))
    return rows, columns


@settings(max_examples=150, deadline=None)
@given(table=tables(), with_prefix=st.booleans())
def test_pack_then_decode_gives_back_every_value(
    table: tuple[int, dict[str, list[Any]]], with_prefix: bool
) -> None:
    rows, raw = table
    columns = {name: to_column(name, values, rows) for name, values in raw.items()}
    layout = layout_for("v", "v1", columns)
    order = np.arange(rows, dtype=np.int64)
    packed = pack_rows(
        layout, list(columns.values()), rows, (order, order) if with_prefix else None
    )
    start = 16 if with_prefix else 0
    decoded = [layout.decode(blob, start) for blob in packed.rows()]
    assert decoded == [tuple(values[i] for values in raw.values()) for i in range(rows)]


def test_layout_spec_round_trips_to_the_same_id() -> None:
    layout = Layout("view", "v3", ["a", "b"], "fs")
    again = Layout.from_spec(layout.spec())
    assert (again.id, again.names, again.kinds, again.version) == (
        layout.id,
        ("a", "b"),
        "fs",
        "v3",
    )
    assert Layout("view", "v4", ["a", "b"], "fs").id != layout.id
    assert Layout("view", "v3", ["a", "b"], "fi").id != layout.id
    assert Layout("other", "v3", ["a", "b"], "fs").id != layout.id


def test_projection_picks_reorders_and_fills_missing_features() -> None:
    columns = {"a": to_column("a", [1], 1), "b": to_column("b", [2.5], 1)}
    layout = layout_for("v", "v1", columns)
    values = layout.decode(pack_rows(layout, list(columns.values()), 1).rows()[0], 0)
    assert layout.projector(("a", "b")) is None  # the stored order: no copy
    for wanted, expected in [
        (("b", "a"), (2.5, 1)),
        (("b",), (2.5,)),
        (("a", "zz"), (1, None)),
        ((), ()),
    ]:
        project = layout.projector(wanted)
        assert project is not None
        assert project(values) == expected


def test_nan_is_a_value_not_a_null() -> None:
    column = to_column("x", [math.nan, None], 2)
    assert column.kind == "f"
    assert column.nulls.tolist() == [False, True]


def test_key_encoding_is_typed_and_prefix_free() -> None:
    assert encode_key((1, 23)) != encode_key((12, 3))
    assert encode_key(("a", "bc")) != encode_key(("ab", "c"))
    assert encode_key((1,)) != encode_key((True,)) != encode_key(("1",))
    assert encode_key((np.int64(7), np.str_("x"))) == encode_key((7, "x"))
    assert encode_key((np.bool_(True),)) == encode_key((True,))
    with pytest.raises(InvalidInputError, match=r"entity key \(\) is empty"):
        encode_key(())
