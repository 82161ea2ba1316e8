"""MLflow's side of the registry benchmark; runs inside .bench/mlflow-venv.

MLflow runs in its fair embedded setup: a ``sqlite:///`` tracking and registry URI and a local
artifact root, both in the working folder the orchestrator gives it. Telemetry is switched off
because this machine has no internet and we measure the library, not a failing upload; its
informational logging is switched off too (see _quiet).

    python bench/registry/mlflow_side.py metrics --n 10000 --out result.json
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import Stopwatch, emit, log, metric_values, model_frames, summarize, timed_repeats


def _quiet() -> None:
    """No telemetry (no network here) and no per-version chatter on the console; neither
    changes what MLflow does for a call, only what it prints or uploads."""
    import warnings

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")


_WARMUP_POINTS = 10
# Part of the cache key of MLflow's search database: bump it when _populate, _synthetic_runs or
# _store_run change what they store, so cached databases are rebuilt.
POPULATE_VERSION = 1
SEARCH_FILTER = "metrics.auc > 0.9 and params.model = 'lgbm'"


def _connect(folder: Path) -> str:
    """Point MLflow at a SQLite file in ``folder`` and return the id of a fresh experiment
    (creating the database runs MLflow's migrations, which we do not time)."""
    import mlflow

    uri = f"sqlite:///{folder.resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    artifacts = (folder / "artifacts").resolve().as_uri()
    return str(mlflow.create_experiment(f"bench-{time.time_ns()}", artifact_location=artifacts))


def bench_metrics(folder: Path, n: int) -> dict[str, Any]:
    """Per-call ``mlflow.log_metric`` (synchronous, the default and async), and
    ``MlflowClient.log_batch``, each in its own run; time from the first call through end_run."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    experiment = _connect(folder)
    values = metric_values(n)
    with mlflow.start_run(experiment_id=experiment):  # warm-up: lazy imports, caches
        for i in range(_WARMUP_POINTS):
            mlflow.log_metric("loss", values[i], step=i)

    def per_call(synchronous: bool) -> tuple[float, str]:
        run = mlflow.start_run(experiment_id=experiment)
        start = time.perf_counter()
        for i, value in enumerate(values):
            mlflow.log_metric("loss", value, step=i, synchronous=synchronous)
        mlflow.end_run()
        return time.perf_counter() - start, run.info.run_id

    sync_seconds, sync_run = per_call(True)
    async_seconds, async_run = per_call(False)

    client = MlflowClient()
    run_id = client.create_run(experiment).info.run_id
    start = time.perf_counter()
    now = int(time.time() * 1000)
    points = [Metric("loss", value, now, i) for i, value in enumerate(values)]
    for offset in range(0, n, 1000):  # MLflow accepts at most 1000 metrics per batch
        client.log_batch(run_id, metrics=points[offset : offset + 1000])
    client.set_terminated(run_id)
    batch_seconds = time.perf_counter() - start

    stored = {
        name: len(client.get_metric_history(run, "loss"))
        for name, run in (("per_call", sync_run), ("async", async_run), ("batch", run_id))
    }
    return {
        "n": n,
        "per_call_seconds": sync_seconds,
        "async_seconds": async_seconds,
        "batch_seconds": batch_seconds,
        "stored_points": stored,
    }


def bench_models(folder: Path, n: int) -> dict[str, Any]:
    """``mlflow.sklearn.log_model(..., registered_model_name=...)`` of ``n`` small
    LogisticRegressions, one run each; times the log_model call (artifact + registration).

    Twice: as a user calls it (MLflow then infers pip requirements in a subprocess for each
    model), and with ``pip_requirements`` given, its fastest documented form."""
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.tracking import MlflowClient

    experiment = _connect(folder)
    frames = model_frames(n + 1)
    models = [_fit(x, y) for x, y in frames]
    with mlflow.start_run(experiment_id=experiment):  # warm-up, registered under another name
        mlflow.sklearn.log_model(
            models[0],
            name="model",
            registered_model_name="warmup",
            input_example=frames[0][0].head(5),
        )
    pinned = {"pip_requirements": [f"scikit-learn=={sklearn.__version__}"]}
    default_laps = _register(experiment, models[1:], frames[1:], "bench", {})
    pinned_laps = _register(experiment, models[1:], frames[1:], "bench-pinned", pinned)
    client = MlflowClient()
    return {
        "n": n,
        "log_model": summarize(default_laps[0]),
        "with_run": summarize(default_laps[1]),
        "log_model_pinned": summarize(pinned_laps[0]),
        "registered_versions": len(client.search_model_versions("name='bench'")),
        "registered_pinned": len(client.search_model_versions("name='bench-pinned'")),
    }


def _register(
    experiment: str,
    models: list[Any],
    frames: list[tuple[Any, Any]],
    registered_name: str,
    options: dict[str, Any],
) -> tuple[list[float], list[float]]:
    """Log and register each model in its own run; the laps of log_model and of the run."""
    import mlflow
    import mlflow.sklearn

    log_model, with_run = Stopwatch(), Stopwatch()
    for model, (x, _) in zip(models, frames, strict=True):
        with with_run, mlflow.start_run(experiment_id=experiment), log_model:
            mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=registered_name,
                input_example=x.head(5),
                **options,
            )
    return log_model.laps, with_run.laps


def _fit(x: Any, y: Any) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=200).fit(x, y)


def bench_search(cache: Path, n: int, repeats: int) -> dict[str, Any]:
    """Median of ``repeats`` searches (after one warm-up) over a cached database of ``n`` runs."""
    import mlflow
    from populate_runs import EXPERIMENTS

    db = cache / "mlflow.db"
    if not db.exists():
        _populate(cache, n)
    mlflow.set_tracking_uri(f"sqlite:///{db.resolve()}")
    experiment_ids = [mlflow.get_experiment_by_name(name).experiment_id for name in EXPERIMENTS]
    found: list[Any] = []

    def search() -> None:
        found[:] = mlflow.search_runs(
            experiment_ids=experiment_ids,
            filter_string=SEARCH_FILTER,
            order_by=["metrics.auc DESC"],
            max_results=100,
            output_format="list",
        )

    times = timed_repeats(search, repeats=repeats)
    aucs = [run.data.metrics["auc"] for run in found]
    return {
        "n": n,
        "search": summarize(times),
        "results": len(found),
        "sorted": aucs == sorted(aucs, reverse=True),
        "aucs": aucs,
    }


def _populate(cache: Path, n: int) -> None:
    """Fill a fresh database with the same synthetic runs as populate_runs.populate (same
    generator, same seed) through MLflow's own store API, one create_run, log_batch and
    update_run_info per run; move it into ``cache`` only when complete."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from populate_runs import EXPERIMENTS

    building = cache.with_name(cache.name + ".building")
    building.mkdir(parents=True, exist_ok=True)
    (building / "mlflow.db").unlink(missing_ok=True)
    with _unsynced_sqlite():
        store = SqlAlchemyStore(
            f"sqlite:///{(building / 'mlflow.db').resolve()}", (building / "artifacts").as_uri()
        )
        experiments = [store.create_experiment(name) for name in EXPERIMENTS]
        started = time.perf_counter()
        for done, run in enumerate(_synthetic_runs(experiments, n), start=1):
            _store_run(store, run)
            if done % 5000 == 0 or done == n:
                log(f"MLflow: {done:,}/{n:,} runs stored, {time.perf_counter() - started:.0f} s")
        store.engine.dispose()
    building.rename(cache)


@contextmanager
def _unsynced_sqlite() -> Iterator[None]:
    """Durability is irrelevant while filling a throw-away file; skipping fsyncs only makes
    the filling faster, the database comes out the same."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def unsynced(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    event.listen(Engine, "connect", unsynced)
    try:
        yield
    finally:
        event.remove(Engine, "connect", unsynced)


def _synthetic_runs(experiments: list[Any], n: int) -> Iterator[dict[str, Any]]:
    """populate_runs' rows regrouped per run. Its random stream is consumed in the order that
    populate() consumes it (same seed, same batches), so the runs carry the same values."""
    import random

    import populate_runs

    rng = random.Random(0)
    start = int(time.time() * 1000) - 90 * populate_runs._DAY_MS
    step_ms = max(1, 90 * populate_runs._DAY_MS // max(n, 1))
    for first in range(0, n, populate_runs.BATCH):
        hi = min(n, first + populate_runs.BATCH)
        tables = populate_runs._batch(rng, experiments, start, step_ms, first, hi)
        runs = {
            row["id"]: {**row, "params": [], "tags": [], "metrics": []} for row in tables["runs"]
        }
        for name in ("params", "tags", "metrics"):
            for row in tables[name]:
                runs[row["run_id"]][name].append(row)
        yield from runs.values()


def _store_run(store: Any, run: dict[str, Any]) -> None:
    from mlflow.entities import Metric, Param, RunStatus, RunTag

    info = store.create_run(
        run["experiment_id"], run["user"], run["start_time"], [], run["name"]
    ).info
    tags = [RunTag(t["key"], t["value"]) for t in run["tags"]]
    tags.append(RunTag("mlflow.source.git.commit", run["git_commit"]))
    store.log_batch(
        info.run_id,
        metrics=[Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in run["metrics"]],
        params=[Param(p["key"], p["value"]) for p in run["params"]],
        tags=tags,
    )
    if run["status"] != "running":
        status = RunStatus.from_string(run["status"].upper())
        store.update_run_info(info.run_id, status, run["end_time"], None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("measurement", choices=["metrics", "models", "search"])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, help="folder of the cached search database")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    _quiet()
    import mlflow

    folder = Path.cwd()
    if args.measurement == "metrics":
        result = bench_metrics(folder, args.n)
    elif args.measurement == "models":
        result = bench_models(folder, args.n)
    else:
        if args.cache is None:
            parser.error("search needs --cache")
        result = bench_search(args.cache, args.n, args.repeats)
    emit(args.out, {"tool": "mlflow", "version": mlflow.__version__, **result})


if __name__ == "__main__":
    main()
