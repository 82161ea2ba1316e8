"""On-demand feature views: the function contract, both paths, casting, errors and parity."""

from __future__ import annotations

import math
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError
from keel.features.definitions import Field
from keel.features.offline.frames import arrow_type
from keel.features.ondemand import (
    OnDemandFeatureView,
    RequestField,
    check_parity,
    compute_offline,
    compute_online,
    on_demand_feature_view,
    synthetic_table,
)
from keel.features.repo import load_definitions
from keel.features.versioning import canonical_on_demand, on_demand_version

Columns = dict[str, Any]


def ratio(columns: Columns) -> Columns:
    # NaN in, NaN out: a NULL input gives a NULL ratio on both paths.
    return {
        "ratio": columns["amount"] / (np.abs(columns["total"]) + 1.0),
        "big": columns["amount"] > 100.0,
        "label": np.where(columns["country"] == "FR", "home", "abroad"),
    }


def make(function: Any = ratio, **changes: Any) -> OnDemandFeatureView:
    args: dict[str, Any] = {
        "inputs": ["user_stats:total", "user_stats:country"],
        "request": [RequestField("amount", "float64")],
        "outputs": [Field("ratio", "float64"), Field("big", "bool"), Field("label", "string")],
        "function": function,
        "owner": "risk",
    }
    args.update(changes)
    view = OnDemandFeatureView(changes.pop("name", "risk"), **args)
    return view.with_input_dtypes({"total": "float64", "country": "string"})


def expected(amount: float | None, total: float | None, country: str | None) -> Columns:
    """The outputs computed by hand, one row at a time, in plain Python."""
    a = math.nan if amount is None else amount
    t = math.nan if total is None else total
    value = a / (abs(t) + 1.0)
    return {
        "ratio": None if math.isnan(value) else value,
        "big": a > 100.0,
        "label": "home" if country == "FR" else "abroad",
    }


rows_strategy = st.lists(
    st.tuples(
        st.none() | st.floats(-1e6, 1e6, allow_nan=False),
        st.none() | st.floats(-1e6, 1e6, allow_nan=False),
        st.none() | st.sampled_from(["FR", "DE", ""]),
    ),
    min_size=1,
    max_size=40,
)


def as_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    amount, total, country = (list(c) for c in zip(*rows, strict=True))
    return pa.table(
        {
            "amount": pa.array(amount, pa.float64()),
            "total": pa.array(total, pa.float64()),
            "country": pa.array(country, pa.string()),
        }
    )


@settings(max_examples=40, deadline=None)
@given(rows_strategy)
def test_vectorized_equals_per_row_equals_reference(rows: list[tuple[Any, ...]]) -> None:
    view = make()
    table = as_table(rows)
    offline = compute_offline(view, table)
    assert offline.schema.types == [pa.float64(), pa.bool_(), pa.string()]
    want = [expected(*row) for row in rows]
    assert offline.to_pylist() == want
    online = [compute_online(view, values) for values in table.to_pylist()]
    assert online == want
    report = check_parity(view, table)
    assert report.ok
    assert (report.rows, report.mismatches) == (len(rows), {"ratio": 0, "big": 0, "label": 0})


def deviation(columns: Columns) -> Columns:
    x = columns["amount"]
    return {"ratio": x - x[~np.isnan(x)].mean(), "big": x > 0, "label": x.astype(str)}


def counted(columns: Columns) -> Columns:
    n = len(columns["amount"])
    return {"ratio": np.full(n, float(n)), "big": np.zeros(n, bool), "label": np.full(n, "x")}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=30, unique=True))
def test_a_function_that_looks_across_rows_is_caught(amounts: list[float]) -> None:
    table = pa.table(
        {"amount": amounts, "total": [1.0] * len(amounts), "country": ["FR"] * len(amounts)}
    )
    report = check_parity(make(deviation), table)
    assert not report.ok
    # Online every row is its own mean, so its deviation is 0; offline only the mean row's is.
    offline = compute_offline(make(deviation), table).column("ratio").to_pylist()
    assert report.mismatches["ratio"] == sum(1 for v in offline if v != 0.0)
    assert report.mismatches["big"] == report.mismatches["label"] == 0
    example = report.examples[0]
    assert (example.output, example.online) == ("ratio", 0.0)
    assert example.offline == offline[example.row]
    assert example.inputs["amount"] == amounts[example.row]
    assert "'risk' gives other values online" in report.describe()


def test_len_is_caught_and_examples_point_into_a_sample() -> None:
    table = pa.table(
        {"amount": [float(i) for i in range(500)], "total": [0.0] * 500, "country": ["x"] * 500}
    )
    report = check_parity(make(counted), table, rows=50)
    assert report.rows == 50
    assert report.mismatches == {"ratio": 50, "big": 0, "label": 0}
    assert len(report.examples) == 3  # three examples per output at most
    for example in report.examples:
        assert (example.offline, example.online) == (50.0, 1.0)
        assert example.inputs["amount"] == float(example.row)  # the row of the full table
    assert check_parity(make(counted), table.slice(0, 1)).ok  # one row: both paths see n=1


def test_rel_tol_allows_float_noise() -> None:
    def noisy(columns: Columns) -> Columns:
        x = columns["amount"]
        return {"ratio": x * (1 + 1e-12 * len(x)), "big": x > 0, "label": np.full(len(x), "")}

    table = pa.table({"amount": [1.0, 2.0, 3.0], "total": [0.0] * 3, "country": ["x"] * 3})
    assert check_parity(make(noisy), table).mismatches["ratio"] == 3
    assert check_parity(make(noisy), table, rel_tol=1e-9).ok


def test_nulls_arrive_as_documented_on_both_paths() -> None:
    seen: list[dict[str, tuple[str, Any]]] = []

    def record(columns: Columns) -> Columns:
        seen.append({k: (v.dtype.str, v.tolist()[-1]) for k, v in columns.items()})
        return {"out": np.zeros(len(columns["i"]))}

    view = OnDemandFeatureView(
        "nulls",
        inputs=["v:i", "v:b", "v:s", "v:t", "v:d", "v:f"],
        outputs=[Field("out", "float64")],
        function=record,
    ).with_input_dtypes(
        {"i": "int32", "b": "bool", "s": "string", "t": "timestamp", "d": "date", "f": "float32"}
    )
    table = synthetic_table(view.input_dtypes, rows=4)
    compute_offline(view, table.slice(0, 2))  # row 0 all NULL, row 1 none
    compute_online(view, table.slice(0, 1).to_pylist()[0])
    compute_online(view, table.slice(1, 1).to_pylist()[0])
    offline, null_row, full_row = seen
    assert null_row["i"][0] == offline["i"][0] == "<f8"  # an int array holding a NULL: float64
    assert math.isnan(null_row["i"][1])
    assert full_row["i"][0] == "<i4"
    assert null_row["b"] == ("|O", None)
    assert offline["b"] == ("|O", full_row["b"][1])
    assert null_row["s"] == ("|O", None)
    assert null_row["t"][0] == full_row["t"][0] == offline["t"][0] == "<M8[us]"
    assert null_row["d"][0] == full_row["d"][0] == "<M8[D]"
    assert (null_row["t"][1], null_row["d"][1]) == (None, None)  # NaT
    assert null_row["f"][0] == full_row["f"][0] == "<f4"


def test_unbound_inputs_follow_their_values() -> None:
    def echo(columns: Columns) -> Columns:
        return {"out": columns["x"]}

    view = OnDemandFeatureView(
        "echo", inputs=["v:x"], outputs=[Field("out", "float64")], function=echo
    )
    assert view.input_dtypes == {}
    assert compute_online(view, {"x": None}) == {"out": None}
    assert compute_online(view, {"x": 3}) == {"out": 3.0}
    with pytest.raises(InvalidInputError, match="has no input 'y'; its inputs are \\['x'\\]"):
        view.with_input_dtypes({"y": "int64"})


@pytest.mark.parametrize(
    ("dtype", "values", "want"),
    [
        ("int8", np.array([1.0, np.nan, -3.0]), [1, None, -3]),
        ("uint16", [7, None, 0], [7, None, 0]),
        (
            "float32",
            np.array([0.1, 1e-3, np.nan]),
            [float(np.float32(0.1)), float(np.float32(1e-3)), None],
        ),
        ("bool", np.array([0, 2, 1]), [False, True, True]),
        ("string", np.array(["a", None, "é"], dtype=object), ["a", None, "é"]),
        ("binary", [b"\x00", None, b"z"], [b"\x00", None, b"z"]),
        (
            "date",
            np.array(["2024-02-29", "NaT", "1970-01-01"], dtype="datetime64[D]"),
            [date(2024, 2, 29), None, date(1970, 1, 1)],
        ),
        (
            "timestamp",
            np.array(
                ["2024-01-01T12:00:00.000001", "NaT", "1969-12-31T23:59:59"], dtype="datetime64[us]"
            ),
            [
                datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=UTC),
                None,
                datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
            ],
        ),
    ],
)
def test_outputs_are_cast_to_declared_dtypes(dtype: str, values: Any, want: list[Any]) -> None:
    def give(columns: Columns) -> Columns:
        index = columns["i"]
        return {"out": values if len(index) == 3 else [values[int(index[0])]]}

    view = OnDemandFeatureView(
        "cast", inputs=["v:i"], outputs=[Field("out", dtype)], function=give
    ).with_input_dtypes({"i": "int64"})
    table = pa.table({"i": [0, 1, 2]})
    offline = compute_offline(view, table).column("out")
    assert offline.type == arrow_type(dtype)
    assert offline.to_pylist() == want
    assert [compute_online(view, {"i": i})["out"] for i in range(3)] == want
    assert check_parity(view, table).ok


@pytest.mark.parametrize(
    ("dtype", "value", "message"),
    [
        ("int64", 1.5, "'int64' but the function returned"),
        ("int8", 300, "'int8' but the function returned"),
        ("string", 3, "'string' but the function returned"),
        ("float64", "x", "'float64' but the function returned"),
        ("date", np.datetime64("2024-01-01T10:00", "us"), "'date' but the function returned"),
    ],
)
def test_values_that_do_not_fit_fail_on_both_paths(dtype: str, value: Any, message: str) -> None:
    view = OnDemandFeatureView(
        "bad",
        inputs=["v:i"],
        outputs=[Field("out", dtype)],
        function=lambda c: {"out": np.array([value] * len(c["i"]))},
    )
    with pytest.raises(
        InvalidInputError, match=f"output 'out' of on-demand feature view 'bad'.*{message}"
    ):
        compute_offline(view, pa.table({"i": [1, 2]}))
    with pytest.raises(
        InvalidInputError, match=f"output 'out' of on-demand feature view 'bad'.*{message}"
    ):
        compute_online(view, {"i": 1})


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (lambda c: 1 / 0, "'bad' failed on 2 rows: ZeroDivisionError"),
        (lambda c: [1, 2], "'bad' returned list, not a mapping"),
        (
            lambda c: {"other": c["i"]},
            "'bad' returned no column 'out' \\(it returned \\['other'\\]\\)",
        ),
        (lambda c: {"out": np.zeros(5)}, "'bad' returned 'out' of shape \\(5,\\) for 2 input rows"),
        (lambda c: {"out": 1.0}, "'bad' returned 'out' of shape \\(\\) for 2 input rows"),
    ],
)
def test_function_failures_name_the_view(result: Any, message: str) -> None:
    view = OnDemandFeatureView(
        "bad", inputs=["v:i"], outputs=[Field("out", "float64")], function=result
    )
    with pytest.raises(InvalidInputError, match=message):
        compute_offline(view, pa.table({"i": [1, 2]}))


def test_a_dataframe_result_and_extra_columns_are_accepted() -> None:
    import pandas as pd

    view = OnDemandFeatureView(
        "frame",
        inputs=["v:i"],
        outputs=[Field("out", "int64")],
        function=lambda c: pd.DataFrame({"out": c["i"] * 2, "scratch": c["i"]}),
    )
    assert compute_offline(view, pa.table({"i": [1, 2]})).to_pydict() == {"out": [2, 4]}
    assert compute_online(view, {"i": 5}) == {"out": 10}


def test_missing_inputs_and_bad_values() -> None:
    view = make()
    with pytest.raises(InvalidInputError, match="needs columns \\['country'\\], which the table"):
        compute_offline(view, pa.table({"amount": [1.0], "total": [1.0]}))
    with pytest.raises(InvalidInputError, match="needs values for \\['amount'\\]"):
        compute_online(view, {"total": 1.0, "country": "FR"})
    with pytest.raises(InvalidInputError, match="column 'total' \\(string\\) of the table cannot"):
        compute_offline(view, pa.table({"amount": [1.0], "total": ["x"], "country": ["FR"]}))
    stamp = OnDemandFeatureView(
        "stamp",
        inputs=["v:t"],
        outputs=[Field("out", "timestamp")],
        function=lambda c: {"out": c["t"]},
    ).with_input_dtypes({"t": "timestamp"})
    with pytest.raises(InvalidInputError, match="is naive; pass a timezone-aware datetime"):
        compute_online(stamp, {"t": datetime(2024, 1, 1)})
    paris = datetime(2024, 1, 1, 13, tzinfo=UTC) + timedelta(hours=0)
    assert compute_online(stamp, {"t": paris}) == {"out": paris}
    assert (
        compute_offline(
            view,
            pa.table(
                {
                    "amount": pa.array([], pa.float64()),
                    "total": pa.array([], pa.float64()),
                    "country": pa.array([], pa.string()),
                }
            ),
        ).num_rows
        == 0
    )


def test_the_online_path_needs_neither_arrow_nor_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    view = make()
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "pandas", None)
    row = compute_online(view, {"amount": 150.0, "total": 49.0, "country": "FR"})
    assert row == {"ratio": 3.0, "big": True, "label": "home"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inputs": ["user_stats"]}, "has inputs \\('user_stats',\\); write 'view:feature'"),
        ({"inputs": ["a:b:c"]}, "feature ref 'a:b:c'"),
        ({"inputs": "user_stats:total"}, "pass inputs as a list"),
        ({"inputs": ["a:total", "b:total"]}, "receives column 'total' twice"),
        ({"request": [RequestField("total", "int64")]}, "receives column 'total' twice"),
        ({"outputs": []}, "needs outputs=\\[Field"),
        ({"outputs": [Field("x", "int64"), Field("x", "int64")]}, "declares output 'x' twice"),
        ({"outputs": [Field("country", "string")]}, "output 'country' is also an input"),
        ({"outputs": [Field("x", "int64", default=0)]}, "on-demand outputs have none"),
        ({"function": "ratio"}, "has function 'ratio'; pass a function"),
        ({"request": [("amount", "float64")]}, "request takes RequestField"),
    ],
)
def test_construction_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        make(**changes)
    with pytest.raises(InvalidInputError, match="dtype 'float'"):
        RequestField("amount", "float")


def test_decorator_names_the_view_after_the_function() -> None:
    @on_demand_feature_view(inputs=["v:x"], outputs=[Field("y", "float64")], owner="risk")
    def doubled(columns: Columns) -> Columns:
        return {"y": columns["x"] * 2}

    assert isinstance(doubled, OnDemandFeatureView)
    assert (doubled.name, doubled.owner, doubled.output_names) == ("doubled", "risk", ("y",))
    assert compute_online(doubled, {"x": 2.5}) == {"y": 5.0}
    named = on_demand_feature_view("other", inputs=["v:x"], outputs=[Field("y", "float64")])
    assert named(doubled.function).name == "other"


def test_synthetic_table_is_seeded_and_has_nulls() -> None:
    dtypes = {"a": "int8", "b": "string", "c": "timestamp", "d": "bool", "e": "uint64"}
    table = synthetic_table(dtypes)
    assert table.num_rows == 64
    assert table.schema.types == [
        pa.int8(),
        pa.string(),
        pa.timestamp("us", "UTC"),
        pa.bool_(),
        pa.uint64(),
    ]
    rows = table.to_pylist()
    assert all(v is None for v in rows[0].values())
    assert all(v is not None for v in rows[1].values())
    assert all(0 < table.column(c).null_count < 40 for c in dtypes)
    assert synthetic_table(dtypes).equals(table)
    assert not synthetic_table(dtypes, seed=1).equals(table)


VIEW_FILE = """
import numpy as np
from keel.features.definitions import Field
from keel.features.offline.frames import arrow_type
from keel.features.ondemand import on_demand_feature_view

@on_demand_feature_view(inputs=["v:x"], outputs=[Field("y", "float64")], owner={owner!r})
def scaled(columns):
    return {{"y": columns["x"] * {factor}}}
"""


def test_version_follows_the_function_body_not_the_owner(tmp_path: Path) -> None:
    def version(**values: Any) -> str:
        path = tmp_path / "defs.py"
        path.write_text(VIEW_FILE.format(**{"owner": "risk", "factor": 2, **values}))
        (view,) = load_definitions(path).on_demand
        return on_demand_version(view)

    first = version()
    assert version() == first
    assert version(owner="fraud") == first  # the decorator is metadata
    assert version(factor=3) != first
    (view,) = load_definitions(tmp_path / "defs.py").on_demand
    definition = canonical_on_demand(view)
    assert (definition["kind"], definition["inputs"], definition["function"]) == (
        "on_demand",
        ["v:x"],
        "scaled",
    )


def test_timestamps_sent_as_iso_text_are_read_online() -> None:
    from keel.features.ondemand_values import _micros

    assert _micros("2026-03-01T12:00:00+00:00")[0] == np.datetime64("2026-03-01T12:00:00", "us")
    assert _micros("2026-03-01T13:00:00+01:00")[0] == np.datetime64("2026-03-01T12:00:00", "us")
    with pytest.raises(InvalidInputError, match="naive"):
        _micros("2026-03-01T12:00:00")
    with pytest.raises(InvalidInputError, match="not ISO 8601"):
        _micros("yesterday")
