"""Micro-benchmark of Keel's online store backends alone (below the feature store): write 100k
keys x 50 features, then time lookups.

    .venv/bin/python bench/features/online_micro.py [--rows 100000] \
        [--redis redis://127.0.0.1:6379/0]

Prints write throughput and p50/p99 of in-process lookups of 1 key x 50 features and 100 keys
x 50 features (random keys), for SQLite and Redis. The comparison with Feast, through both
tools' feature-store APIs, is the suite's run.py (bench/features/README.md).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from keel.features.online import RowBatch, open_online_store


def _batch(rows: int, features: int) -> RowBatch:
    rng = np.random.default_rng(0)
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    return RowBatch(
        keys=[(i,) for i in range(rows)],
        features={f"f{j:02d}": rng.random(rows) for j in range(features)},
        event_ts=np.full(rows, now_us, dtype=np.int64),
        created_ts=np.full(rows, now_us, dtype=np.int64),
    )


def _percentiles(samples: list[int]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] / 1e3
    p99 = ordered[int(len(ordered) * 0.99)] / 1e3
    return f"p50 {p50:8.1f} µs  p99 {p99:8.1f} µs"


def _lookups(store: object, rows: int, names: list[str], size: int, repeats: int) -> str:
    rng = random.Random(1)
    samples = []
    read = store.read  # type: ignore[attr-defined]
    for _ in range(repeats):
        keys = [(rng.randrange(rows),) for _ in range(size)]
        start = time.perf_counter_ns()
        result = read("bench", keys, names)
        samples.append(time.perf_counter_ns() - start)
        if result.values[0] is None:
            raise SystemExit("lookup missed a written key")
    return _percentiles(samples)


def run(url: str, rows: int, features: int) -> None:
    store = open_online_store(url)
    batch = _batch(rows, features)
    names = list(batch.features)
    try:
        start = time.perf_counter()
        applied = store.write_batch("bench", "v1", batch)
        took = time.perf_counter() - start
        print(
            f"{url.split(':')[0]:6s} write {rows:,} x {features}: {took:6.2f} s "
            f"({applied / took:,.0f} rows/s)"
        )
        store.read("bench", [(0,)], names)  # warm caches and statements
        print(f"{'':6s} read   1 x {features}: {_lookups(store, rows, names, 1, 5000)}")
        print(f"{'':6s} read 100 x {features}: {_lookups(store, rows, names, 100, 1000)}")
    finally:
        store.delete_view("bench")
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--only", choices=["sqlite", "redis"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.only != "redis":
            run(f"sqlite:///{Path(folder) / 'online.db'}", args.rows, args.features)
    if args.only != "sqlite":
        run(f"{args.redis}?prefix=bench-{uuid.uuid4().hex[:8]}", args.rows, args.features)


if __name__ == "__main__":
    main()
