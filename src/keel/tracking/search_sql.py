"""Turn a parsed run-search filter and order-by into SQLAlchemy SELECTs (bound values only).

When the first sort key is a metric that the filter requires (a top-level AND item), that
metric becomes an INNER JOIN on latest_metrics: SQLite then walks ix_latest_metrics_key_value in
sort order and stops after max_results matches. Every other metric, param and tag condition is a
correlated EXISTS on a primary-key lookup, which lets the planner walk runs in start_time order
for the default sort (given an index on runs.start_time). Sorting by a metric the filter does
not require runs as two such queries, see split_by_sort_metric(). NOT is pushed down to the
comparisons first, so a missing key (UNKNOWN) never turns into a match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Float,
    FromClause,
    Numeric,
    Select,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

from keel.metadata.schema import experiments, latest_metrics, params, runs, tags
from keel.tracking.search import TIME_ATTRIBUTES, BoolOp, Comparison, Field, Node, OrderItem, to_nnf

_TABLES = {"metrics": latest_metrics, "params": params, "tags": tags}
_NULLABLE = {"end_time", "git_branch", "git_commit", "name", "parent_run_id", "user"}
# A text value counts as a number when it is a JSON number (what str(int|float) writes).
NUMBER_PATTERN = r"^[ \t\n\r]*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?[ \t\n\r]*$"


def run_columns() -> list[Any]:
    return [*runs.c, experiments.c.name.label("experiment_name")]


def split_by_sort_metric(tree: Node | None, order: Sequence[OrderItem]) -> list[Node | None]:
    """The filters to run one after the other so the results come out in ``order``.

    Sorting by a metric puts runs without it last. When the filter does not already require
    that metric, searching first the runs that have it (an INNER JOIN read in index order,
    which stops at max_results) and then, only if too few, those that lack it is the same
    result as one LEFT JOIN query, which would have to sort every run.
    """
    first = order[0].field if order else None
    if first is None or first.entity != "metrics" or _requires(tree, first):
        return [tree]
    has, lacks = Comparison(first, "IS NOT NULL"), Comparison(first, "IS NULL")
    if tree is None:
        return [has, lacks]
    return [BoolOp("AND", (tree, has)), BoolOp("AND", (tree, lacks))]


def _requires(tree: Node | None, field: Field) -> bool:
    if tree is None:
        return False
    tree = to_nnf(tree)
    items = tree.items if isinstance(tree, BoolOp) and tree.op == "AND" else (tree,)
    return any(isinstance(i, Comparison) and i.field == field and i.op != "IS NULL" for i in items)


def build_search(
    tree: Node | None,
    order: Sequence[OrderItem],
    *,
    dialect: str,
    experiment_ids: Sequence[int] | None = None,
    limit: int | None = None,
) -> Select[Any]:
    """SELECT runs.*, experiment name WHERE filter ORDER BY order (ties: run id) LIMIT limit."""
    builder = _Builder(dialect)
    first = order[0].field if order else None
    where = builder.where(tree, first.key if first and first.entity == "metrics" else None)
    if experiment_ids is not None:
        where = and_(where, runs.c.experiment_id.in_(list(experiment_ids)))
    ordering = builder.order_by(order)
    stmt = select(*run_columns()).select_from(builder.source).where(where).order_by(*ordering)
    return stmt if limit is None else stmt.limit(limit)


class _Builder:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.source: FromClause = runs.join(experiments, experiments.c.id == runs.c.experiment_id)
        self.inner_metrics: dict[str, FromClause] = {}
        self.count = 0

    def where(self, tree: Node | None, sort_metric: str | None) -> ColumnElement[bool]:
        if tree is None:
            return true()
        tree = to_nnf(tree)
        items = tree.items if isinstance(tree, BoolOp) and tree.op == "AND" else (tree,)
        clauses = []
        for item in items:
            if (
                isinstance(item, Comparison)
                and item.field == Field("metrics", sort_metric or "")
                and item.op != "IS NULL"
            ):
                alias = self._join_metric(item.field.key)
                if item.op != "IS NOT NULL":
                    clauses.append(_apply(alias.c.value, item, self.dialect))
                continue
            clauses.append(self.clause(item))
        return and_(true(), *clauses)

    def clause(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, BoolOp):
            parts = [self.clause(item) for item in node.items]
            return and_(*parts) if node.op == "AND" else or_(*parts)
        if not isinstance(node, Comparison):  # to_nnf leaves no Not
            raise TypeError(f"unexpected node {node!r}")
        if node.field.entity == "attributes":
            return _apply(_attribute(node.field.key), node, self.dialect)
        table = _TABLES[node.field.entity].alias(self._name("x"))
        present = [table.c.run_id == runs.c.id, table.c.key == node.field.key]
        if node.op == "IS NULL":
            return ~exists().where(*present)
        if node.op == "IS NOT NULL":
            return exists().where(*present)
        if node.field.entity != "metrics" and node.numeric:
            number = numeric_text(table.c.value, self.dialect)
            return exists().where(*present, _apply(number, node, self.dialect, decimal=True))
        return exists().where(*present, _apply(table.c.value, node, self.dialect))

    def order_by(self, order: Sequence[OrderItem]) -> list[Any]:
        items = list(order) or [_DEFAULT_ORDER]
        terms: list[Any] = []
        for item in items:
            for expr, nullable in self._sort_keys(item):
                term = expr.desc() if item.descending else expr.asc()
                terms.append(term.nulls_last() if nullable else term)
        terms.append(runs.c.id.desc() if items[0].descending else runs.c.id.asc())
        return terms

    def _sort_keys(self, item: OrderItem) -> list[tuple[Any, bool]]:
        field = item.field
        if field.entity == "attributes":
            column = _attribute(field.key)
            if field.key not in TIME_ATTRIBUTES:
                column = _text_order(column, self.dialect)
            return [(column, field.key in _NULLABLE)]
        if field.entity == "metrics" and field.key in self.inner_metrics:
            return [(self.inner_metrics[field.key].c.value, False)]
        alias = _TABLES[field.entity].alias(self._name("o"))
        on = and_(alias.c.run_id == runs.c.id, alias.c.key == field.key)
        self.source = self.source.outerjoin(alias, on)
        if field.entity == "metrics":
            return [(alias.c.value, True)]
        # Numbers first in numeric order, then other text in text order, missing last.
        text_key = _text_order(alias.c.value, self.dialect)
        return [(numeric_text(alias.c.value, self.dialect), True), (text_key, True)]

    def _join_metric(self, key: str) -> FromClause:
        if key not in self.inner_metrics:
            alias = latest_metrics.alias(self._name("m"))
            on = and_(alias.c.run_id == runs.c.id, alias.c.key == key)
            self.source = self.source.join(alias, on)
            self.inner_metrics[key] = alias
        return self.inner_metrics[key]

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"


_DEFAULT_ORDER = OrderItem(Field("attributes", "start_time"), descending=True)


def _attribute(name: str) -> ColumnElement[Any]:
    if name == "experiment":
        return experiments.c.name
    return runs.c["id" if name == "run_id" else name]


def numeric_text(column: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """The number a text column holds, NULL when it is not a JSON number."""
    if dialect == "sqlite":
        # Nested CASE: json_type() raises on invalid JSON, so it may only run after json_valid().
        number = case((func.json_type(column).in_(["integer", "real"]), cast(column, Float)))
        return case((func.json_valid(column) == 1, number))
    # numeric, not float8: a huge value must compare, not raise "out of range".
    return case((column.regexp_match(NUMBER_PATTERN), cast(column, Numeric)), else_=None)


def _text_order(column: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    # PostgreSQL compares text by the database collation; "C" makes it bytewise like SQLite.
    return column.collate("C") if dialect == "postgresql" else column


def _apply(
    column: ColumnElement[Any], node: Comparison, dialect: str, *, decimal: bool = False
) -> ColumnElement[bool]:
    # numeric_text() is NUMERIC on PostgreSQL: bind Decimals there so nothing goes through float8.
    as_decimal = decimal and dialect == "postgresql"
    op, values = node.op, [_bound(v, as_decimal) for v in node.values]
    if op in ("IS NULL", "IS NOT NULL"):
        return column.is_(None) if op == "IS NULL" else column.is_not(None)
    if op in ("IN", "NOT IN"):
        return column.in_(values) if op == "IN" else column.not_in(values)
    if "LIKE" in op:
        return _like(column, str(node.values[0]), op, dialect)
    if op in ("<", "<=", ">", ">=") and not node.numeric:
        column = _text_order(column, dialect)
    value = values[0]
    compare: dict[str, Callable[[], ColumnElement[bool]]] = {
        "=": lambda: column == value,
        "!=": lambda: column != value,
        "<": lambda: column < value,
        "<=": lambda: column <= value,
        ">": lambda: column > value,
        ">=": lambda: column >= value,
    }
    return compare[op]()


def _bound(value: str | float, as_decimal: bool) -> Any:
    if isinstance(value, str):
        return value
    if as_decimal:
        return bindparam(None, Decimal(repr(value)), type_=Numeric())
    if value.is_integer() and abs(value) < 2**63:
        return int(value)  # compares with BIGINT columns (times) without a cast
    return literal(value, Float())


def _like(column: ColumnElement[Any], pattern: str, op: str, dialect: str) -> ColumnElement[bool]:
    """LIKE is case-sensitive and ILIKE is not, on every database; backslash escapes % and _."""
    pieces = _like_pieces(pattern)
    if dialect == "sqlite" and op in ("LIKE", "NOT LIKE"):
        # SQLite's LIKE ignores ASCII case; GLOB is its case-sensitive twin.
        glob = "".join({"%": "*", "_": "?"}.get(p, _glob_literal(p)) for p in pieces)
        expr = column.op("GLOB", is_comparison=True)(glob)
    else:
        escaped = "".join(p if p in ("%", "_") else _like_literal(p) for p in pieces)
        if op.endswith("ILIKE"):
            expr = column.ilike(escaped, escape="\\")
        else:
            expr = column.like(escaped, escape="\\")
    return ~expr if op.startswith("NOT") else expr


def _like_pieces(pattern: str) -> list[str]:
    """Split a LIKE pattern into wildcards ('%', '_') and one-character literals."""
    pieces: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            pieces.append("\\" + pattern[i + 1])
            i += 2
            continue
        pieces.append(char if char in "%_" else "\\" + char)
        i += 1
    return pieces


def _glob_literal(piece: str) -> str:
    char = piece[1:]
    return f"[{char}]" if char in "*?[" else char


def _like_literal(piece: str) -> str:
    char = piece[1:]
    return "\\" + char if char in "%_\\" else char
