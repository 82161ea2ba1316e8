"""Experiment tracking: runs with their params, metrics, artifacts, lineage inputs and the code
and environment they ran on (write side), and queries over them (read side)."""

from __future__ import annotations

# --- write side: runs, batched metrics, automatic capture ---------------------------------
from keel.tracking.environment import (
    GitState,
    capture_environment,
    capture_git,
    record_environment,
)
from keel.tracking.fluent import (
    active_run,
    log_artifact,
    log_input,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    set_tag,
    set_tags,
    start_run,
)
from keel.tracking.run import Run

__all__ = [
    "GitState",
    "Run",
    "active_run",
    "capture_environment",
    "capture_git",
    "log_artifact",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "record_environment",
    "set_tag",
    "set_tags",
    "start_run",
]

# --- read side: queries and search (extend with `__all__ += [...]`) -----------------------
from keel.tracking.query import (
    ExperimentInfo,
    RunComparison,
    compare_runs,
    get_environment,
    get_run,
    list_experiments,
    list_runs,
    metric_history,
    search_runs,
)

__all__ += [
    "ExperimentInfo",
    "RunComparison",
    "compare_runs",
    "get_environment",
    "get_run",
    "list_experiments",
    "list_runs",
    "metric_history",
    "search_runs",
]
