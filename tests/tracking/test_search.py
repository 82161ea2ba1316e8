"""The run-search language: parsing, errors, and results on SQLite and PostgreSQL checked against a
pure-Python three-valued evaluation of the same filter (hypothesis writes the filters)."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, delete, select, text

from keel.errors import FilterSyntaxError
from keel.metadata import schema
from keel.project import Project, init_project
from keel.tracking.query import search_runs
from keel.tracking.search import BoolOp, Comparison, Field, Not, parse_filter, parse_order_by

T0 = 1_700_000_000_000


def rid(n: int) -> str:
    return f"{T0 + n:012x}{n:020x}"


# A small world with every awkward case: missing keys, non-numeric params, NULL names, ties,
# quotes inside values, a key that needs quoting.
RUNS: list[dict[str, Any]] = [
    {
        "n": 1,
        "experiment": "fraud",
        "name": "lgbm-a",
        "status": "finished",
        "start": 10,
        "end": 20,
        "user": "ana",
        "params": {"model": "lgbm", "lr": "0.1", "depth": "6"},
        "metrics": {"auc": 0.91, "loss": 0.3, "val-auc": 0.88},
        "tags": {"team": "risk"},
    },
    {
        "n": 2,
        "experiment": "fraud",
        "name": "xgb-b",
        "status": "finished",
        "start": 11,
        "end": 25,
        "user": "bo",
        "params": {"model": "xgb", "lr": "0.05", "depth": "10"},
        "metrics": {"auc": 0.87, "loss": 0.35},
        "tags": {"team": "growth", "note": "it's"},
    },
    {
        "n": 3,
        "experiment": "fraud",
        "name": "inject",
        "status": "failed",
        "start": 12,
        "end": 13,
        "user": "ana",
        "params": {"model": "x' OR '1'='1", "lr": "fast"},
        "metrics": {"loss": 0.5},
        "tags": {},
    },
    {
        "n": 4,
        "experiment": "fraud",
        "name": None,
        "status": "finished",
        "start": 13,
        "end": 30,
        "user": None,
        "params": {"model": "LGBM", "lr": "1e-3", "depth": "6"},
        "metrics": {"auc": 0.91},
        "tags": {"team": "risk", "note": "100%"},
    },
    {
        "n": 5,
        "experiment": "fraud",
        "name": "running",
        "status": "running",
        "start": 14,
        "end": None,
        "user": "chen",
        "params": {},
        "metrics": {},
        "tags": {},
    },
    {
        "n": 6,
        "experiment": "churn",
        "name": "lgbm-c",
        "status": "finished",
        "start": 15,
        "end": 40,
        "user": "bo",
        "params": {"model": "lgbm", "lr": "0.2", "depth": "12"},
        "metrics": {"auc": 0.95, "loss": 0.2, "val-auc": 0.93},
        "tags": {"team": "growth"},
    },
    {
        "n": 7,
        "experiment": "churn",
        "name": "[bold]x",
        "status": "killed",
        "start": 15,
        "end": 16,
        "user": "dara",
        "params": {"model": "logreg", "lr": "0.10", "depth": "x6"},
        "metrics": {"auc": 0.5},
        "tags": {"team": "risk"},
    },
    {
        "n": 8,
        "experiment": "churn",
        "name": "lgbm-d",
        "status": "finished",
        "start": 16,
        "end": 50,
        "user": "ana",
        "params": {"model": "lgbm", "lr": "1", "depth": "3"},
        "metrics": {"auc": 0.9, "loss": 0.31, "val-auc": 0.9},
        "tags": {"team": "risk"},
    },
]


def insert_runs(project: Project, runs: list[dict[str, Any]]) -> None:
    """Rows straight into the tables, so these tests do not depend on the write side."""
    with project.metadata.write() as conn:
        known = dict(conn.execute(select(schema.experiments.c.name, schema.experiments.c.id)).all())
        for name in sorted({r["experiment"] for r in runs} - set(known)):
            insert = schema.experiments.insert().values(name=name, created_at=T0)
            known[name] = conn.execute(insert).inserted_primary_key[0]
        conn.execute(
            schema.runs.insert(),
            [
                {
                    "id": rid(r["n"]),
                    "experiment_id": known[r["experiment"]],
                    "name": r["name"],
                    "status": r["status"],
                    "start_time": T0 + r["start"] * 1000,
                    "user": r["user"],
                    "end_time": None if r["end"] is None else T0 + r["end"] * 1000,
                }
                for r in runs
            ],
        )
        for table, entity in ((schema.params, "params"), (schema.tags, "tags")):
            rows = [
                {"run_id": rid(r["n"]), "key": k, "value": v}
                for r in runs
                for k, v in r[entity].items()
            ]
            if rows:
                conn.execute(table.insert(), rows)
        rows = [
            {"run_id": rid(r["n"]), "key": k, "value": v, "step": 0, "timestamp": T0}
            for r in runs
            for k, v in r["metrics"].items()
        ]
        if rows:
            conn.execute(schema.latest_metrics.insert(), rows)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    """RUNS in one project per database, shared by the read-only tests of this module."""
    root = tmp_path_factory.mktemp("world")
    init_project(root)
    url, drop = f"sqlite:///{root / 'keel.db'}", None
    if request.param == "postgres":
        server = request.getfixturevalue("pg_server")
        schema_name = f"t_{uuid.uuid4().hex[:16]}"
        engine = create_engine(server, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema_name}"))
        url, drop = f"{server}?options=-csearch_path%3D{schema_name}", schema_name
    project = Project(root, overrides={"metadata.url": url}, environ={})
    insert_runs(project, RUNS)
    yield project
    project.close()
    if drop:
        with engine.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {drop} CASCADE"))
        engine.dispose()


def found(project: Project, filter_text: str, **kwargs: Any) -> list[int]:
    return [
        int(r.id[12:], 16) for r in search_runs(project, filter_text, max_results=1000, **kwargs)
    ]


# --- results on both databases ---------------------------------------------------------------

CASES = [
    ("", {1, 2, 3, 4, 5, 6, 7, 8}),
    ("metrics.auc > 0.9", {1, 4, 6}),
    ("metrics.auc >= 0.9 and params.model = 'lgbm'", {1, 6, 8}),
    ("METRICS.auc > 0.9 AnD Params.model = 'lgbm'", {1, 6}),
    ("metrics.`val-auc` > 0.89", {6, 8}),
    ('metrics."val-auc" = 0.88', {1}),
    ("metrics.val-auc < 0.89", {1}),
    ("metrics.auc != 0.91", {2, 6, 7, 8}),  # a missing metric never matches, even with !=
    ("not metrics.auc > 0.9", {2, 7, 8}),  # ... nor under NOT
    ("metrics.auc IS NULL", {3, 5}),
    ("metrics.auc is not null and metrics.loss is null", {4, 7}),
    ("metrics.auc in (0.5, 0.87)", {2, 7}),
    ("metrics.auc not in (0.5, 0.87, 0.91)", {6, 8}),
    ("params.model = 'x'' OR ''1''=''1'", {3}),  # the whole text is one value
    ("params.model = \"x' OR '1'='1\"", {3}),
    ("params.`model' OR '1'='1` = 'lgbm'", set()),  # keys are bound values too
    ("params.model LIKE 'lg%'", {1, 6, 8}),  # LIKE is case-sensitive on both databases
    ("params.model ILIKE 'lg%'", {1, 4, 6, 8}),
    ("params.model not like '%g%'", {3, 4}),
    ("params.model LIKE '_gbm'", {1, 6, 8}),
    ("tags.note LIKE '100\\%'", {4}),
    ("tags.note = 'it''s'", {2}),
    ("params.lr > 0.09", {1, 6, 7, 8}),  # numeric: '0.10' and '1' count, 'fast' does not
    ("params.lr > '0.09'", {1, 3, 4, 6, 7, 8}),  # text order: 'fast' and '1e-3' > '0.09'
    ("params.lr = 0.1", {1, 7}),
    ("params.lr = '0.1'", {1}),
    ("params.depth < 7", {1, 4, 8}),  # 'x6' is not a number
    ("params.lr in (0.1, 1)", {1, 7, 8}),
    ("params.model in ('xgb', 'logreg')", {2, 7}),
    ("params.model not in ('xgb', 'logreg')", {1, 3, 4, 6, 8}),
    ("params.depth is null", {3, 5}),
    ("tags.team = 'risk' or tags.team = 'growth'", {1, 2, 4, 6, 7, 8}),
    ("status = 'finished' and experiment = 'churn'", {6, 8}),
    ("status in ('failed', 'killed')", {3, 7}),
    ("status != 'finished'", {3, 5, 7}),
    ("attributes.status = 'running'", {5}),
    ("name LIKE 'lgbm%'", {1, 6, 8}),
    ("name is null", {4}),
    ("name != 'lgbm-a'", {2, 3, 5, 6, 7, 8}),  # a NULL name is UNKNOWN, not different
    ("user = 'ana' and experiment != 'churn'", {1, 3}),
    (f"run_id = '{rid(3)}'", {3}),
    (f"id LIKE '%{3:020x}'", {3}),
    (f"start_time >= {T0 + 15_000}", {6, 7, 8}),
    ("start_time < '2023-11-14T22:13:32Z'", {1, 2}),
    ("end_time is null", {5}),
    ("end_time > 0", {1, 2, 3, 4, 6, 7, 8}),
]


@pytest.mark.parametrize(("filter_text", "expected"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_filter_results(world: Project, filter_text: str, expected: set[int]) -> None:
    assert set(found(world, filter_text)) == expected


def test_precedence_not_binds_tighter_than_and_than_or(world: Project) -> None:
    # OR is loosest: a OR (b AND c)
    assert set(
        found(world, "status = 'running' or experiment = 'churn' and metrics.auc > 0.9")
    ) == {5, 6}
    assert set(
        found(world, "(status = 'running' or experiment = 'churn') and metrics.auc > 0.9")
    ) == {6}
    # NOT applies to the next comparison only
    assert set(found(world, "not experiment = 'churn' and metrics.auc > 0.9")) == {1, 4}
    # De Morgan: experiment != 'churn' OR metrics.auc <= 0.9
    assert set(found(world, "not (experiment = 'churn' and metrics.auc > 0.9)")) == {
        1,
        2,
        3,
        4,
        5,
        7,
        8,
    }
    assert set(found(world, "not not status = 'running'")) == {5}


def test_experiments_argument_narrows_the_search(world: Project) -> None:
    assert set(found(world, "metrics.auc > 0.9", experiments=["churn"])) == {6}
    assert set(found(world, "", experiments=["churn", "fraud"])) == set(range(1, 9))


def test_order_by_metric_puts_missing_last_and_breaks_ties_by_id(world: Project) -> None:
    assert found(world, "", order_by="metrics.auc DESC") == [6, 4, 1, 8, 2, 7, 5, 3]
    assert found(world, "", order_by="metrics.auc") == [7, 2, 8, 1, 4, 6, 3, 5]
    assert found(world, "metrics.auc >= 0.9", order_by=["metrics.auc desc"]) == [6, 4, 1, 8]


def test_order_by_params_numbers_first_then_text_then_missing(world: Project) -> None:
    # lr: 0.1 (1), 0.05 (2), fast (3), 1e-3 (4), 0.2 (6), 0.10 (7), 1 (8); run 5 has none
    assert found(world, "", order_by="params.lr") == [4, 2, 1, 7, 6, 8, 3, 5]
    assert found(world, "", order_by="params.lr DESC") == [8, 6, 7, 1, 2, 4, 3, 5]


def test_order_by_several_keys_and_attributes(world: Project) -> None:
    by_loss = [8, 6, 7, 3, 2, 1, 4, 5]
    assert found(world, "", order_by=["experiment", "metrics.loss desc"]) == by_loss
    assert found(world, "", order_by="experiment ASC, start_time DESC") == [8, 6, 7, 5, 4, 3, 2, 1]
    assert found(world, "", order_by="name") == [7, 3, 1, 6, 8, 5, 2, 4]  # NULL name last
    assert found(world, "") == [8, 7, 6, 5, 4, 3, 2, 1]  # default: newest first


def first(project: Project, filter_text: str, order_by: str, n: int) -> list[int]:
    runs = search_runs(project, filter_text, order_by=order_by, max_results=n)
    return [int(r.id[12:], 16) for r in runs]


def test_max_results_keeps_the_first_in_order(world: Project) -> None:
    assert first(world, "", "metrics.auc DESC", 3) == [6, 4, 1]
    # Sorting by a metric reads the runs that have it, then those without: cut in both parts.
    assert first(world, "", "metrics.loss DESC", 4) == [3, 2, 8, 1]
    assert first(world, "", "metrics.loss DESC", 6) == [3, 2, 8, 1, 6, 7]
    assert first(world, "experiment = 'fraud'", "metrics.loss", 5) == [1, 2, 3, 4, 5]
    assert first(world, "experiment = 'fraud'", "metrics.loss, name DESC", 4) == [1, 2, 3, 5]


# --- parsing ------------------------------------------------------------------------------------


def cmp(entity: str, key: str, op: str, *values: str | float) -> Comparison:
    return Comparison(Field(entity, key), op, tuple(values))


def test_or_is_loosest_and_not_tightest() -> None:
    a, b, c = (cmp("metrics", k, ">", 1.0) for k in "abc")
    assert parse_filter("metrics.a > 1 or metrics.b > 1 and metrics.c > 1") == BoolOp(
        "OR", (a, BoolOp("AND", (b, c)))
    )
    assert parse_filter("not metrics.a > 1 AND metrics.b > 1") == BoolOp("AND", (Not(a), b))
    assert parse_filter("((metrics.a > 1))") == a


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ("metrics.`val-auc` >= -1", cmp("metrics", "val-auc", ">=", -1.0)),
        ('metrics."a ""b""" < .5', cmp("metrics", 'a "b"', "<", 0.5)),
        ("metric.train/loss <= 1e-3", cmp("metrics", "train/loss", "<=", 0.001)),
        ("params.lr <> '0.1'", cmp("params", "lr", "!=", "0.1")),
        ('tags.x == "it\'s"', cmp("tags", "x", "=", "it's")),
        ("params.m NOT ILIKE 'a%'", cmp("params", "m", "NOT ILIKE", "a%")),
        ("params.m not in ('a', 'b')", cmp("params", "m", "NOT IN", "a", "b")),
        ("tags.t Is Not Null", cmp("tags", "t", "IS NOT NULL")),
        ("ID = 'abc'", cmp("attributes", "run_id", "=", "abc")),
        ("attributes.status = 'failed'", cmp("attributes", "status", "=", "failed")),
        (
            "start_time > '2024-01-01T00:00:00+00:00'",
            cmp("attributes", "start_time", ">", 1_704_067_200_000.0),
        ),
        ("   ", None),
    ],
)
def test_parse(filter_text: str, expected: Any) -> None:
    assert parse_filter(filter_text) == expected


def test_order_by_forms() -> None:
    items = parse_order_by(["metrics.auc DESC", "params.`a b` asc, name"])
    assert [(i.field.label, i.descending) for i in items] == [
        ("metrics.auc", True),
        ("params.a b", False),
        ("name", False),
    ]
    assert parse_order_by(None) == parse_order_by("") == parse_order_by([]) == []


ERRORS = [
    ("metrics.auc > ", "filter: expected a value after '>' at column 15: metrics.auc > "),
    ("metrics.auc > and", "expected a value after '>' but found 'and' at column 15"),
    ("metrics.auc = 'high'", "metrics.auc must be compared with a number, got 'high'"),
    ("metrics.auc LIKE 'a%'", "metrics.auc is a number and cannot use LIKE"),
    (
        "foo = 1",
        "unknown attribute 'foo' at column 1: foo = 1; valid attributes are end_time, "
        "experiment, git_branch, git_commit, name, parent_run_id, run_id, start_time, "
        "status, user; for a logged value write metrics.foo, params.foo or tags.foo",
    ),
    ("(metrics.auc > 1", "this '(' is never closed at column 1"),
    ("(metrics.auc > 1 metrics.b > 2)", "expected AND, OR or ')' but found 'metrics.b'"),
    ("metrics.auc > 1)", "unexpected ')' (expected a '(' before it) at column 16"),
    ("metrics.a > 1 metrics.b > 2", "unexpected 'metrics.b' (expected AND, OR or the end)"),
    (
        "metrics.auc",
        "expected an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS "
        "NULL) after 'metrics.auc' at column 12",
    ),
    (
        "and metrics.a > 1",
        "expected metrics.KEY, params.KEY, tags.KEY or an attribute but found 'and' at column 1",
    ),
    ("params.x = 'abc", "unterminated string (missing closing ') at column 12"),
    ("metrics.`abc = 1", "unterminated key (missing closing `) at column 9"),
    ("metrics. = 1", "expected a key after 'metrics.' at column 9"),
    ("foo.bar = 1", "unknown prefix 'foo.' (use metrics., params., tags. or attributes.)"),
    ("metrics.auc = 1abc", "invalid number '1abc' (quote text: '1abc') at column 15"),
    ("metrics.auc # 1", "unexpected character '#' at column 13"),
    ("`x` = 1", "backticks quote a key after metrics., params. or tags. at column 1"),
    ("name = 5", "name must be compared with a quoted string, got 5"),
    ("params.x LIKE 5", "params.x must be compared with a pattern string, got 5"),
    (
        "status = 'done'",
        "unknown status 'done' at column 8: status = 'done'; valid statuses: "
        "failed, finished, killed, running",
    ),
    ("params.x in (1, 'a')", "the list after IN mixes numbers and strings"),
    ("params.x in 1", "expected '(' after IN at column 13"),
    ("params.x in (1 2)", "expected ',' or ')' in the list but found '2' at column 16"),
    ("params.x is 1", "expected NULL or NOT NULL after IS but"[:36]),
    ("start_time > '2024-01-01'", "start_time value '2024-01-01' has no time zone"),
    ("start_time > 'yesterday'", "start_time value 'yesterday' is not an ISO 8601 time"),
    ("params.model = 'x\\' OR 1=1 --'", "unexpected character '-'"),
]


@pytest.mark.parametrize(("filter_text", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_filter_errors(filter_text: str, message: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(filter_text)
    assert message in str(info.value)
    assert str(info.value).startswith("filter: ")


@pytest.mark.parametrize(
    ("order_by", "message"),
    [
        (
            "metrics.auc DOWN",
            "order by: expected ASC, DESC or ',' after 'metrics.auc' at column 13",
        ),
        ("bogus", "order by: unknown attribute 'bogus'"),
        (
            "metrics.auc desc,",
            "order by: expected metrics.KEY, params.KEY, tags.KEY or an attribute at column 18",
        ),
    ],
)
def test_order_by_errors(order_by: str, message: str) -> None:
    with pytest.raises(FilterSyntaxError, match=re.escape(message)):
        parse_order_by(order_by)


# --- the same filters evaluated in Python (three-valued logic) ---------------------------------

Expr = tuple[Any, ...]  # ("cmp", entity, key, op, values) | ("and"|"or", a, b) | ("not", a)
NUMBER = re.compile(r"[ \t\n\r]*-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?[ \t\n\r]*")
ATTRS = {
    "status": ["finished", "failed", "running", "killed"],
    "name": ["lgbm-a", "inject"],
    "experiment": ["fraud", "churn"],
    "user": ["ana", "bo"],
}


def like(value: str, pattern: str, ignore_case: bool) -> bool:
    """SQL LIKE with backslash as the escape character."""
    pieces = re.findall(r"\\.|.", pattern, re.S)
    regex = "".join(".*" if p == "%" else "." if p == "_" else re.escape(p[-1]) for p in pieces)
    return re.fullmatch(regex, value, re.S | (re.I if ignore_case else 0)) is not None


def holds(run: dict[str, Any], expr: Expr) -> bool | None:
    """True, False or None (UNKNOWN), like SQL."""
    kind = expr[0]
    if kind == "not":
        inner = holds(run, expr[1])
        return None if inner is None else not inner
    if kind in ("and", "or"):
        left, right = holds(run, expr[1]), holds(run, expr[2])
        if kind == "and":
            return False if False in (left, right) else None if None in (left, right) else True
        return True if True in (left, right) else None if None in (left, right) else False
    _, entity, key, op, values = expr
    value = run[entity].get(key) if entity != "attributes" else run.get(key)
    if op in ("IS NULL", "IS NOT NULL"):
        return (value is None) == (op == "IS NULL")
    if value is not None and entity in ("params", "tags") and isinstance(values[0], float):
        value = float(value) if NUMBER.fullmatch(value) else None
    if value is None:
        return None
    if "LIKE" in op:
        return like(value, values[0], "ILIKE" in op) != op.startswith("NOT")
    if op in ("IN", "NOT IN"):
        return (value in values) == (op == "IN")
    v = values[0]
    return {
        "=": value == v,
        "!=": value != v,
        "<": value < v,
        "<=": value <= v,
        ">": value > v,
        ">=": value >= v,
    }[op]


def render(expr: Expr, draw: Any) -> str:
    """Filter text for ``expr``, with random keyword case, key quoting and parentheses."""
    kind = expr[0]
    word = lambda w: draw(st.sampled_from([w, w.lower(), w.title()]))  # noqa: E731
    if kind == "not":
        return f"{word('NOT')} ({render(expr[1], draw)})"
    if kind in ("and", "or"):
        return f"({render(expr[1], draw)}) {word(kind.upper())} ({render(expr[2], draw)})"
    _, entity, key, op, values = expr
    if entity == "attributes":
        left = draw(st.sampled_from([key, f"attributes.{key}"]))
    else:
        quoted = [f"`{key}`", f'"{key}"'] + ([key] if re.fullmatch(r"[\w./-]+", key) else [])
        left = f"{entity}.{draw(st.sampled_from(quoted))}"
    shown = [repr(v) if isinstance(v, float) else "'" + v.replace("'", "''") + "'" for v in values]
    if op in ("IN", "NOT IN"):
        return f"{left} {word(op)} ({', '.join(shown)})"
    if op in ("IS NULL", "IS NOT NULL"):
        return f"{left} {word(op)}"
    op = draw(st.sampled_from(["!=", "<>"])) if op == "!=" else op
    return f"{left} {word(op) if 'LIKE' in op else op} {shown[0]}"


TEXTS = ["lgbm", "xgb", "LGBM", "0.1", "x' OR '1'='1", "it's", "risk", "growth", "100%", "6"]
PATTERNS = ["lg%", "%g%", "_gbm", "LG%", "%", "x'%", "0._", "100\\%", "%i%"]
NUMBERS = [0.05, 0.1, 0.5, 0.87, 0.9, 0.91, 1.0, 6.0, 10.0]


@st.composite
def comparisons(draw: Any) -> Expr:
    entity = draw(st.sampled_from(["metrics", "params", "tags", "attributes"]))
    if entity == "attributes":
        key = draw(st.sampled_from(sorted(ATTRS)))
        pool: list[Any] = ATTRS[key]
        ops = ["=", "!=", "IN", "NOT IN"] + (["LIKE", "<", ">="] if key != "status" else [])
    else:
        key = draw(
            st.sampled_from(
                {
                    "metrics": ["auc", "loss", "val-auc"],
                    "params": ["model", "lr", "depth"],
                    "tags": ["team", "note"],
                }[entity]
            )
        )
        numeric = entity == "metrics" or draw(st.booleans())
        pool = NUMBERS if numeric else TEXTS
        ops = ["=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN", "IS NULL", "IS NOT NULL"]
        ops += [] if numeric else ["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]
    op = draw(st.sampled_from(ops))
    if "LIKE" in op:
        return ("cmp", entity, key, op, (draw(st.sampled_from(PATTERNS)),))
    if op in ("IS NULL", "IS NOT NULL"):
        return ("cmp", entity, key, op, ())
    count = draw(st.integers(1, 3)) if "IN" in op else 1
    return ("cmp", entity, key, op, tuple(draw(st.sampled_from(pool)) for _ in range(count)))


expressions = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.tuples(st.just("not"), inner),
        st.tuples(st.sampled_from(["and", "or"]), inner, inner),
    ),
    max_leaves=5,
)


def as_record(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "id": rid(run["n"])}


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_filters_match_python_evaluation(world: Project, data: st.DataObject) -> None:
    expr = data.draw(expressions)
    filter_text = render(expr, data.draw)
    expected = {run["n"] for run in RUNS if holds(as_record(run), expr) is True}
    assert set(found(world, filter_text)) == expected, filter_text


def sort_reference(runs: list[dict[str, Any]], order: list[tuple[str, str, bool]]) -> list[int]:
    """Sorted as documented: missing last; params/tags numbers before text; ties by run id."""

    def key_of(run: dict[str, Any], entity: str, key: str) -> tuple[int, Any]:
        value = run.get(key) if entity == "attributes" else run[entity].get(key)
        if value is None:
            return (2, None)
        if entity in ("params", "tags"):
            number = float(value) if NUMBER.fullmatch(value) else None
            return (0, (number, value)) if number is not None else (1, value)
        return (0, value)

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for entity, key, descending in order:
            (ga, va), (gb, vb) = key_of(a, entity, key), key_of(b, entity, key)
            if ga != gb:
                return -1 if ga < gb else 1
            if va != vb:
                return (-1 if va < vb else 1) * (-1 if descending else 1)
        return (-1 if a["id"] < b["id"] else 1) * (-1 if order[0][2] else 1)

    return [r["n"] for r in sorted(runs, key=functools.cmp_to_key(compare))]


ORDER_KEYS = [
    ("metrics", "auc"),
    ("metrics", "loss"),
    ("params", "lr"),
    ("params", "depth"),
    ("tags", "team"),
    ("attributes", "name"),
    ("attributes", "status"),
    ("attributes", "experiment"),
    ("attributes", "start_time"),
    ("attributes", "end_time"),
]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_order_matches_python_sort(world: Project, data: st.DataObject) -> None:
    picked = data.draw(st.lists(st.sampled_from(ORDER_KEYS), min_size=1, max_size=3, unique=True))
    order = [(e, k, data.draw(st.booleans())) for e, k in picked]
    expr = data.draw(st.one_of(st.none(), expressions))
    runs = [as_record(r) for r in RUNS if expr is None or holds(as_record(r), expr) is True]
    records = [{**r, "start_time": r["start"], "end_time": r["end"]} for r in runs]
    order_by = [
        f"{k if e == 'attributes' else f'{e}.`{k}`'} {'DESC' if d else 'ASC'}" for e, k, d in order
    ]
    filter_text = "" if expr is None else render(expr, data.draw)
    assert found(world, filter_text, order_by=order_by) == sort_reference(records, order)


# --- generated data ----------------------------------------------------------------------------

run_data = st.fixed_dictionaries(
    {
        "experiment": st.sampled_from(["fraud", "churn"]),
        "name": st.one_of(st.none(), st.sampled_from(["lgbm-a", "inject", "x"])),
        "status": st.sampled_from(["finished", "failed", "running", "killed"]),
        "user": st.one_of(st.none(), st.sampled_from(["ana", "bo"])),
        "params": st.dictionaries(
            st.sampled_from(["model", "lr", "depth"]),
            st.sampled_from([*TEXTS, "1e-3", "0.10", "fast"]),
            max_size=3,
        ),
        "tags": st.dictionaries(
            st.sampled_from(["team", "note"]), st.sampled_from(TEXTS), max_size=2
        ),
        "metrics": st.dictionaries(
            st.sampled_from(["auc", "loss", "val-auc"]), st.sampled_from(NUMBERS), max_size=3
        ),
    }
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(runs=st.lists(run_data, min_size=1, max_size=8), data=st.data())
def test_generated_runs_match_python_evaluation(
    project: Project, runs: list[dict[str, Any]], data: st.DataObject
) -> None:
    with project.metadata.write() as conn:
        for table in (schema.params, schema.tags, schema.latest_metrics, schema.runs):
            conn.execute(delete(table))
    world = [{**r, "n": i, "start": i, "end": i + 1} for i, r in enumerate(runs, start=1)]
    insert_runs(project, world)
    for _ in range(3):
        expr = data.draw(expressions)
        expected = {r["n"] for r in world if holds(as_record(r), expr) is True}
        assert set(found(project, render(expr, data.draw))) == expected
