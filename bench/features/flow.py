"""What both sides of the features benchmark do, in the same order with the same timers; each
side (keel_side.py, feast_side.py) supplies an adapter over its own API.

A side gets the data folder (dataset.py), the phases to run and the Redis URL base, and writes
one JSON result: per phase the seconds, and what it computed so that the orchestrator can check
it (training-set summaries, the values of probe keys, SQLite file sizes, Redis keys left).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import dataset

from common import log

PHASES = ("startup", "training", "materialize", "online")
# a single run varies by a third on a shared 2-core machine; both sides take their best of three
TRAINING_RUNS = 3
STORES = ("sqlite", "redis")


class Repo(Protocol):
    """One project or repository of a side, with its online store of one kind."""

    def training_set(self, entity_df: Any) -> Any: ...  # a pyarrow.Table
    def materialize(self) -> None: ...
    def lookup(self, keys: list[int]) -> dict[str, list[Any]]: ...
    def online_file(self) -> Path | None: ...  # the SQLite database, if that is the store
    def close(self) -> int: ...  # deletes what it wrote to Redis; returns keys left there


@dataclass
class Side:
    name: str
    version: str
    # (kind, folder, data folder, redis url) -> a Repo with both views applied (set-up, untimed)
    open_repo: Callable[[str, Path, Path, str], Repo]
    # Python snippets for start-up: the import, and the import plus a store over ``folder``
    startup_snippets: Callable[[Path], tuple[str, str]]
    notes: dict[str, Any] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True, help="dataset.ensure's folder")
    parser.add_argument("--phase", action="append", choices=PHASES, help="default: all")
    parser.add_argument("--redis", required=True, help="redis://HOST:PORT/DB for this side")
    parser.add_argument("--out", required=True)
    return parser.parse_args()


def run(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    """Each step on its own: a step that fails is reported under ``errors`` and the others
    still run, keeping what the failed step measured before it failed."""
    phases = args.phase or list(PHASES)
    spec = dataset.load_spec(args.data)
    result: dict[str, Any] = {"tool": side.name, "version": side.version, "notes": side.notes}
    work = Path.cwd()
    steps: list[tuple[str, Callable[[dict[str, Any]], None]]] = []
    if "training" in phases:
        steps.append(("training", partial(_training, side, work / "training", args)))
    if "materialize" in phases or "online" in phases:
        for kind in STORES:
            steps.append((kind, partial(_store, side, kind, work / kind, args, spec, phases)))
    if "startup" in phases:
        steps.append(("startup", partial(_startup, side, work / "startup", args)))
    for name, step in steps:
        out = result.setdefault(name, {})
        try:
            step(out)
        except Exception:  # the orchestrator shows a failed step as a row
            result.setdefault("errors", {})[name] = traceback.format_exc()
            log(f"{side.name} {name}: failed\n{result['errors'][name]}")
    return result


def _training(side: Side, folder: Path, args: argparse.Namespace, out: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    repo = side.open_repo("sqlite", folder, args.data, args.redis)
    try:
        entity_df = pq.read_table(args.data / "entities.parquet").to_pandas()
        log(f"training set: {len(entity_df):,} entity rows, best of {TRAINING_RUNS} runs")
        runs = []
        for _ in range(TRAINING_RUNS):
            table = None  # the previous run's result is freed before the next one starts
            gc.collect()
            start = time.perf_counter()
            table = repo.training_set(entity_df)
            runs.append(time.perf_counter() - start)
            log(f"training set: {runs[-1]:.2f} s, {table.num_rows:,} rows")
        out.update(
            seconds=min(runs),
            runs=runs,
            entity_rows=len(entity_df),
            **dataset.training_summary(table),
        )
    finally:
        repo.close()


def _store(
    side: Side,
    kind: str,
    folder: Path,
    args: argparse.Namespace,
    spec: dataset.Spec,
    phases: list[str],
    out: dict[str, Any],
) -> None:
    repo = side.open_repo(kind, folder, args.data, args.redis)
    try:
        gc.collect()
        start = time.perf_counter()
        repo.materialize()
        out["materialize_seconds"] = time.perf_counter() - start
        log(f"{kind}: materialized {spec.keys:,} keys in {out['materialize_seconds']:.2f} s")
        file = repo.online_file()
        if file is not None:
            out["file_bytes"] = sum(p.stat().st_size for p in file.parent.glob(file.name + "*"))
        out["probe"] = repo.lookup(dataset.probe_keys(spec))
        if "online" in phases:
            out["lookup_1"] = _lookups(repo, dataset.lookup_keys(spec, 1, spec.lookups_1))
            out["lookup_100"] = _lookups(repo, dataset.lookup_keys(spec, 100, spec.lookups_100))
            for size in (1, 100):
                stats = out[f"lookup_{size}"]
                p50, p99 = stats["p50"] * 1e3, stats["p99"] * 1e3
                log(f"{kind}: {size} key(s) p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    finally:
        out["redis_keys_left"] = repo.close()


def _lookups(repo: Repo, requests: list[list[int]]) -> dict[str, float]:
    """Warm-up (a tenth of the requests, at least 20) untimed, then every request timed."""
    for keys in requests[: max(20, len(requests) // 10)]:
        repo.lookup(keys)
    gc.collect()
    samples = []
    for keys in requests:
        start = time.perf_counter()
        values = repo.lookup(keys)
        samples.append(time.perf_counter() - start)
        if len(values["user_id"]) != len(keys):
            raise RuntimeError(f"asked for {len(keys)} keys, got {len(values['user_id'])} rows")
    return dataset.percentiles(samples)


def _startup(
    side: Side, folder: Path, args: argparse.Namespace, out: dict[str, Any], repeats: int = 5
) -> None:
    """Median of ``repeats`` fresh interpreters, timed inside each (interpreter start excluded),
    over a repository of their own (constructing a store needs one)."""
    side.open_repo("sqlite", folder, args.data, args.redis).close()
    snippets = side.startup_snippets(folder)
    for label, snippet in zip(("import", "import_and_store"), snippets, strict=True):
        code = f"import time\n_t = time.perf_counter()\n{snippet}\nprint(time.perf_counter() - _t)"
        samples = []
        for _ in range(repeats):
            done = subprocess.run(
                [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise RuntimeError(f"start-up snippet failed:\n{code}\n{done.stderr[-2000:]}")
            samples.append(float(done.stdout.strip().splitlines()[-1]))
        out[label] = {"median": statistics.median(samples), "samples": samples}
