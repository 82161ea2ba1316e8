"""Trainer params: a schema read from the trainer's ``params`` annotation, and values parsed
from ``--param k=v`` text to the declared types before any work starts.

    @dataclass
    class FraudParams:
        learning_rate: float = 0.1
        num_leaves: int = 31

    schema = ParamSchema.of(FraudParams)
    schema.resolve(parse_assignments(["learning_rate=0.05"]))
    # ResolvedParams(value=FraudParams(learning_rate=0.05, num_leaves=31), ...)

A dataclass or a pydantic model with defaults gives a typed schema; without one (no
annotation, ``dict`` or ``keel.Params``) params are a free dict whose text values are parsed as
Python literals (``3`` -> 3, ``0.5`` -> 0.5, ``true`` -> True, anything else stays text).
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from keel.errors import InvalidInputError


class Params(dict[str, Any]):
    """Free params, for a trainer that declares no schema: names to str, int, float or bool.

    >>> def fraud(training: TrainingData, params: Params) -> Any:   # doctest: +SKIP
    ...     return LGBMClassifier(num_leaves=params.get("num_leaves", 31))
    """


_SCALARS: tuple[type, ...] = (bool, int, float, str)


@dataclass(frozen=True)
class ResolvedParams:
    """``value`` is what the trainer receives; ``values`` the typed values by name (for
    train.json); ``text`` the same stringified (for the run's params)."""

    value: Any
    values: dict[str, Any]

    @property
    def text(self) -> dict[str, str]:
        return {key: _as_text(value) for key, value in self.values.items()}


@dataclass(frozen=True)
class ParamSchema:
    """The params a trainer declares: ``fields`` (name -> type) and ``defaults``, built into
    ``model`` (a dataclass or pydantic class); ``model`` None means a free dict.

    >>> ParamSchema.of(None).resolve({"depth": "3"}).values
    {'depth': 3}
    """

    model: type | None
    fields: dict[str, Any]
    defaults: dict[str, Any]

    @classmethod
    def of(cls, annotation: Any) -> ParamSchema:
        """The schema of a ``params`` annotation (a class, or None/dict/Any for a free dict)."""
        if annotation is None or annotation is Any or annotation in (dict, Mapping, Params):
            return cls(None, {}, {})
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            return cls._of_dataclass(annotation)
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            return cls._of_pydantic(annotation)
        if typing.get_origin(annotation) in (dict, Mapping):
            return cls(None, {}, {})
        raise InvalidInputError(
            f"the params annotation {annotation!r} is not supported; annotate params with a "
            "dataclass or a pydantic model with defaults, or with dict"
        )

    @classmethod
    def _of_dataclass(cls, model: type) -> ParamSchema:
        hints = typing.get_type_hints(model)
        fields: dict[str, Any] = {}
        defaults: dict[str, Any] = {}
        for item in dataclasses.fields(model):
            fields[item.name] = hints.get(item.name, Any)
            if item.default is not dataclasses.MISSING:
                defaults[item.name] = item.default
            elif item.default_factory is not dataclasses.MISSING:
                defaults[item.name] = item.default_factory()
        return cls(model, fields, defaults)

    @classmethod
    def _of_pydantic(cls, model: type) -> ParamSchema:
        fields: dict[str, Any] = {}
        defaults: dict[str, Any] = {}
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            fields[name] = info.annotation
            if not info.is_required():
                defaults[name] = info.get_default(call_default_factory=True)
        return cls(model, fields, defaults)

    def resolve(self, given: Mapping[str, Any]) -> ResolvedParams:
        """Defaults overridden by ``given`` (text from the command line, or Python values),
        each converted to its declared type; unknown names and mismatches raise."""
        if self.model is None:
            values = {str(k): _literal(v) if isinstance(v, str) else v for k, v in given.items()}
            for key, value in values.items():
                if not isinstance(value, _SCALARS):
                    raise InvalidInputError(
                        f"param {key!r} is {value!r} ({type(value).__name__}); free params are "
                        "str, int, float or bool — declare a params dataclass for other types"
                    )
            return ResolvedParams(Params(values), dict(values))
        unknown = sorted(set(given) - set(self.fields))
        if unknown:
            raise InvalidInputError(
                f"param {unknown[0]!r} is not declared by {self.model.__name__}; the params are "
                f"{sorted(self.fields)}"
            )
        values = dict(self.defaults)
        for key, raw in given.items():
            values[key] = convert(key, raw, self.fields[key])
        missing = sorted(set(self.fields) - set(values))
        if missing:
            raise InvalidInputError(
                f"param {missing[0]!r} has no default; pass it with --param {missing[0]}=VALUE"
            )
        try:
            instance = self.model(**values)
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidInputError(f"params {values!r} are invalid: {exc}") from exc
        return ResolvedParams(instance, values)


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["lr=0.1", "depth=3"]`` -> ``{"lr": "0.1", "depth": "3"}``; a repeated name or an
    item without ``=`` raises.

    >>> parse_assignments(["lr=0.1"])
    {'lr': '0.1'}
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInputError(f"--param {item!r} is not KEY=VALUE; write e.g. --param lr=0.1")
        if key in out:
            raise InvalidInputError(f"param {key!r} is given twice; give it once")
        out[key] = value
    return out


def convert(name: str, value: Any, expected: Any) -> Any:
    """``value`` as the type ``expected`` (text is parsed; Python values are checked).

    >>> convert("depth", "3", int)
    3
    """
    origin = typing.get_origin(expected)
    if expected is Any:
        return _literal(value) if isinstance(value, str) else value
    if origin in (Union, types.UnionType):
        options = typing.get_args(expected)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return convert(name, value, option)
            except InvalidInputError:
                continue
        raise _mismatch(name, value, expected)
    if origin is typing.Literal:
        for choice in typing.get_args(expected):
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise _mismatch(name, value, expected)
    if expected in _SCALARS:
        return _scalar(name, value, expected)
    if isinstance(expected, type) and isinstance(value, expected):
        return value
    raise _mismatch(name, value, expected)


def _scalar(name: str, value: Any, expected: type) -> Any:
    if isinstance(value, str) and expected is not str:
        value = _parse_text(name, value, expected)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise _mismatch(name, value, expected)


def _parse_text(name: str, text: str, expected: type) -> Any:
    if expected is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise _mismatch(name, text, bool)
    try:
        return expected(text.strip())
    except ValueError:
        raise _mismatch(name, text, expected) from None


def _mismatch(name: str, value: Any, expected: Any) -> InvalidInputError:
    shown = getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
    return InvalidInputError(
        f"param {name!r} = {value!r} is not a valid {shown}; pass a {shown}, e.g. "
        f"--param {name}={_example(expected)}"
    )


def _example(expected: Any) -> str:
    return {bool: "true", int: "3", float: "0.1", str: "text"}.get(expected, "VALUE")


def _literal(text: str) -> Any:
    """Free-dict text: a Python literal (number, True/False, quoted text) or the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, _SCALARS) else text


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
