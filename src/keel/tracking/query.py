"""Reading tracked runs: get one, list, search with a filter, compare, metric history.

Every function takes the Project and opens one read connection; many runs are hydrated in a
few batched queries (keel.tracking.hydrate), never one query per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, func, select

from keel.core.timeutil import from_ms
from keel.errors import InvalidInputError, NotFoundError
from keel.metadata.schema import environments, experiments, latest_metrics, metrics, runs
from keel.tracking.hydrate import hydrate_runs
from keel.tracking.records import EnvironmentRecord, MetricPoint, RunInfo
from keel.tracking.search import STATUSES, parse_filter, parse_order_by
from keel.tracking.search_sql import build_search, split_by_sort_metric

if TYPE_CHECKING:
    from keel.project import Project

MIN_PREFIX = 6
_SHOWN_CANDIDATES = 10


@dataclass(frozen=True)
class ExperimentInfo:
    name: str
    description: str | None
    created_at: datetime
    run_count: int
    last_run_at: datetime | None


@dataclass(frozen=True)
class RunComparison:
    """Params and latest metrics of several runs side by side; None where a run lacks the key.

    ``params["lr"][i]`` belongs to ``runs[i]``; ``differing_*`` name the keys whose values are
    not all equal (a missing value counts as different from any present one).
    """

    runs: list[RunInfo]
    params: dict[str, list[str | None]]
    metrics: dict[str, list[float | None]]
    differing_params: list[str]
    differing_metrics: list[str]


def get_run(project: Project, run_id: str) -> RunInfo:
    """One run by its id or a unique prefix of at least 6 characters (like git).

    >>> get_run(project, "0190ab3f2c1d").params["model"]
    'lgbm'
    """
    with project.metadata.read() as conn:
        full_id = resolve_run_id(conn, run_id)
        return _hydrated(conn, [full_id])[0]


def list_runs(
    project: Project, *, experiment: str | None = None, status: str | None = None, limit: int = 100
) -> list[RunInfo]:
    """The newest runs first, optionally of one experiment and/or with one status.

    >>> [run.id for run in list_runs(project, experiment="fraud", status="finished", limit=5)]
    """
    _check_limit(limit, "limit")
    if status is not None and status not in STATUSES:
        raise InvalidInputError(f"unknown status {status!r}; valid statuses: {', '.join(STATUSES)}")
    with project.metadata.read() as conn:
        ids = None if experiment is None else _experiment_ids(conn, [experiment])
        stmt = build_search(None, [], dialect=conn.dialect.name, experiment_ids=ids, limit=limit)
        if status is not None:
            stmt = stmt.where(runs.c.status == status)
        return hydrate_runs(conn, conn.execute(stmt).all())


def search_runs(
    project: Project,
    filter: str = "",  # the public name users know from MLflow
    *,
    order_by: str | list[str] | None = None,
    experiments: list[str] | None = None,
    max_results: int = 100,
) -> list[RunInfo]:
    """Runs matching a filter, sorted (default: newest first; ties by run id).

    >>> search_runs(project, "metrics.auc > 0.9 and params.model = 'lgbm'",
    ...             order_by="metrics.auc DESC", max_results=10)

    See keel.tracking.search for the filter grammar. A run missing a metric, param or tag never
    matches a comparison on it; runs missing an order-by key sort last.
    """
    _check_limit(max_results, "max_results")
    tree = parse_filter(filter or "")
    order = parse_order_by(order_by)
    with project.metadata.read() as conn:
        ids = None if experiments is None else _experiment_ids(conn, experiments)
        rows: list[Row[Any]] = []
        for part in split_by_sort_metric(tree, order):
            if len(rows) < max_results:
                stmt = build_search(
                    part,
                    order,
                    dialect=conn.dialect.name,
                    experiment_ids=ids,
                    limit=max_results - len(rows),
                )
                rows.extend(conn.execute(stmt))
        return hydrate_runs(conn, rows)


def compare_runs(project: Project, run_ids: Sequence[str]) -> RunComparison:
    """Params and latest metrics of two or more runs side by side, and which keys differ.

    >>> comparison = compare_runs(project, ["0190ab3f2c1d", "0190ab40aa71"])
    >>> comparison.differing_params
    ['learning_rate']
    """
    if len(run_ids) < 2:
        raise InvalidInputError(f"compare needs at least two run ids, got {len(run_ids)}")
    with project.metadata.read() as conn:
        full_ids = [resolve_run_id(conn, run_id) for run_id in run_ids]
        repeated = sorted({i for i in full_ids if full_ids.count(i) > 1})
        if repeated:
            raise InvalidInputError(f"run {repeated[0]} is given more than once; compare it once")
        found = _hydrated(conn, full_ids)
    params = _side_by_side([run.params for run in found])
    metric_values = _side_by_side([run.metrics for run in found])
    return RunComparison(
        runs=found,
        params=params,
        metrics=metric_values,
        differing_params=[k for k, v in params.items() if len(set(v)) > 1],
        differing_metrics=[k for k, v in metric_values.items() if len(set(v)) > 1],
    )


def metric_history(project: Project, run_id: str, key: str) -> list[MetricPoint]:
    """Every logged point of one metric of a run, by step (then time).

    >>> [p.value for p in metric_history(project, "0190ab3f2c1d", "loss")]
    [0.69, 0.41, 0.33]
    """
    with project.metadata.read() as conn:
        full_id = resolve_run_id(conn, run_id)
        stmt = (
            select(metrics.c.key, metrics.c.value, metrics.c.step, metrics.c.timestamp)
            .where(metrics.c.run_id == full_id, metrics.c.key == key)
            .order_by(metrics.c.step, metrics.c.timestamp, metrics.c.id)
        )
        points = [
            MetricPoint(row.key, float(row.value), int(row.step), _aware(row.timestamp))
            for row in conn.execute(stmt)
        ]
        if not points:
            logged = select(latest_metrics.c.key).where(latest_metrics.c.run_id == full_id)
            keys = sorted(conn.execute(logged).scalars())
            known = f"it logged {', '.join(keys)}" if keys else "it logged no metrics"
            raise NotFoundError(f"run {full_id} has no metric {key!r}; {known}")
    return points


def list_experiments(project: Project) -> list[ExperimentInfo]:
    """Every experiment with its number of runs and latest run start, by name.

    >>> [(e.name, e.run_count) for e in list_experiments(project)]
    [('churn', 12), ('fraud', 40)]
    """
    stmt = (
        select(
            experiments.c.name,
            experiments.c.description,
            experiments.c.created_at,
            func.count(runs.c.id).label("run_count"),
            func.max(runs.c.start_time).label("last_run"),
        )
        .select_from(experiments.outerjoin(runs, runs.c.experiment_id == experiments.c.id))
        .group_by(experiments.c.id, experiments.c.name)
        .order_by(experiments.c.name)
    )
    with project.metadata.read() as conn:
        rows = conn.execute(stmt).all()
    return [
        ExperimentInfo(
            row.name,
            row.description,
            _aware(row.created_at),
            int(row.run_count),
            from_ms(row.last_run),
        )
        for row in rows
    ]


def get_environment(project: Project, sha256: str) -> EnvironmentRecord:
    """The captured environment (python, platform, packages) with this hash."""
    with project.metadata.read() as conn:
        row = conn.execute(select(environments).where(environments.c.sha256 == sha256)).first()
    if row is None:
        raise NotFoundError(f"no environment {sha256!r}; `keel runs show RUN_ID` names a run's")
    return EnvironmentRecord(row.sha256, row.python_version, row.platform, dict(row.packages))


def resolve_run_id(conn: Connection, run_id: str) -> str:
    """The full id of the run whose id is, or uniquely starts with, ``run_id``."""
    text = run_id.strip()
    if conn.execute(select(runs.c.id).where(runs.c.id == text)).first() is not None:
        return text
    if len(text) < MIN_PREFIX:
        raise InvalidInputError(
            f"run id {text!r} is too short to look up; give at least {MIN_PREFIX} characters "
            "(`keel runs list` shows the ids)"
        )
    # substr, not LIKE: case-sensitive on both databases and no wildcard to escape.
    prefix = func.substr(runs.c.id, 1, len(text)) == text
    stmt = select(runs.c.id).where(prefix).order_by(runs.c.id).limit(_SHOWN_CANDIDATES + 1)
    matches = list(conn.execute(stmt).scalars())
    if not matches:
        raise NotFoundError(f"no run with id {text!r}; `keel runs list` shows the runs")
    if len(matches) > 1:
        shown = ", ".join(matches[:_SHOWN_CANDIDATES])
        more = " and more" if len(matches) > _SHOWN_CANDIDATES else ""
        raise InvalidInputError(
            f"run id prefix {text!r} matches several runs: {shown}{more}; give more characters"
        )
    return str(matches[0])


def _hydrated(conn: Connection, ids: list[str]) -> list[RunInfo]:
    stmt = build_search(None, [], dialect=conn.dialect.name).where(runs.c.id.in_(ids))
    by_id = {run.id: run for run in hydrate_runs(conn, conn.execute(stmt).all())}
    return [by_id[i] for i in ids]


def _experiment_ids(conn: Connection, names: Sequence[str]) -> list[int]:
    rows = conn.execute(select(experiments.c.name, experiments.c.id)).all()
    known = {row.name: int(row.id) for row in rows}
    for name in names:
        if name not in known:
            listed = ", ".join(sorted(known)) or "none yet"
            raise NotFoundError(f"no experiment named {name!r}; experiments: {listed}")
    return [known[name] for name in names]


def _side_by_side(dicts: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = sorted({key for d in dicts for key in d})
    return {key: [d.get(key) for d in dicts] for key in keys}


def _check_limit(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive whole number, got {value!r}")


def _aware(ms: int) -> datetime:
    moment = from_ms(ms)
    if moment is None:
        raise ValueError("a NOT NULL time column held NULL")
    return moment
