"""Trainer params: schemas from dataclasses and pydantic models, `k=v` parsing, clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.errors import InvalidInputError
from keel.training.params import Params, ParamSchema, convert, parse_assignments


@dataclass
class LgbmParams:
    learning_rate: float = 0.1
    num_leaves: int = 31
    boosting: Literal["gbdt", "dart"] = "gbdt"
    early_stopping: bool = False
    max_depth: int | None = None
    name: str = "fraud"


class PydanticParams(pydantic.BaseModel):
    alpha: float = 1.0
    iterations: int = 100


def test_dataclass_defaults_and_overrides_from_text() -> None:
    schema = ParamSchema.of(LgbmParams)
    resolved = schema.resolve(
        parse_assignments(
            ["learning_rate=0.05", "num_leaves=15", "early_stopping=true", "boosting=dart"]
        )
    )
    assert resolved.value == LgbmParams(0.05, 15, "dart", True, None, "fraud")
    assert resolved.values == {
        "learning_rate": 0.05,
        "num_leaves": 15,
        "boosting": "dart",
        "early_stopping": True,
        "max_depth": None,
        "name": "fraud",
    }
    assert resolved.text["learning_rate"] == "0.05"
    assert resolved.text["max_depth"] == "None"


def test_values_stringified_as_reproduce_passes_them_parse_back() -> None:
    """`keel reproduce` passes str(value) of each recorded value: it must give the value back."""
    schema = ParamSchema.of(LgbmParams)
    original = LgbmParams(0.3, 7, "dart", True, 5, "x y")
    values = {k: str(v) for k, v in vars(original).items()}
    assert schema.resolve(values).value == original
    none_back = schema.resolve({"max_depth": str(None), "early_stopping": str(False)})
    assert none_back.value.max_depth is None
    assert none_back.value.early_stopping is False


def test_python_values_are_checked_and_ints_widen_to_float() -> None:
    resolved = ParamSchema.of(LgbmParams).resolve({"learning_rate": 1, "num_leaves": 8})
    assert resolved.values["learning_rate"] == 1.0
    assert isinstance(resolved.values["learning_rate"], float)
    with pytest.raises(InvalidInputError, match="'num_leaves' = True is not a valid int"):
        ParamSchema.of(LgbmParams).resolve({"num_leaves": True})


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("num_leaves=many", r"param 'num_leaves' = 'many' is not a valid int"),
        ("learning_rate=fast", r"param 'learning_rate' = 'fast' is not a valid float"),
        ("early_stopping=maybe", r"param 'early_stopping' = 'maybe' is not a valid bool"),
        ("boosting=rf", r"param 'boosting' = 'rf' is not a valid Literal"),
        ("max_depth=deep", r"param 'max_depth' = 'deep' is not a valid"),
        ("leaves=3", r"param 'leaves' is not declared by LgbmParams"),
    ],
)
def test_type_mismatches_name_the_param_value_and_type(assignment: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ParamSchema.of(LgbmParams).resolve(parse_assignments([assignment]))


def test_pydantic_schema() -> None:
    schema = ParamSchema.of(PydanticParams)
    assert schema.defaults == {"alpha": 1.0, "iterations": 100}
    assert schema.resolve({"iterations": "7"}).value == PydanticParams(alpha=1.0, iterations=7)
    with pytest.raises(InvalidInputError, match=r"'iterations' = '7\.5' is not a valid int"):
        schema.resolve({"iterations": "7.5"})


def test_a_field_without_default_must_be_given() -> None:
    @dataclass
    class Required:
        depth: int

    with pytest.raises(InvalidInputError, match="param 'depth' has no default"):
        ParamSchema.of(Required).resolve({})
    assert ParamSchema.of(Required).resolve({"depth": "4"}).values == {"depth": 4}


def test_free_params_parse_literals() -> None:
    schema = ParamSchema.of(None)
    resolved = schema.resolve(
        parse_assignments(["a=3", "b=0.5", "c=true", "d=False", "e=gbdt", "f='3'"])
    )
    assert resolved.value == {"a": 3, "b": 0.5, "c": True, "d": False, "e": "gbdt", "f": "3"}
    assert isinstance(resolved.value, Params)
    assert ParamSchema.of(Params).model is None
    with pytest.raises(InvalidInputError, match="param 'g' is \\[1\\]"):
        schema.resolve({"g": [1]})


def test_unsupported_annotation_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="annotate params with a dataclass"):
        ParamSchema.of(int)


@pytest.mark.parametrize("item", ["novalue", "=3", ""])
def test_assignments_need_a_key_and_equals(item: str) -> None:
    with pytest.raises(InvalidInputError, match="is not KEY=VALUE"):
        parse_assignments([item])


def test_assignments_refuse_a_repeated_key_and_keep_equals_in_values() -> None:
    assert parse_assignments(["expr=a=b"]) == {"expr": "a=b"}
    with pytest.raises(InvalidInputError, match="'lr' is given twice"):
        parse_assignments(["lr=1", "lr=2"])


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_ints_round_trip_through_text(value: int) -> None:
    assert convert("n", str(value), int) == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_through_text(value: float) -> None:
    assert convert("x", str(value), float) == value
