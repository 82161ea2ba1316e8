"""The run-search language: a tokenizer and a recursive-descent parser into a small tree.

    filter     := or_expr
    or_expr    := and_expr (OR and_expr)*
    and_expr   := not_expr (AND not_expr)*
    not_expr   := NOT not_expr | '(' or_expr ')' | comparison
    comparison := field (= | != | <> | < | <= | > | >=) value
                | field [NOT] (LIKE | ILIKE) 'pattern'
                | field [NOT] IN '(' value (',' value)* ')'
                | field IS [NOT] NULL
    field      := metrics.KEY | params.KEY | tags.KEY | attribute
    order_by   := field [ASC | DESC] (',' field [ASC | DESC])*

Keywords are case-insensitive; KEY may be quoted with backticks or double quotes. A comparison
on a missing metric, param or tag is UNKNOWN and the filter follows SQL's three-valued logic, so
a run missing the key never matches a comparison on it, not even under NOT. keel.tracking.
search_sql turns the tree into SQL with bound parameters only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from keel.errors import FilterSyntaxError
from keel.tracking.search_lexer import Token, tokenize

ENTITIES = ("metrics", "params", "tags")
TEXT_ATTRIBUTES = ("experiment", "git_branch", "git_commit", "name", "parent_run_id", "run_id")
TIME_ATTRIBUTES = ("end_time", "start_time")
ATTRIBUTES = tuple(sorted((*TEXT_ATTRIBUTES, *TIME_ATTRIBUTES, "status", "user")))
_ATTRIBUTE_ALIASES = {"id": "run_id", "experiment_name": "experiment"}
STATUSES = ("failed", "finished", "killed", "running")
COMPARE_OPS = ("=", "!=", "<", "<=", ">", ">=")
NEGATED = {
    "=": "!=",
    "!=": "=",
    "<": ">=",
    ">=": "<",
    ">": "<=",
    "<=": ">",
    "LIKE": "NOT LIKE",
    "NOT LIKE": "LIKE",
    "ILIKE": "NOT ILIKE",
    "NOT ILIKE": "ILIKE",
    "IN": "NOT IN",
    "NOT IN": "IN",
    "IS NULL": "IS NOT NULL",
    "IS NOT NULL": "IS NULL",
}

Value = str | float


@dataclass(frozen=True)
class Field:
    """What a comparison or an order-by item is about: entity 'attributes' or one of ENTITIES."""

    entity: str
    key: str

    @property
    def label(self) -> str:
        return self.key if self.entity == "attributes" else f"{self.entity}.{self.key}"


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: str  # a key of NEGATED
    values: tuple[Value, ...] = ()  # str for a quoted string, float for a number

    @property
    def numeric(self) -> bool:
        return any(isinstance(v, float) for v in self.values)


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND | OR
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Comparison | BoolOp | Not


@dataclass(frozen=True)
class OrderItem:
    field: Field
    descending: bool


def parse_filter(text: str) -> Node | None:
    """Parse a filter; None for an empty one (every run matches).

    >>> parse_filter("metrics.auc > 0.9 and params.model = 'lgbm'")
    BoolOp(op='AND', items=(Comparison(...), Comparison(...)))
    """
    parser = _Parser(text, "filter")
    if parser.peek().kind == "end":
        return None
    node = parser.or_expr()
    token = parser.peek()
    if token.kind != "end":
        expected = "AND, OR or the end" if token.text != ")" else "a '(' before it"
        parser.fail(f"unexpected {token.shown} (expected {expected})", token)
    return node


def parse_order_by(items: str | Sequence[str] | None) -> list[OrderItem]:
    """Parse order-by items such as "metrics.auc DESC" (a list, or one comma-separated string).

    >>> parse_order_by(["metrics.auc DESC", "params.lr"])
    [OrderItem(field=Field('metrics', 'auc'), descending=True), OrderItem(...)]
    """
    texts = [items] if isinstance(items, str) else list(items or ())
    result: list[OrderItem] = []
    for text in filter(str.strip, texts):
        parser = _Parser(text, "order by")
        while True:
            field = parser.field()
            descending = False
            token = parser.peek()
            if token.kind == "word" and token.value.upper() in ("ASC", "DESC"):
                descending = parser.take().value.upper() == "DESC"
                token = parser.peek()
            result.append(OrderItem(field, descending))
            if token.kind == "end":
                break
            if token.kind != "comma":
                parser.fail(f"expected ASC, DESC or ',' after '{field.label}'", token)
            parser.take()
    return result


def to_nnf(node: Node, negate: bool = False) -> Node:
    """Push NOT down to the comparisons (De Morgan); exact under three-valued logic."""
    if isinstance(node, Not):
        return to_nnf(node.item, not negate)
    if isinstance(node, BoolOp):
        op = ("OR" if node.op == "AND" else "AND") if negate else node.op
        return BoolOp(op, tuple(to_nnf(item, negate) for item in node.items))
    return Comparison(node.field, NEGATED[node.op], node.values) if negate else node


def fields_of(node: Node | None) -> list[Field]:
    """The fields a filter mentions, in order of first appearance."""
    if node is None:
        return []
    if isinstance(node, Comparison):
        return [node.field]
    children = node.items if isinstance(node, BoolOp) else (node.item,)
    found: list[Field] = []
    for child in children:
        found.extend(f for f in fields_of(child) if f not in found)
    return found


class _Parser:
    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.what = what
        self.tokens = tokenize(text, what)
        self.pos = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def is_word(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "word" and token.value.upper() in words

    def fail(self, message: str, token: Token, hint: str = "") -> NoReturn:
        text = f"{self.what}: {message} at column {token.column}: {self.text}"
        raise FilterSyntaxError(text + (f"; {hint}" if hint else ""))

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.is_word("OR"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("OR", tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.is_word("AND"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else BoolOp("AND", tuple(items))

    def not_expr(self) -> Node:
        if self.is_word("NOT"):
            self.take()
            return Not(self.not_expr())
        token = self.peek()
        if token.kind == "lparen":
            self.take()
            node = self.or_expr()
            found = self.peek()
            if found.kind == "end":
                self.fail("this '(' is never closed", token)
            if found.kind != "rparen":
                self.fail(f"expected AND, OR or ')'{_but(found)}", found)
            self.take()
            return node
        return self.comparison()

    def field(self) -> Field:
        token = self.take()
        if token.kind == "key":
            if token.entity in ENTITIES:
                return Field(token.entity, token.value)
            return self._attribute(token.value, token)
        if token.kind == "word" and token.value.upper() not in _KEYWORDS:
            return self._attribute(token.value, token)
        return self.fail(
            f"expected metrics.KEY, params.KEY, tags.KEY or an attribute{_but(token)}",
            token,
        )

    def _attribute(self, name: str, token: Token) -> Field:
        canonical = _ATTRIBUTE_ALIASES.get(name.lower(), name.lower())
        if canonical not in ATTRIBUTES:
            self.fail(
                f"unknown attribute '{name}'",
                token,
                f"valid attributes are {', '.join(ATTRIBUTES)}; "
                f"for a logged value write metrics.{name}, params.{name} or tags.{name}",
            )
        return Field("attributes", canonical)

    def comparison(self) -> Comparison:
        field = self.field()
        token = self.take()
        if token.kind == "op":
            return self._checked(field, token.value, (self._value(token),), token)
        word = token.value.upper() if token.kind == "word" else ""
        if word == "IS":
            negated = self.is_word("NOT") and bool(self.take())
            if not self.is_word("NULL"):
                self.fail(f"expected NULL or NOT NULL after IS{_but(self.peek())}", self.peek())
            self.take()
            return Comparison(field, "IS NOT NULL" if negated else "IS NULL")
        if word == "NOT" and self.is_word("IN", "LIKE", "ILIKE"):
            word = "NOT " + self.take().value.upper()
        if word in ("IN", "NOT IN"):
            return self._checked(field, word, self._value_list(token), token)
        if word in ("LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"):
            return self._checked(field, word, (self._value(token),), token)
        return self.fail(
            f"expected an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL) "
            f"after '{field.label}'{_but(token)}",
            token,
        )

    def _value(self, after: Token) -> Value:
        token = self.take()
        if token.kind == "string":
            return token.value
        if token.kind == "number":
            return float(token.value)
        return self.fail(f"expected a value after '{after.text}'{_but(token)}", token)

    def _value_list(self, after: Token) -> tuple[Value, ...]:
        if self.peek().kind != "lparen":
            self.fail(f"expected '(' after {after.text.upper()}", self.peek())
        opening = self.take()
        values = [self._value(opening)]
        while self.peek().kind == "comma":
            values.append(self._value(self.take()))
        if self.peek().kind != "rparen":
            self.fail(f"expected ',' or ')' in the list{_but(self.peek())}", self.peek())
        self.take()
        return tuple(values)

    def _checked(self, field: Field, op: str, values: tuple[Value, ...], at: Token) -> Comparison:
        has_number = any(isinstance(v, float) for v in values)
        if has_number and any(isinstance(v, str) for v in values):
            self.fail(f"the list after {op} mixes numbers and strings", at)
        is_like = "LIKE" in op
        if field.entity == "metrics" or field.label in TIME_ATTRIBUTES:
            if is_like:
                self.fail(f"{field.label} is a number and cannot use {op}", at)
            values = tuple(self._number(field, v, at) for v in values)
        elif (field.entity == "attributes" or is_like) and has_number:
            kind = "a pattern string" if is_like else "a quoted string"
            number = next(v for v in values if isinstance(v, float))
            self.fail(f"{field.label} must be compared with {kind}, got {number:g}", at)
        if field.label == "status" and op in ("=", "!=", "IN", "NOT IN"):
            for value in values:
                if value not in STATUSES:
                    self.fail(
                        f"unknown status {value!r}", at, f"valid statuses: {', '.join(STATUSES)}"
                    )
        return Comparison(field, op, values)

    def _number(self, field: Field, value: Value, at: Token) -> float:
        if isinstance(value, float):
            return value
        if field.entity == "attributes":
            return _epoch_ms(value, self, field, at)
        return self.fail(f"{field.label} must be compared with a number, got {value!r}", at)


def _but(token: Token) -> str:
    return "" if token.kind == "end" else f" but found {token.shown}"


_KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE", "ASC", "DESC"}


def _epoch_ms(value: str, parser: _Parser, field: Field, at: Token) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        why = "is not an ISO 8601 time" if moment is None else "has no time zone"
        parser.fail(
            f"{field.label} value {value!r} {why}",
            at,
            "write e.g. '2024-05-01T00:00:00Z' or epoch milliseconds",
        )
    return float(int(moment.timestamp() * 1000))
