"""A PostgreSQL table as a feature-view source, against the real server: checked at apply,
the same training sets as the same rows in Parquet, full and incremental materialization with
the time range pushed into SQL, pushes inserted into the table, and no password recorded."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.errors import InvalidInputError, StoreError
from keel.features.definitions import Entity, FeatureView, Field
from keel.features.materialize import last_run, us_of
from keel.features.offline.duckdb_scan import ScanRange
from keel.features.postgres_source import RowFilter, connect_kwargs
from keel.features.registry import apply_definitions, get_feature_view
from keel.features.repo import validate_view
from keel.features.sources import PostgresSource
from keel.features.store import FeatureStore
from keel.features.versioning import versioned
from keel.project import Project

T0 = datetime(2026, 3, 1, tzinfo=UTC)
USER = Entity("user", join_keys={"user_id": "int64"})
FIELDS = [
    Field("spend", "float64", default=-1.0),
    Field("visits", "int32"),
    Field("price", "float64"),
    Field("country", "string"),
    Field("vip", "bool"),
    Field("since", "date"),
    Field("blob", "binary"),
    Field("last_seen", "timestamp"),
]
TX = """CREATE TABLE tx (user_id bigint, event_ts timestamptz, created_ts timestamptz,
    spend double precision, visits integer, price numeric(10, 2), country text, vip boolean,
    since date, blob bytea, last_seen timestamptz, meta jsonb)"""
LOCAL = "CREATE TABLE tx_local (user_id bigint, event_ts timestamp, spend double precision)"
TX_ARROW = pa.schema(
    [
        ("user_id", pa.int64()),
        ("event_ts", pa.timestamp("us", "UTC")),
        ("created_ts", pa.timestamp("us", "UTC")),
        ("spend", pa.float64()),
        ("visits", pa.int32()),
        ("price", pa.float64()),
        ("country", pa.string()),
        ("vip", pa.bool_()),
        ("since", pa.date32()),
        ("blob", pa.binary()),
        ("last_seen", pa.timestamp("us", "UTC")),
    ]
)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def execute(url: str, statement: str, rows: list[tuple[Any, ...]] | None = None) -> list[Any]:
    with psycopg.connect(**connect_kwargs(url)) as conn, conn.cursor() as cur:
        if rows is None:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
        cur.executemany(statement, rows)
        return []


def insert_tx(url: str, rows: list[tuple[Any, ...]]) -> None:
    names = ", ".join(TX_ARROW.names)
    marks = ", ".join(["%s"] * len(TX_ARROW.names))
    execute(url, f"INSERT INTO tx ({names}) VALUES ({marks})", rows)


def tx_rows(count: int, seed: int) -> list[tuple[Any, ...]]:
    """Rows with distinct event times per user (no exact ties), NULLs, and created times that
    are sometimes days after the event (backfills the as-known-at rule must hide)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        event = T0 + timedelta(hours=5 * i + rng.randint(0, 4))
        created = event + timedelta(hours=rng.choice([0, 0, 7, 40]))
        spend = None if rng.random() < 0.15 else round(rng.uniform(-50, 50), 2)
        rows.append(
            (
                rng.choice([1, 2, 3]),
                event,
                created,
                spend,
                rng.randint(0, 9),
                round(rng.uniform(0, 99), 2),
                rng.choice(["fr", "de", None]),
                rng.random() < 0.5,
                date(2020, 1, 1) + timedelta(days=rng.randint(0, 900)),
                bytes([rng.randint(0, 255)] * 3),
                event - timedelta(minutes=rng.randint(0, 600)),
            )
        )
    return rows


@pytest.fixture
def pg_tables(pg_url: str) -> str:
    execute(pg_url, TX)
    execute(pg_url, LOCAL)
    return pg_url


def pg_view(url: str | None, features: list[Field], **source: Any) -> FeatureView:
    table = source.pop("table", "tx")
    return FeatureView(
        "pg_view",
        entity=USER,
        source=PostgresSource(table, url=url, event_timestamp="event_ts", **source),
        features=features,
        owner="risk",
    )


def test_apply_checks_the_view_against_the_table_columns(
    pg_tables: str, sqlite_project: Project
) -> None:
    validate_view(pg_view(pg_tables, FIELDS, created_timestamp="created_ts"), sqlite_project)
    with pytest.raises(InvalidInputError, match="'nope', which the source does not have"):
        validate_view(pg_view(pg_tables, [Field("nope", "float64")]), sqlite_project)
    with pytest.raises(
        InvalidInputError, match="declared 'int64' but the source column is 'int32'"
    ):
        validate_view(pg_view(pg_tables, [Field("visits", "int64")]), sqlite_project)
    with pytest.raises(InvalidInputError, match=r"'meta' is declared 'float64'.* 'string'"):
        validate_view(pg_view(pg_tables, [Field("meta", "float64")]), sqlite_project)
    local = [Field("spend", "float64")]
    with pytest.raises(InvalidInputError, match="naive timestamps; declare the source's time_zone"):
        validate_view(pg_view(pg_tables, local, table="tx_local"), sqlite_project)
    validate_view(pg_view(pg_tables, local, table="tx_local", time_zone="UTC"), sqlite_project)
    with pytest.raises(InvalidInputError, match=r"'missing'.*does not exist; create the table"):
        validate_view(pg_view(pg_tables, local, table="missing"), sqlite_project)
    down = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    with pytest.raises(StoreError, match=r"'tx' at .*:1/test cannot be reached"):
        validate_view(pg_view(down, local), sqlite_project)
    with pytest.raises(InvalidInputError, match="metadata store is not PostgreSQL; pass url="):
        validate_view(pg_view(None, local), sqlite_project)


def test_a_source_is_a_table_or_a_query_with_a_postgres_url() -> None:
    with pytest.raises(InvalidInputError, match="exactly one"):
        PostgresSource(event_timestamp="ts")
    with pytest.raises(InvalidInputError, match="exactly one"):
        PostgresSource("tx", query="SELECT 1", event_timestamp="ts")
    with pytest.raises(InvalidInputError, match=r"not 'table' or 'schema\.table'"):
        PostgresSource("a.b.c", event_timestamp="ts")
    with pytest.raises(InvalidInputError, match="names a 'sqlite' database"):
        PostgresSource("tx", url="sqlite:///x.db", event_timestamp="ts")


def test_a_run_reads_the_union_of_its_scan_ranges() -> None:
    points = ScanRange(10, 100, new_files=(), after_us=50, created_after_us=40)
    events = ScanRange(5, 100, new_files=(), after_us=50)
    assert RowFilter.covering([points, events], 100) == RowFilter(5, 100, 50, 40)
    assert RowFilter.covering([events], 100) == RowFilter(5, 100, 50, None)
    full = ScanRange(None, 100)
    assert RowFilter.covering([full, events], 100) == RowFilter(None, 100, None, None)


def test_reads_keep_types_push_the_time_filter_down_and_only_read(pg_tables: str) -> None:
    rows = tx_rows(40, seed=3)
    insert_tx(pg_tables, rows)
    source = PostgresSource("tx", url=pg_tables, event_timestamp="event_ts")
    table = source.read()
    assert table.schema.field("price").type == pa.float64()
    assert table.schema.field("meta").type == pa.string()  # unmapped types arrive as text
    assert table.select(TX_ARROW.names).cast(TX_ARROW).sort_by("event_ts") == pa.Table.from_pylist(
        [dict(zip(TX_ARROW.names, r, strict=True)) for r in rows], TX_ARROW
    )
    start, end, after = day(2), day(6), day(5)
    window = source.read(columns=["event_ts"], rows=RowFilter(us_of(start), us_of(end)))
    expected = sorted(r[1] for r in rows if start <= r[1] <= end)
    assert window.column("event_ts").to_pylist() == expected
    newer = RowFilter(us_of(start), us_of(end), after_us=us_of(after))
    assert source.read(columns=["event_ts"], rows=newer).num_rows == sum(
        1 for r in rows if after < r[1] <= end
    )
    # A naive column is filtered with a margin (its zone offset is applied by the engine):
    # never fewer rows than the exact filter keeps.
    local = [(1, datetime(2026, 3, 1) + timedelta(hours=h), 1.0) for h in range(0, 96, 3)]
    execute(pg_tables, "INSERT INTO tx_local VALUES (%s, %s, %s)", local)
    paris = PostgresSource(
        "tx_local", url=pg_tables, event_timestamp="event_ts", time_zone="Europe/Paris"
    )
    got = set(paris.read(rows=RowFilter(us_of(start), us_of(end))).column("event_ts").to_pylist())
    zone = ZoneInfo("Europe/Paris")
    exact = {r[1] for r in local if start <= r[1].replace(tzinfo=zone) <= end}
    assert exact
    assert exact <= got
    assert len(got) < len(local)
    # Rows tied on both times come back in one order whatever order they were stored in.
    tied = [(1, day(1), day(1), float(v)) for v in (3, 1, 2)]
    for name, order in (("ties_a", tied), ("ties_b", tied[::-1])):
        execute(
            pg_tables, f"CREATE TABLE {name} (k bigint, e timestamptz, c timestamptz, v float8)"
        )
        execute(pg_tables, f"INSERT INTO {name} VALUES (%s, %s, %s, %s)", order)
    a, b = (PostgresSource(n, url=pg_tables, event_timestamp="e") for n in ("ties_a", "ties_b"))
    assert a.read() == b.read()
    assert a.read().column("v").to_pylist() == [1.0, 2.0, 3.0]
    percent = PostgresSource(
        query="SELECT * FROM tx WHERE country LIKE 'f%' -- French",
        url=pg_tables,
        event_timestamp="event_ts",
    )
    assert percent.read().num_rows == sum(1 for r in rows if r[6] == "fr")
    writes = PostgresSource(
        query="SELECT * FROM tx WHERE nextval('keel_no_seq') > 0",
        url=pg_tables,
        event_timestamp="event_ts",
    )
    execute(pg_tables, "CREATE SEQUENCE keel_no_seq")
    with pytest.raises(InvalidInputError, match="a source query must only read"):
        writes.read()


TRAINING = """
from keel.features import Aggregation, Entity, FeatureView, Field, ParquetSource
from keel.features.sources import PostgresSource

URL = {url!r}
FIELDS = [
    Field("spend", "float64", default=-1.0), Field("visits", "int32"), Field("price", "float64"),
    Field("country", "string"), Field("vip", "bool"), Field("since", "date"),
    Field("blob", "binary"), Field("last_seen", "timestamp"),
]
user = Entity("user", join_keys={{"user_id": "int64"}})
spend_2d = [Aggregation("spend", "sum", "2d", default=0.0), Aggregation("spend", "count", "1d")]


def views(name, pg, parquet, **kw):
    return [
        FeatureView(f"pg_{{name}}", entity=user, source=pg, owner="risk", **kw),
        FeatureView(f"pq_{{name}}", entity=user, source=parquet, owner="risk", **kw),
    ]


times = dict(event_timestamp="event_ts", created_timestamp="created_ts")
pg_stats, pq_stats = views(
    "stats",
    PostgresSource("tx", url=URL, **times),
    ParquetSource("data/tx.parquet", **times),
    features=FIELDS,
    aggregations=spend_2d,
    ttl="3d",
)
local = dict(event_timestamp="event_ts", time_zone="Europe/Paris")
pg_local, pq_local = views(
    "local",
    PostgresSource(query="SELECT * FROM tx_local WHERE spend IS NOT NULL", url=URL, **local),
    ParquetSource("data/local.parquet", **local),
    features=[Field("spend", "float64")],
)
"""


def test_training_sets_equal_those_of_the_same_rows_in_parquet(
    pg_tables: str, sqlite_project: Project
) -> None:
    root = sqlite_project.root
    rows = tx_rows(80, seed=11)
    insert_tx(pg_tables, rows)
    columns = [dict(zip(TX_ARROW.names, r, strict=True)) for r in rows]
    (root / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(columns, TX_ARROW), root / "data" / "tx.parquet")
    # Wall times across the autumn DST change in Paris, one of them ambiguous.
    local = [
        (1 + i % 2, datetime(2026, 10, 24) + timedelta(minutes=47 * i), float(i)) for i in range(90)
    ]
    execute(pg_tables, "INSERT INTO tx_local VALUES (%s, %s, %s)", local)
    local_arrow = pa.schema(
        [("user_id", pa.int64()), ("event_ts", pa.timestamp("us")), ("spend", pa.float64())]
    )
    local_table = pa.Table.from_pylist(
        [dict(zip(local_arrow.names, r, strict=True)) for r in local], local_arrow
    )
    pq.write_table(local_table, root / "data" / "local.parquet")
    (root / "features.py").write_text(TRAINING.format(url=pg_tables))
    applied = apply_definitions(sqlite_project)
    assert {a.name for a in applied} == {"pg_stats", "pq_stats", "pg_local", "pq_local"}
    entity_times = [T0 + timedelta(hours=7 * k) for k in range(60)]
    entities = pa.table(
        {
            "user_id": pa.array([1 + k % 4 for k in range(60)], pa.int64()),
            "ts": pa.array(entity_times, pa.timestamp("us", "UTC")),
        }
    )
    outputs = [f.name for f in FIELDS] + ["spend_sum_2d", "spend_count_1d"]
    with FeatureStore(sqlite_project) as store:
        both = store.get_training_set(
            entities, ["pg_stats", "pq_stats"], timestamp_column="ts", full_feature_names=True
        ).table
        local_times = [
            datetime(2026, 10, 24, tzinfo=UTC) + timedelta(minutes=31 * k) for k in range(150)
        ]
        local_entities = pa.table(
            {
                "user_id": pa.array([1 + k % 2 for k in range(150)], pa.int64()),
                "ts": pa.array(local_times, pa.timestamp("us", "UTC")),
            }
        )
        zoned = store.get_training_set(
            local_entities, ["pg_local", "pq_local"], timestamp_column="ts", full_feature_names=True
        ).table
    for name in outputs:
        assert both.column(f"pg_stats__{name}") == both.column(f"pq_stats__{name}"), name
    assert both.column("pg_stats__spend").null_count < both.num_rows // 2  # values were found
    assert zoned.column("pg_local__spend") == zoned.column("pq_local__spend")
    assert zoned.column("pg_local__spend").null_count < 10


MATERIALIZED = """
from keel.features import Aggregation, Entity, FeatureView, Field
from keel.features.sources import PostgresSource

user = Entity("user", join_keys={"user_id": "int64"})
source = PostgresSource("clicks", event_timestamp="event_ts", created_timestamp="created_ts")
clicks = FeatureView(
    "clicks", entity=user, source=source, features=[Field("spend", "float64")], ttl="7d",
    owner="risk",
)
clicks_agg = FeatureView(
    "clicks_agg", entity=user, source=source,
    aggregations=[Aggregation("spend", "sum", "1d", default=0.0)], owner="risk",
)
"""


@pytest.fixture
def pg_project(project_dir: Path, pg_url: str) -> Iterator[Project]:
    """A project whose metadata database (and default source database) is PostgreSQL."""
    project = Project(project_dir, overrides={"metadata.url": pg_url}, environ={})
    yield project
    project.close()


def insert_clicks(url: str, rows: list[tuple[int, datetime, datetime, float]]) -> None:
    execute(url, "INSERT INTO clicks VALUES (%s, %s, %s, %s)", rows)


def test_materialization_reads_the_range_then_what_is_new(pg_project: Project, pg_url: str) -> None:
    execute(
        pg_url,
        "CREATE TABLE clicks (user_id bigint, event_ts timestamptz, created_ts timestamptz, "
        "spend double precision)",
    )
    insert_clicks(
        pg_url,
        [
            (1, day(1), day(1), 10.0),
            (1, day(3), day(3), 30.0),
            (1, day(9), day(9), 90.0),  # after the end of the first run
            (2, day(2), day(2), 20.0),
            (3, day(-5), day(-5), 5.0),  # older than end - ttl
        ],
    )
    (pg_project.root / "features.py").write_text(MATERIALIZED)
    apply_definitions(pg_project)  # no url: the metadata database is the source's
    with FeatureStore(pg_project) as store:
        full = store.materialize(end=day(4))
        assert [(r.mode, r.rows_read, r.rows_written) for r in full] == [
            ("full", 2, 2),
            ("full", 1, 0),
        ]
        assert store.online.read("clicks", [(1,), (2,), (3,)], ["spend"]).values == [
            (30.0,),
            (20.0,),
            None,
        ]
        insert_clicks(
            pg_url,
            [
                (2, day(3.5), day(5), 25.0),  # late: an old event, ingested after the run
                (3, day(6), day(6), 60.0),
            ],
        )
        runs = store.materialize_incremental(end=day(10))
        assert [(r.mode, r.rows_read) for r in runs] == [("incremental", 3), ("incremental", 1)]
        assert store.online.read("clicks", [(1,), (2,), (3,)], ["spend"]).values == [
            (90.0,),
            (25.0,),
            (60.0,),
        ]
        again = store.materialize_incremental(end=day(10))
        assert [(r.rows_read, r.rows_written) for r in again] == [(0, 0), (0, 0)]
        sums = store.get_online_features(
            ["clicks_agg:spend_sum_1d"], [{"user_id": 1}, {"user_id": 3}], request_time=day(9.5)
        ).to_dict()
        assert sums["spend_sum_1d"] == [90.0, 0.0]  # each event appended once
        assert last_run(pg_project, "clicks")["watermark"]["files"] == {}


PUSHED = """
from keel.features import Entity, FeatureView, Field
from keel.features.sources import PostgresSource

user = Entity("user", join_keys={{"user_id": "int64"}})
clicks = FeatureView(
    "clicks", entity=user, owner="risk", features=[Field("spend", "float64", default=-1.0)],
    source=PostgresSource("tx_local", url={url!r}, event_timestamp="event_ts",
                          time_zone="Europe/Paris"),
)
queried = FeatureView(
    "queried", entity=user, owner="risk", features=[Field("spend", "float64")],
    source=PostgresSource(query="SELECT * FROM tx_local", url={url!r},
                          event_timestamp="event_ts", time_zone="Europe/Paris"),
)
"""


def pushed(users: list[int], times: list[datetime], spend: list[Any]) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event_ts": pa.array(times, pa.timestamp("us", "UTC")),
            "spend": pa.array(spend),
            "note": ["x"] * len(users),
        }
    )


def test_push_inserts_the_rows_into_the_table(pg_tables: str, sqlite_project: Project) -> None:
    (sqlite_project.root / "features.py").write_text(PUSHED.format(url=pg_tables))
    apply_definitions(sqlite_project)
    at = datetime(2026, 7, 1, 10, tzinfo=UTC)
    with FeatureStore(sqlite_project) as store:
        assert store.push("clicks", pushed([1, 2], [at, at], [5.0, 7.0])) == 2
        assert store.online.read("clicks", [(1,), (2,)], ["spend"]).values == [(5.0,), (7.0,)]
        stored = execute(pg_tables, "SELECT user_id, event_ts, spend FROM tx_local ORDER BY 1")
        # the naive column holds Paris wall time (UTC+2 in July)
        assert stored == [(1, datetime(2026, 7, 1, 12), 5.0), (2, datetime(2026, 7, 1, 12), 7.0)]
        with pytest.raises(InvalidInputError, match="'spend' cannot be stored as double"):
            store.push("clicks", pushed([3], [at], ["a"]))
        with pytest.raises(InvalidInputError, match="push inserts into a table"):
            store.push("queried", pushed([3], [at], [1.0]))
        assert len(execute(pg_tables, "SELECT * FROM tx_local")) == 2
        entities = pa.table(
            {
                "user_id": pa.array([1, 3], pa.int64()),
                "ts": pa.array([at, at], pa.timestamp("us", "UTC")),
            }
        )
        training = store.get_training_set(entities, ["clicks:spend"], timestamp_column="ts")
        assert training.table.column("spend").to_pylist() == [5.0, -1.0]


def test_a_password_never_reaches_the_registered_definition(
    pg_tables: str, sqlite_project: Project
) -> None:
    with_password = pg_tables.replace("postgres@", "postgres:s3cret-pw@")
    assert "s3cret-pw" in with_password
    text = PUSHED.format(url=with_password)
    (sqlite_project.root / "features.py").write_text(text)
    [clicks, _] = apply_definitions(sqlite_project)
    definition = get_feature_view(sqlite_project, "clicks").versions[-1].definition
    assert "s3cret-pw" not in json.dumps(definition)
    assert definition["source"]["url"] == pg_tables
    bare = pg_view(pg_tables, [Field("spend", "float64")], table="tx_local")
    secret = pg_view(with_password, [Field("spend", "float64")], table="tx_local")
    assert versioned(bare)[1] == versioned(secret)[1]
    assert clicks.status == "created"
