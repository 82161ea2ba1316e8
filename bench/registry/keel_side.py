"""Keel's side of the registry benchmark; runs inside the project's .venv.

Keel runs in its embedded default: SQLite metadata and a local artifact folder, both inside a
Project rooted at the working folder the orchestrator gives it.

    python bench/registry/keel_side.py metrics --n 10000 --out result.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Stopwatch, emit, log, metric_values, model_frames, summarize, timed_repeats

SEARCH_FILTER = "metrics.auc > 0.9 and params.model = 'lgbm'"
_WARMUP_POINTS = 10


def _api() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """start_run and search_runs: the public names once keel re-exports them, else the modules
    that define them. Both are called with ``project=`` as a keyword, which either form takes."""
    import keel

    try:
        return keel.start_run, keel.search_runs
    except AttributeError:  # keel/__init__.py does not re-export them yet
        from keel.tracking.fluent import start_run
        from keel.tracking.query import search_runs

        return start_run, search_runs


def _project(folder: Path) -> Any:
    from keel.project import Project

    return Project(folder)


def bench_metrics(folder: Path, n: int) -> dict[str, Any]:
    """``run.log_metric`` per call inside one run; time from the first call through the end of
    the ``with`` block (which flushes the buffer and ends the run)."""
    start_run, _ = _api()
    project = _project(folder)
    values = metric_values(n)
    with start_run(experiment="warmup", project=project) as run:  # migrations, lazy imports
        for i in range(_WARMUP_POINTS):
            run.log_metric("loss", values[i], step=i)
    started = time.perf_counter()
    with start_run(experiment="bench", project=project) as run:
        first_call = time.perf_counter()
        for i, value in enumerate(values):
            run.log_metric("loss", value, step=i)
        last_call = time.perf_counter()
    ended = time.perf_counter()
    return {
        "n": n,
        "per_call_seconds": ended - first_call,
        "calls_seconds": last_call - first_call,
        "end_seconds": ended - last_call,
        "start_run_seconds": first_call - started,
        "stored_points": _stored_points(project, run.id),
    }


def _stored_points(project: Any, run_id: str) -> int:
    from sqlalchemy import func, select

    from keel.metadata.schema import metrics

    query = select(func.count()).select_from(metrics).where(metrics.c.run_id == run_id)
    with project.metadata.read() as conn:
        return int(conn.execute(query).scalar_one())


def bench_models(folder: Path, n: int) -> dict[str, Any]:
    """``run.log_model(model, name="bench", input_example=...)`` of ``n`` small
    LogisticRegressions, one run each; times the log_model call (artifact + registration)."""
    from keel.registry.versions import list_versions

    start_run, _ = _api()
    project = _project(folder)
    frames = model_frames(n + 1)
    models = [_fit(x, y) for x, y in frames]
    with start_run(experiment="bench-models", project=project) as run:  # warm-up, another name
        run.log_model(models[0], name="warmup", input_example=frames[0][0].head(5))
    log_model, with_run = Stopwatch(), Stopwatch()
    for model, (x, _) in zip(models[1:], frames[1:], strict=True):
        with with_run, start_run(experiment="bench-models", project=project) as run, log_model:
            run.log_model(model, name="bench", input_example=x.head(5))
    return {
        "n": n,
        "log_model": summarize(log_model.laps),
        "with_run": summarize(with_run.laps),
        "registered_versions": len(list_versions(project, "bench")),
    }


def _fit(x: Any, y: Any) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=200).fit(x, y)


def bench_search(cache: Path, n: int, repeats: int) -> dict[str, Any]:
    """Median of ``repeats`` searches (after one warm-up) over a cached project of ``n`` runs."""
    _, search_runs = _api()
    if not cache.exists():
        _populate(cache, n)
    project = _project(cache)
    found: list[Any] = []

    def search() -> None:
        found[:] = search_runs(
            filter=SEARCH_FILTER, order_by=["metrics.auc DESC"], max_results=100, project=project
        )

    times = timed_repeats(search, repeats=repeats)
    aucs = [run.metrics["auc"] for run in found]
    return {
        "n": n,
        "search": summarize(times),
        "results": len(found),
        "sorted": aucs == sorted(aucs, reverse=True),
        "aucs": aucs,
    }


def _populate(cache: Path, n: int) -> None:
    """Fill a fresh project with populate_runs.populate and move it into ``cache`` when done."""
    from populate_runs import populate

    building = cache.with_name(cache.name + ".building")
    if building.exists():
        import shutil

        shutil.rmtree(building)
    building.mkdir(parents=True)
    started = time.perf_counter()
    project = _project(building)
    populate(project, n, seed=0)
    project.close()
    log(f"Keel: populated {n:,} runs in {time.perf_counter() - started:.0f} s")
    building.rename(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("measurement", choices=["metrics", "models", "search"])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, help="folder of the cached search project")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import keel

    folder = Path.cwd()
    if args.measurement == "metrics":
        result = bench_metrics(folder, args.n)
    elif args.measurement == "models":
        result = bench_models(folder, args.n)
    else:
        if args.cache is None:
            parser.error("search needs --cache")
        result = bench_search(args.cache, args.n, args.repeats)
    emit(args.out, {"tool": "keel", "version": keel.__version__, **result})


if __name__ == "__main__":
    main()
