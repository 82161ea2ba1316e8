"""Online/offline parity: for random data and request times, the values served online equal
the point-in-time join's values for the same entities and times (ttl, defaults, NULLs, ties)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.features.registry import apply_definitions
from keel.features.store import FeatureStore
from keel.project import Project, init_project

DEFINITIONS = """
from keel.features.definitions import Entity, FeatureView, Field
from keel.features.sources import ParquetSource

account = Entity("account", join_keys={"bank": "string", "number": "int64"})
balances = FeatureView(
    "balances",
    entity=account,
    source=ParquetSource(
        "data/balances", event_timestamp="event_ts", created_timestamp="created_ts"
    ),
    features=[Field("balance", "float64", default=0.5), Field("flag", "int64")],
    ttl="3h",
    owner="risk",
)
"""
T0 = datetime(2026, 1, 1, tzinfo=UTC)
END = T0 + timedelta(hours=10)
KEYS = [("a", 1), ("a", 11), ("a1", 1), ("b", 2)]  # "a"+"11" and "a1"+"1" collide as strings

rows = st.lists(
    st.tuples(
        st.sampled_from(KEYS),
        st.integers(0, 20).map(lambda half_hours: T0 + timedelta(minutes=30 * half_hours)),
        st.integers(0, 3),
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        st.integers(-5, 5),
    ),
    min_size=1,
    max_size=30,
)


def write_source(root: Path, data: list[tuple]) -> None:
    folder = root / "data" / "balances"
    folder.mkdir(parents=True, exist_ok=True)
    half = len(data) // 2
    for name, part in (("a.parquet", data[:half]), ("b.parquet", data[half:])):
        if not part:
            continue
        table = pa.table(
            {
                "bank": [r[0][0] for r in part],
                "number": pa.array([r[0][1] for r in part], pa.int64()),
                "event_ts": pa.array([r[1] for r in part], pa.timestamp("us", "UTC")),
                "created_ts": pa.array(
                    [min(r[1] + timedelta(minutes=10 * r[2]), END) for r in part],
                    pa.timestamp("us", "UTC"),
                ),
                "balance": pa.array([r[3] for r in part], pa.float64()),
                "flag": pa.array([r[4] for r in part], pa.int64()),
            }
        )
        pq.write_table(table, folder / name)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rows, offsets=st.lists(st.integers(0, 8 * 60), min_size=1, max_size=4))
def test_online_values_equal_offline_values(data: list[tuple], offsets: list[int]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        init_project(root)
        write_source(root, data)
        (root / "features.py").write_text(DEFINITIONS)
        project = Project(root, environ={})
        try:
            apply_definitions(project)
            with FeatureStore(project) as store:
                store.materialize(start=T0 - timedelta(days=1), end=END)
                for minutes in offsets:
                    when = END + timedelta(minutes=minutes)
                    entity_rows = [{"bank": b, "number": n} for b, n in KEYS]
                    online = store.get_online_features(
                        ["balances"], entity_rows, request_time=when
                    ).to_dict()
                    entities = pa.table(
                        {
                            "bank": [b for b, _ in KEYS],
                            "number": pa.array([n for _, n in KEYS], pa.int64()),
                            "ts": pa.array([when] * len(KEYS), pa.timestamp("us", "UTC")),
                        }
                    )
                    offline = store.get_training_set(
                        entities, ["balances"], timestamp_column="ts"
                    ).table
                    assert online["balance"] == offline.column("balance").to_pylist()
                    assert online["flag"] == offline.column("flag").to_pylist()
        finally:
            project.close()
