"""The features benchmark's data: generated once from a seed, cached, read by both sides.

Two sources, both Parquet with a UTC ``event_ts``:

- ``activity.parquet`` (training): ``users`` entities with ``events`` rows each, 10 float64
  features ``a00``..``a09``. Each user's events fall one per slot of 90 / ``events`` days (so
  they are strictly ordered and never further apart than two slots, well inside the 30-day
  ttl), written slot by slot as an event log would be.
- ``entities.parquet``: the training request, ``user_id`` and ``ts``. 85 % of its rows ask for
  a known user at a time inside the data; 10 % ask for a user that has no rows at all and 5 %
  for a known user before their first event — rows with no value in the ttl window, for which
  Keel must return nulls and keep the row.
- ``profile.parquet`` (materialization and online lookups): ``keys`` users with 50 features
  (``p00``..``p39`` float64, ``p40``..``p49`` int64), two rows per user (an older and a newer
  one), so a store that keeps the wrong row is caught.

Only numpy and pyarrow are needed: Feast's venv imports this module too.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=90)
TTL = timedelta(days=30)
TRAIN_VIEW = "activity"
ONLINE_VIEW = "profile"
TRAIN_FEATURES = [f"a{i:02d}" for i in range(10)]
ONLINE_FEATURES = [f"p{i:02d}" for i in range(50)]
INT_FEATURES = frozenset(ONLINE_FEATURES[40:])
MATERIALIZE_START = EPOCH - timedelta(days=1)
MATERIALIZE_END = EPOCH + SPAN + timedelta(days=1)
FORMAT = 1  # bump when the generated data changes shape


@dataclass(frozen=True)
class Spec:
    users: int  # training entities; feature rows = users * events
    events: int
    entity_rows: int
    keys: int  # online entities
    lookups_1: int  # timed lookups of 1 key
    lookups_100: int  # timed lookups of 100 keys
    seed: int = 0

    @property
    def feature_rows(self) -> int:
        return self.users * self.events

    def digest(self) -> str:
        text = json.dumps({**asdict(self), "format": FORMAT}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


FULL = Spec(users=500_000, events=20, entity_rows=1_000_000, keys=100_000,
            lookups_1=2_000, lookups_100=300)  # fmt: skip
QUICK = Spec(users=50_000, events=20, entity_rows=100_000, keys=10_000,
             lookups_1=500, lookups_100=100)  # fmt: skip
TINY = Spec(users=2_000, events=20, entity_rows=5_000, keys=1_000, lookups_1=50, lookups_100=20)


def spec_of(data: dict[str, Any]) -> Spec:
    return Spec(**data)


def ensure(spec: Spec, cache: Path) -> Path:
    """The folder holding ``spec``'s data, generated on first use (about a minute at full size)."""
    folder = cache / f"features-data-{spec.digest()}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _write_activity(spec, folder / "activity.parquet")
    _write_entities(spec, folder / "entities.parquet")
    _write_profile(spec, folder / "profile.parquet")
    manifest.write_text(json.dumps({"spec": asdict(spec), "format": FORMAT}, indent=2), "utf-8")
    return folder


def load_spec(folder: Path) -> Spec:
    return spec_of(json.loads((folder / "manifest.json").read_text("utf-8"))["spec"])


def _us(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


def _slot(spec: Spec) -> int:
    """Microseconds per event slot: each user has exactly one event in each."""
    return int(SPAN.total_seconds() * 1_000_000) // spec.events


def _write_activity(spec: Spec, path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(spec.seed)
    slot = _slot(spec)
    users = np.arange(spec.users, dtype=np.int64)
    with pq.ParquetWriter(path, _activity_schema()) as writer:
        for event in range(spec.events):  # one slot at a time, as an event log is written
            offsets = rng.integers(0, slot, size=spec.users, dtype=np.int64)
            ts = _us(EPOCH) + event * slot + offsets
            columns: dict[str, Any] = {
                "user_id": users,
                "event_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            }
            for name in TRAIN_FEATURES:
                columns[name] = rng.random(spec.users)
            writer.write_table(pa.table(columns, schema=_activity_schema()), 1_000_000)


def _activity_schema() -> Any:
    import pyarrow as pa

    fields = [pa.field("user_id", pa.int64()), pa.field("event_ts", pa.timestamp("us", "UTC"))]
    return pa.schema(fields + [pa.field(name, pa.float64()) for name in TRAIN_FEATURES])


def _write_entities(spec: Spec, path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(spec.seed + 1)
    n = spec.entity_rows
    unknown, early = n // 10, n // 20
    known = n - unknown - early
    day = 86_400_000_000
    ids = np.concatenate(
        [
            rng.integers(0, spec.users, size=known),
            rng.integers(spec.users, 2 * spec.users, size=unknown),  # never seen
            rng.integers(0, spec.users, size=early),
        ]
    ).astype(np.int64)
    start = _us(EPOCH)
    ts = np.concatenate(
        [
            # from the end of the first slot (every user has an event by then) to ten days
            # past the data: always a value inside the ttl
            rng.integers(start + _slot(spec), start + 100 * day, size=known),
            rng.integers(start + 10 * day, start + 80 * day, size=unknown),
            rng.integers(start - 30 * day, start - day, size=early),  # before any event
        ]
    )
    order = rng.permutation(n)
    table = pa.table(
        {
            "user_id": pa.array(ids[order]),
            "ts": pa.array(ts[order], pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, path)


def _write_profile(spec: Spec, path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(spec.seed + 2)
    day = 86_400_000_000
    keys = np.arange(spec.keys, dtype=np.int64)
    older = _us(EPOCH) + 10 * day + rng.integers(0, 30 * day, size=spec.keys)
    newer = _us(EPOCH) + 50 * day + rng.integers(0, 30 * day, size=spec.keys)
    columns: dict[str, Any] = {
        "user_id": np.concatenate([keys, keys]),
        "event_ts": pa.array(np.concatenate([older, newer]), pa.timestamp("us", tz="UTC")),
    }
    for name in ONLINE_FEATURES:
        if name in INT_FEATURES:
            columns[name] = rng.integers(0, 1_000_000, size=2 * spec.keys, dtype=np.int64)
        else:
            columns[name] = rng.random(2 * spec.keys)
    pq.write_table(pa.table(columns), path, row_group_size=1_000_000)


def lookup_keys(spec: Spec, size: int, count: int) -> list[list[int]]:
    """``count`` requests of ``size`` distinct known keys each, the same on both sides."""
    rng = random.Random(spec.seed + size)
    return [rng.sample(range(spec.keys), size) for _ in range(count)]


def probe_keys(spec: Spec) -> list[int]:
    """Keys whose looked-up values both sides report, checked against the data: four known
    keys (first, last and two in between) and one that has no row."""
    return [0, spec.keys // 3, spec.keys // 2, spec.keys - 1, spec.keys + 7]


def expected_profile(folder: Path, keys: list[int]) -> dict[str, list[Any]]:
    """What an online lookup of ``keys`` must return: each key's newer row, None when absent."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "profile.parquet")
    table = table.filter(pc.is_in(table["user_id"], value_set=_int_array(keys)))
    latest: dict[int, dict[str, Any]] = {}
    for row in table.to_pylist():
        known = latest.get(row["user_id"])
        if known is None or row["event_ts"] > known["event_ts"]:
            latest[row["user_id"]] = row
    result: dict[str, list[Any]] = {"user_id": keys}
    for name in ONLINE_FEATURES:
        result[name] = [latest[k][name] if k in latest else None for k in keys]
    return result


def _int_array(values: list[int]) -> Any:
    import pyarrow as pa

    return pa.array(values, pa.int64())


def training_summary(table: Any) -> dict[str, Any]:
    """Row count, and per feature the non-null count and sum, of a training set as Arrow."""
    import pyarrow.compute as pc

    summary: dict[str, Any] = {"rows": table.num_rows, "features": {}}
    for name in TRAIN_FEATURES:
        column = table[name]
        total = pc.sum(column).as_py()
        summary["features"][name] = {
            "non_null": len(column) - column.null_count,
            "sum": 0.0 if total is None else float(total),
        }
    return summary


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p99, mean and max of latencies in seconds (nearest-rank)."""
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "n": float(n),
        "p50": ordered[max(0, (n + 1) // 2 - 1)],
        "p99": ordered[max(0, -(-99 * n // 100) - 1)],
        "mean": sum(ordered) / n,
        "max": ordered[-1],
    }
