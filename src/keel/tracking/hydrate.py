"""Build RunInfo objects for many runs in a handful of batched queries (never one per run)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Table, select

from keel.core.timeutil import from_ms
from keel.metadata.schema import latest_metrics, params, run_artifacts, run_inputs, tags
from keel.tracking.records import ArtifactRecord, RunInfo, RunInput

# Stays far below SQLite's and PostgreSQL's bound-parameter limits.
_CHUNK = 500


def hydrate_runs(conn: Connection, rows: Sequence[Row[Any]]) -> list[RunInfo]:
    """RunInfo for each row of ``search_sql.run_columns()``, in the same order.

    Five queries per 500 runs: params, latest metrics, tags, artifacts, lineage inputs.
    """
    ids = [row.id for row in rows]
    params_of = _key_values(conn, params, ids, str)
    metrics_of = _key_values(conn, latest_metrics, ids, float)
    tags_of = _key_values(conn, tags, ids, str)
    artifacts_of: dict[str, list[ArtifactRecord]] = defaultdict(list)
    for row in _rows(conn, run_artifacts, ids, run_artifacts.c.path):
        artifacts_of[row.run_id].append(ArtifactRecord(row.path, row.sha256, int(row.size)))
    inputs_of: dict[str, list[RunInput]] = defaultdict(list)
    order = (run_inputs.c.created_at, run_inputs.c.kind, run_inputs.c.ref)
    for row in _rows(conn, run_inputs, ids, *order):
        inputs_of[row.run_id].append(RunInput(row.kind, row.ref, row.name, row.details or {}))
    return [
        _run_info(
            row,
            params=params_of.get(row.id, {}),
            metrics=metrics_of.get(row.id, {}),
            tags=tags_of.get(row.id, {}),
            artifacts=artifacts_of.get(row.id, []),
            inputs=inputs_of.get(row.id, []),
        )
        for row in rows
    ]


def _run_info(row: Row[Any], **logged: Any) -> RunInfo:
    start = from_ms(row.start_time)
    if start is None:  # the column is NOT NULL; this only guards a corrupt row
        raise ValueError(f"run {row.id} has no start_time")
    return RunInfo(
        id=row.id,
        experiment=row.experiment_name,
        name=row.name,
        status=row.status,
        start_time=start,
        end_time=from_ms(row.end_time),
        parent_run_id=row.parent_run_id,
        user=row.user,
        error=row.error,
        notes=row.notes,
        git_commit=row.git_commit,
        git_branch=row.git_branch,
        git_dirty=row.git_dirty,
        git_diff_sha256=row.git_diff_sha256,
        environment_sha256=row.environment_sha256,
        command=row.command,
        seeds={str(k): int(v) for k, v in (row.seeds or {}).items()},
        **logged,
    )


def _key_values(
    conn: Connection, table: Table, ids: Sequence[str], cast: Callable[[Any], Any]
) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = defaultdict(dict)
    columns = (table.c.run_id, table.c.key, table.c.value)
    for row in _rows(conn, table, ids, table.c.key, columns=columns):
        result[row.run_id][row.key] = cast(row.value)
    return result


def _rows(
    conn: Connection,
    table: Table,
    ids: Sequence[str],
    *order: Any,
    columns: Sequence[Any] | None = None,
) -> Iterator[Row[Any]]:
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        stmt = select(*(columns or table.c)).where(table.c.run_id.in_(chunk))
        yield from conn.execute(stmt.order_by(table.c.run_id, *order))
