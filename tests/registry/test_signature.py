"""Signatures: inference from each input kind, JSON round trip, and every validate_input path."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError, SignatureError
from keel.registry.signature import (
    ColumnSchema,
    ColumnSpec,
    Signature,
    TensorSpec,
    infer_signature,
)


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.array([1, 2, 3], dtype="int64"),
            "amount": [9.5, 20.0, 3.25],
            "is_new": [True, False, True],
            "country": pd.Series(["FR", "DE", "US"], dtype="str"),
            "seen_at": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"], utc=True),
        }
    )


def columns(signature: Signature) -> list[tuple[str, str, str]]:
    assert isinstance(signature.inputs, ColumnSchema)
    return [(c.name, c.type, c.dtype) for c in signature.inputs.columns]


# --- inference -------------------------------------------------------------------------------


def test_infer_from_dataframe_records_each_type_and_dtype() -> None:
    signature = infer_signature(frame())
    assert columns(signature) == [
        ("user_id", "integer", "int64"),
        ("amount", "float", "float64"),
        ("is_new", "boolean", "bool"),
        ("country", "string", "str"),
        ("seen_at", "datetime", "datetime64[us, UTC]"),
    ]
    assert signature.outputs is None


def test_infer_from_object_columns_uses_the_values() -> None:
    data = pd.DataFrame(
        {"s": pd.Series(["a", None], dtype=object), "i": pd.Series([1, 2], dtype=object)}
    )
    assert columns(infer_signature(data)) == [
        ("s", "string", "object"),
        ("i", "integer", "object"),
    ]


def test_infer_from_dict_of_lists_and_of_scalars() -> None:
    assert columns(infer_signature({"amount": [1.5, 2.0], "n": [1, 2]})) == [
        ("amount", "float", "float64"),
        ("n", "integer", "int64"),
    ]
    one_row = infer_signature({"amount": 1.5, "country": "FR"})
    assert [name for name, _, _ in columns(one_row)] == ["amount", "country"]
    assert columns(one_row)[1][1] == "string"


def test_infer_from_records() -> None:
    signature = infer_signature([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert [(n, t) for n, t, _ in columns(signature)] == [("a", "integer"), ("b", "string")]


def test_infer_from_numpy_array_is_a_tensor_with_any_batch_size() -> None:
    signature = infer_signature(np.zeros((5, 4), dtype="float32"))
    assert signature.inputs == TensorSpec(dtype="float32", shape=(-1, 4))
    assert infer_signature(np.zeros((2, 3, 8))).inputs == TensorSpec("float64", (-1, 3, 8))
    assert infer_signature([[1, 2], [3, 4]]).inputs == TensorSpec("int64", (-1, 2))


def test_infer_output_spec() -> None:
    signature = infer_signature(frame(), output=np.array(["fraud", "ok", "ok"], dtype=object))
    assert signature.outputs == TensorSpec(dtype="str", shape=(-1,))
    proba = infer_signature(frame(), output=np.zeros((3, 2)))
    assert proba.outputs == TensorSpec(dtype="float64", shape=(-1, 2))
    named = infer_signature(frame(), output=pd.DataFrame({"score": [0.1, 0.2, 0.3]}))
    assert named.outputs == ColumnSchema((ColumnSpec("score", "float", "float64"),))


@pytest.mark.parametrize(
    ("example", "message"),
    [
        (pd.DataFrame(np.zeros((2, 2))), "column name 0 is a int"),
        (pd.DataFrame({"c": pd.Categorical(["a", "b"])}), r"type of column 'c' \(dtype category\)"),
        (pd.DataFrame({"e": pd.Series([None, None], dtype=object)}), "type of column 'e'"),
        (pd.DataFrame({"m": pd.Series([1, "a"], dtype=object)}), "type of column 'm'"),
        ({1, 2}, "cannot use a set as model input"),
        ("amount", "cannot use a str as model input"),
        (np.float64(1.0), "cannot use a float64"),
    ],
)
def test_infer_refuses_what_it_cannot_describe(example: object, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        infer_signature(example)


# --- JSON round trip -------------------------------------------------------------------------


def test_to_dict_is_json_safe_and_round_trips() -> None:
    for signature in (
        infer_signature(frame(), output=np.array([0, 1, 1])),
        infer_signature(np.zeros((3, 4), dtype="float32")),
    ):
        data = json.loads(json.dumps(signature.to_dict()))
        assert Signature.from_dict(data) == signature


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"inputs": {"kind": "graph"}},
        {
            "inputs": {
                "kind": "columns",
                "columns": [{"name": "a", "type": "decimal", "dtype": "x"}],
            }
        },
        {"inputs": {"kind": "tensor", "dtype": "float32", "shape": ["n"]}},
    ],
)
def test_from_dict_refuses_a_malformed_signature(data: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError, match="malformed signature"):
        Signature.from_dict(data)


# --- validate_input: columns -----------------------------------------------------------------


def test_missing_column_names_it_and_the_expected_columns() -> None:
    signature = infer_signature(frame()[["user_id", "amount"]])
    with pytest.raises(SignatureError) as caught:
        signature.validate_input({"user_id": [1]})
    assert str(caught.value) == (
        "input is missing column 'amount' (expected columns: user_id, amount)"
    )
    with pytest.raises(SignatureError, match="missing columns 'user_id', 'amount'"):
        signature.validate_input({"other": [1]})


def test_strings_in_a_float_column_name_column_and_both_types() -> None:
    signature = infer_signature(frame())
    bad = frame().assign(amount=["a", "b", "c"])
    with pytest.raises(SignatureError) as caught:
        signature.validate_input(bad)
    message = str(caught.value)
    assert "column 'amount'" in message
    assert "has string values" in message
    assert "expects float (float64)" in message


@pytest.mark.parametrize(
    ("column", "values", "found"),
    [
        ("user_id", [1.5, 2.0, 3.0], "float"),
        ("is_new", [1, 0, 1], "integer"),
        ("amount", [True, False, True], "boolean"),
        ("country", [1, 2, 3], "integer"),
        ("seen_at", ["2024-01-01", "2024-01-02", "2024-01-03"], "string"),
        ("amount", pd.Categorical(["a", "b", "a"]), "values of dtype category"),
    ],
)
def test_each_unsafe_type_change_is_refused(column: str, values: object, found: str) -> None:
    signature = infer_signature(frame())
    with pytest.raises(SignatureError, match=f"column '{column}' has {found}"):
        signature.validate_input(frame().assign(**{column: values}))


def test_extra_columns_are_dropped_and_columns_reordered() -> None:
    signature = infer_signature(frame())
    shuffled = frame()[["country", "seen_at", "amount", "is_new", "user_id"]].assign(extra=1)
    result = signature.validate_input(shuffled)
    pd.testing.assert_frame_equal(result, frame())


def test_safe_widening_is_allowed() -> None:
    signature = infer_signature(frame())
    widened = frame().assign(
        user_id=np.array([1, 2, 3], dtype="int32"), amount=np.array([9, 20, 3], dtype="int16")
    )
    result = signature.validate_input(widened)
    assert result["user_id"].dtype == np.dtype("int64")
    assert result["amount"].tolist() == [9.0, 20.0, 3.0]
    assert result["amount"].dtype == np.dtype("float64")


def test_narrower_dtypes_seen_at_save_time_take_values_that_fit() -> None:
    signature = infer_signature(
        pd.DataFrame({"n": np.array([1], dtype="int32"), "x": np.array([1.0], dtype="float32")})
    )
    result = signature.validate_input({"n": [7], "x": [0.5]})
    assert result.dtypes.tolist() == [np.dtype("int32"), np.dtype("float32")]
    with pytest.raises(SignatureError, match=r"column 'n' has values from .* int32 range"):
        signature.validate_input({"n": [2**40], "x": [0.5]})
    with pytest.raises(SignatureError, match="column 'x' has values too large for the model"):
        signature.validate_input({"n": [1], "x": [1e300]})


def test_records_dicts_and_scalars_are_accepted() -> None:
    signature = infer_signature(frame()[["user_id", "amount", "country"]])
    records = signature.validate_input(
        [
            {"country": "FR", "amount": 1, "user_id": 5},
            {"country": "DE", "amount": 2.5, "user_id": 6},
        ]
    )
    assert records.to_dict("records") == [
        {"user_id": 5, "amount": 1.0, "country": "FR"},
        {"user_id": 6, "amount": 2.5, "country": "DE"},
    ]
    scalars = signature.validate_input({"user_id": 1, "amount": 2.0, "country": "US"})
    assert scalars.shape == (1, 3)


def test_an_array_for_a_column_signature_is_refused() -> None:
    signature = infer_signature(frame()[["user_id", "amount"]])
    with pytest.raises(SignatureError, match=r"expects named columns \(user_id, amount\)"):
        signature.validate_input(np.zeros((2, 2)))


def test_naive_timestamps_for_a_utc_column_are_refused_other_zones_converted() -> None:
    signature = infer_signature(frame()[["seen_at"]])
    naive = pd.DataFrame({"seen_at": pd.to_datetime(["2024-01-01"])})
    with pytest.raises(SignatureError, match="'seen_at' has timestamps without a time zone"):
        signature.validate_input(naive)
    paris = pd.DataFrame(
        {"seen_at": pd.to_datetime(["2024-01-01 01:00"]).tz_localize("Europe/Paris")}
    )
    result = signature.validate_input(paris)
    assert result["seen_at"].iloc[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert str(result["seen_at"].dtype) == "datetime64[us, UTC]"


def test_missing_values_where_the_model_had_none_are_refused() -> None:
    signature = infer_signature(frame()[["user_id"]])
    with pytest.raises(SignatureError, match="'user_id' cannot be converted to the model's int64"):
        signature.validate_input(pd.DataFrame({"user_id": pd.array([1, None], dtype="Int64")}))


def test_a_duplicated_column_is_refused() -> None:
    signature = infer_signature(frame()[["amount"]])
    doubled = pd.DataFrame([[1.0, 2.0]], columns=["amount", "amount"])
    with pytest.raises(SignatureError, match="column 'amount' more than once"):
        signature.validate_input(doubled)


@pytest.mark.parametrize("data", [42, "amount", pd.Series([1.0]), None])
def test_unusable_input_kinds_are_refused(data: object) -> None:
    with pytest.raises(SignatureError, match=r"cannot use a .* as model input"):
        infer_signature(frame()).validate_input(data)


# --- validate_input: tensors -----------------------------------------------------------------


def test_tensor_accepts_matching_arrays_lists_and_frames() -> None:
    signature = infer_signature(np.zeros((3, 2), dtype="float64"))
    array = np.array([[1.0, 2.0]])
    assert signature.validate_input(array) is array
    assert signature.validate_input([[1, 2], [3, 4]]).dtype == np.dtype("float64")
    frame_input = pd.DataFrame({"a": [1.0], "b": [2.0]})
    np.testing.assert_array_equal(signature.validate_input(frame_input), array)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((2, 3)), r"shape \(2, 3\) but the model expects \(-1, 2\)"),
        (np.zeros(2), r"shape \(2,\) .*x\.reshape\(1, -1\)"),
        (np.zeros((1, 2, 1)), r"shape \(1, 2, 1\)"),
        (np.array([["a", "b"]]), r"dtype <U1 \(string\) which cannot be cast safely"),
        (np.array([[True, False]]), r"dtype bool \(boolean\) which cannot be cast"),
    ],
)
def test_tensor_refuses_wrong_shape_or_unsafe_dtype(data: np.ndarray, message: str) -> None:
    signature = infer_signature(np.zeros((3, 2), dtype="float64"))
    with pytest.raises(SignatureError, match=message):
        signature.validate_input(data)


def test_tensor_dtype_rules() -> None:
    ints = infer_signature(np.zeros((1, 2), dtype="int32"))
    with pytest.raises(
        SignatureError, match=r"float64 .* cannot be cast safely to the model's int32"
    ):
        ints.validate_input(np.zeros((1, 2)))
    with pytest.raises(SignatureError, match="input has values from 0 to 4294967296"):
        ints.validate_input(np.array([[0, 2**32]]))
    assert ints.validate_input(np.array([[1, 2]], dtype="int8")).dtype == np.dtype("int32")
    floats = infer_signature(np.zeros((1, 2), dtype="float32"))
    assert floats.validate_input([[0.5, 1]]).dtype == np.dtype("float32")
    text = infer_signature(np.array([["a"]], dtype=object))
    assert text.inputs == TensorSpec("str", (-1, 1))
    with pytest.raises(SignatureError, match="expects strings"):
        text.validate_input(np.array([[1]]))


# --- properties ------------------------------------------------------------------------------

_COLUMN_KINDS = {
    "int64": st.integers(-(2**63), 2**63 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "float64": st.floats(allow_nan=True, allow_infinity=True),
    "float32": st.floats(width=32, allow_nan=True),
    "bool": st.booleans(),
    "str": st.text(max_size=5),
    "datetime64[us, UTC]": st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
}


@st.composite
def matching_frames(draw: st.DrawFn) -> pd.DataFrame:
    dtypes = draw(st.lists(st.sampled_from(sorted(_COLUMN_KINDS)), min_size=1, max_size=5))
    rows = draw(st.integers(0, 6))
    data = {
        f"c{i}": pd.Series(draw(st.lists(_COLUMN_KINDS[d], min_size=rows, max_size=rows)), dtype=d)
        for i, d in enumerate(dtypes)
    }
    return pd.DataFrame(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=matching_frames(), seed=st.integers(0, 1000))
def test_validate_input_keeps_values_and_is_idempotent(original: pd.DataFrame, seed: int) -> None:
    signature = infer_signature(original)
    names = list(original.columns)
    random.Random(seed).shuffle(names)
    request = original[names].assign(unused_extra="x")

    once = signature.validate_input(request)
    pd.testing.assert_frame_equal(once, original)
    twice = signature.validate_input(once)
    pd.testing.assert_frame_equal(twice, once)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.lists(st.integers(-1000, 1000), min_size=3, max_size=3), max_size=5),
    dtype=st.sampled_from(["int16", "int64", "float32", "float64"]),
)
def test_tensor_validation_keeps_values_and_is_idempotent(
    values: list[list[int]], dtype: str
) -> None:
    signature = infer_signature(np.zeros((1, 3), dtype=dtype))
    array = np.array(values, dtype="int64").reshape(-1, 3)
    once = signature.validate_input(array)
    assert once.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(once, array)
    np.testing.assert_array_equal(signature.validate_input(once), once)
