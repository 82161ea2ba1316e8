"""Fill a project with realistic synthetic runs, fast, for search benchmarks.

    from populate_runs import populate
    populate(project, 100_000, seed=0)     # 3 experiments, ~5 params / 5 metrics / 2 tags a run

Rows go straight into the metadata tables through executemany (one transaction per batch),
bypassing the tracking API: 100,000 runs take seconds on SQLite. Run as a script to time it:

    python bench/registry/populate_runs.py PROJECT_DIR 100000
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from keel.project import Project

EXPERIMENTS = ("fraud-detection", "churn-prediction", "search-ranking")
MODELS = ("lgbm", "xgboost", "logreg", "random_forest")
USERS = ("ana", "bo", "chen", "dara", "eli")
BATCH = 10_000
_DAY_MS = 86_400_000


def populate(project: Project, n_runs: int, seed: int = 0) -> list[str]:
    """Insert ``n_runs`` synthetic runs (deterministic for a seed); returns their ids."""
    from keel.core.timeutil import now_ms

    rng = random.Random(seed)
    start = now_ms() - 90 * _DAY_MS
    step_ms = max(1, 90 * _DAY_MS // max(n_runs, 1))
    with project.metadata.write() as conn:
        experiment_ids = _experiments(conn, start)
    ids: list[str] = []
    for first in range(0, n_runs, BATCH):
        batch = _batch(rng, experiment_ids, start, step_ms, first, min(n_runs, first + BATCH))
        with project.metadata.write() as conn:
            _insert(conn, batch)
        ids.extend(row["id"] for row in batch["runs"])
    return ids


def _experiments(conn: Connection, created_at: int) -> list[int]:
    from sqlalchemy import select

    from keel.metadata.schema import experiments

    query = select(experiments.c.name, experiments.c.id)
    known = {row.name: row.id for row in conn.execute(query)}
    missing = [{"name": n, "created_at": created_at} for n in EXPERIMENTS if n not in known]
    if missing:
        conn.execute(experiments.insert(), missing)
        known = {row.name: row.id for row in conn.execute(query)}
    return [int(known[name]) for name in EXPERIMENTS]


def _batch(
    rng: random.Random, experiment_ids: list[int], start: int, step_ms: int, lo: int, hi: int
) -> dict[str, list[dict[str, Any]]]:
    tables: dict[str, list[dict[str, Any]]] = {
        "runs": [],
        "params": [],
        "latest_metrics": [],
        "metrics": [],
        "tags": [],
    }
    for i in range(lo, hi):
        started = start + i * step_ms + rng.randrange(step_ms)
        run_id = f"{started:012x}{rng.getrandbits(80):020x}"
        tables["runs"].append(_run_row(rng, run_id, rng.choice(experiment_ids), started))
        model = rng.choice(MODELS)
        params = {
            "model": model,
            "learning_rate": repr(round(10 ** rng.uniform(-3, -0.5), 5)),
            "n_estimators": str(rng.choice((100, 200, 500, 1000))),
            "max_depth": str(rng.randint(3, 12)),
            "feature_set": rng.choice(("v1", "v2", "v3")),
        }
        tables["params"] += [{"run_id": run_id, "key": k, "value": v} for k, v in params.items()]
        tables["tags"] += [
            {"run_id": run_id, "key": "team", "value": rng.choice(("risk", "growth", "search"))},
            {"run_id": run_id, "key": "stage", "value": rng.choice(("dev", "dev", "staging"))},
        ]
        _metric_rows(rng, tables, run_id, started, model)
    return tables


def _run_row(rng: random.Random, run_id: str, experiment_id: int, started: int) -> dict[str, Any]:
    status = rng.choices(("finished", "failed", "killed", "running"), (90, 5, 3, 2))[0]
    seed = rng.randrange(10_000)
    return {
        "id": run_id,
        "experiment_id": experiment_id,
        "name": f"run-{rng.getrandbits(24):06x}",
        "parent_run_id": None,
        "status": status,
        "start_time": started,
        "end_time": None if status == "running" else started + rng.randrange(5_000, 3_600_000),
        "error": "ValueError: NaN in input" if status == "failed" else None,
        "notes": None,
        "user": rng.choice(USERS),
        "git_commit": f"{rng.getrandbits(160):040x}",
        "git_branch": rng.choice(("main", "main", "feature/new-features")),
        "git_dirty": rng.random() < 0.2,
        "git_diff_sha256": None,
        "environment_sha256": None,
        "command": "python train.py --config config.yaml",
        "seeds": {"python": seed, "numpy": seed},
    }


def _metric_rows(
    rng: random.Random,
    tables: dict[str, list[dict[str, Any]]],
    run_id: str,
    started: int,
    model: str,
) -> None:
    boost = {"lgbm": 0.04, "xgboost": 0.03, "random_forest": 0.0, "logreg": -0.05}[model]
    auc = min(0.999, max(0.5, rng.gauss(0.85 + boost, 0.05)))
    final = {
        "auc": auc,
        "accuracy": min(0.999, auc - rng.uniform(0.0, 0.08)),
        "f1": min(0.999, auc - rng.uniform(0.05, 0.2)),
        "logloss": max(0.01, 1.2 - auc + rng.gauss(0, 0.03)),
        "train_seconds": rng.uniform(5, 3600),
    }
    for key, value in final.items():
        # The loss has a short history; the other metrics were logged once, at the end.
        steps = 3 if key == "logloss" else 1
        for step in range(steps):
            point = value * (1 + 0.5 * (steps - 1 - step))
            row = {"run_id": run_id, "key": key, "value": point, "step": step}
            tables["metrics"].append({**row, "timestamp": started + 1000 * (step + 1)})
        tables["latest_metrics"].append({**row, "timestamp": started + 1000 * steps})


def _insert(conn: Connection, batch: dict[str, list[dict[str, Any]]]) -> None:
    """COPY on PostgreSQL; elsewhere the driver's own executemany with SQLAlchemy's compiled
    INSERT: bound values only, without SQLAlchemy's per-row processing (three times slower)."""
    from keel.metadata import schema

    for name in ("runs", "params", "tags", "latest_metrics", "metrics"):
        rows = batch[name]
        if name == "runs":
            rows = [{**row, "seeds": json.dumps(row["seeds"])} for row in rows]
        columns = list(rows[0])
        if conn.dialect.name == "postgresql":
            _copy(conn, name, columns, rows)
            continue
        compiled = getattr(schema, name).insert().values(dict.fromkeys(columns)).compile(conn)
        order = compiled.positiontup or columns
        conn.exec_driver_sql(compiled.string, [tuple(r[k] for k in order) for r in rows])


def _copy(conn: Connection, table: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    quoted = ", ".join(f'"{c}"' for c in columns)  # names from the schema, never from data
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


def main(argv: list[str]) -> int:
    from keel.project import Project

    if len(argv) != 2:
        print("usage: populate_runs.py PROJECT_DIR N_RUNS", file=sys.stderr)
        return 2
    project = Project(argv[0])
    began = time.perf_counter()
    populate(project, int(argv[1]))
    print(f"inserted {int(argv[1]):,} runs in {time.perf_counter() - began:.1f} s")
    project.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
