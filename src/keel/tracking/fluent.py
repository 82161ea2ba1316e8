"""Module-level tracking: start a run, find the active one, and log to it without passing it.

The active run lives in a context variable, so each thread and asyncio task has its own; a run
started while another is active must say ``nested=True``. Runs a script never ends are ended
by an atexit hook (failed if an uncaught exception ended the script).

    import keel

    with keel.start_run(experiment="fraud"):
        keel.log_param("lr", 0.1)
        keel.log_metric("auc", 0.91)
"""

from __future__ import annotations

import atexit
import contextvars
import sys
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import StateError
from keel.tracking.records import ArtifactRecord
from keel.tracking.run import Run, describe_error

if TYPE_CHECKING:
    from keel.project import Project

_ACTIVE: contextvars.ContextVar[Run | None] = contextvars.ContextVar("keel_run", default=None)
_OPEN: dict[str, Run] = {}  # runs not ended yet, ended by the atexit hook if the script forgets
_OPEN_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False


def start_run(
    experiment: str | None = None,
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    seeds: Mapping[str, int] | None = None,
    notes: str | None = None,
    nested: bool = False,
    project: Project | None = None,
) -> Run:
    """Start a run in ``experiment`` (created on first use; default: tracking.default_experiment
    in keel.yaml) of ``project`` (default: ``Project.discover()``).

    The git commit, branch, dirty flag and diff, the environment and the command line are
    recorded now. ``seeds`` are recorded as given; ``run.set_seed`` also applies a seed. Use it
    as a context manager (a raising block marks the run failed, Ctrl-C killed), or call
    ``run.end()``.

    >>> with start_run(experiment="fraud", params={"lr": 0.1}) as run:   # doctest: +SKIP
    ...     run.log_metric("auc", 0.91)
    """
    parent = active_run()
    if parent is not None and not nested:
        raise StateError(
            f"run {parent.id} is already active; pass nested=True to start a child run of it, "
            "or end it first (run.end() or leave its `with` block)"
        )
    if project is None:
        from keel.project import Project

        project = Project.discover()
    run = _insert_run(
        project,
        experiment or project.config.tracking.default_experiment,
        name=name,
        params=params,
        tags=tags,
        seeds=seeds,
        notes=notes,
        parent=parent,
    )
    _ACTIVE.set(run)
    _register_open(run)
    return run


def _insert_run(
    project: Project,
    experiment: str,
    *,
    name: str | None,
    params: Mapping[str, Any] | None,
    tags: Mapping[str, Any] | None,
    seeds: Mapping[str, int] | None,
    notes: str | None,
    parent: Run | None,
) -> Run:
    """Validate everything, capture code and environment, then insert the run, its params and
    tags in one transaction (bad input leaves nothing behind)."""
    from keel.tracking import writes
    from keel.tracking.environment import capture_environment, record_environment

    experiment = writes.check_name("experiment name", experiment)
    row: dict[str, Any] = {
        "name": None if name is None else writes.check_name("run name", name),
        "notes": None if notes is None else writes.check_notes(notes),
        "seeds": writes.check_seeds(seeds),
        "parent_run_id": None if parent is None else parent.id,
    }
    param_values = writes.text_values("param", params)
    tag_values = writes.text_values("tag", tags)
    row |= _capture(project)
    env = capture_environment()
    with project.metadata.write() as conn:
        row["experiment_id"] = writes.ensure_experiment(conn, experiment)
        row["environment_sha256"] = record_environment(conn, env)
        writes.insert_run(conn, row)
        writes.write_params(conn, row["id"], param_values)
        writes.write_tags(conn, row["id"], tag_values)
    return Run(project, row["id"], experiment, parent=parent, seeds=row["seeds"])


def _capture(project: Project) -> dict[str, Any]:
    """The run's identity and everything captured without being asked."""
    from keel.core.ids import new_id
    from keel.core.timeutil import now_ms
    from keel.tracking.environment import capture_command, capture_git

    run_id, start = new_id(), now_ms()
    git = capture_git(project.root, with_diff=project.config.tracking.capture_diff)
    # The diff object is stored before the run row: an orphan object is harmless, a row
    # naming a missing object is not.
    diff_sha = project.artifacts.put_bytes(git.diff).sha256 if git.diff else None
    return {
        "id": run_id,
        "status": "running",
        "start_time": start,
        "user": project.user,
        "git_commit": git.commit,
        "git_branch": git.branch,
        "git_dirty": git.dirty,
        "git_diff_sha256": diff_sha,
        "command": capture_command(),
    }


def active_run() -> Run | None:
    """The innermost run started and not yet ended in this context (thread or task), or None."""
    run = _ACTIVE.get()
    while run is not None and run.ended:
        run = run.parent
    return run


def run_ended(run: Run) -> None:
    """Called by Run once it has ended: the active run goes back to its parent."""
    if _ACTIVE.get() is run:
        _ACTIVE.set(active_run())
    with _OPEN_LOCK:
        _OPEN.pop(run.id, None)


def log_param(key: str, value: Any) -> None:
    """Record a param on the active run (see Run.log_param)."""
    _require_active().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    """Record params on the active run (see Run.log_params)."""
    _require_active().log_params(params)


def log_metric(
    key: str, value: float, step: int | None = None, timestamp: datetime | None = None
) -> None:
    """Log a metric point on the active run (see Run.log_metric).

    >>> keel.log_metric("loss", 0.31)   # doctest: +SKIP
    """
    _require_active().log_metric(key, value, step, timestamp)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log metric points on the active run (see Run.log_metrics)."""
    _require_active().log_metrics(metrics, step)


def set_tag(key: str, value: Any) -> None:
    """Set a tag on the active run (see Run.set_tag)."""
    _require_active().set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set tags on the active run (see Run.set_tags)."""
    _require_active().set_tags(tags)


def log_artifact(local_path: str | Path, path: str | None = None) -> list[ArtifactRecord]:
    """Store a file or folder as artifacts of the active run (see Run.log_artifact)."""
    return _require_active().log_artifact(local_path, path)


def log_input(
    kind: str, ref: str, name: str | None = None, details: Mapping[str, Any] | None = None
) -> None:
    """Record a lineage input of the active run (see Run.log_input)."""
    _require_active().log_input(kind, ref, name, details)


def _require_active() -> Run:
    run = active_run()
    if run is None:
        raise StateError("no active run; use `with keel.start_run():`")
    return run


def _register_open(run: Run) -> None:
    global _ATEXIT_REGISTERED
    with _OPEN_LOCK:
        _OPEN[run.id] = run
        if not _ATEXIT_REGISTERED:
            atexit.register(end_open_runs)
            _ATEXIT_REGISTERED = True


def end_open_runs() -> None:
    """End runs a script never ended (the atexit hook): children first; failed if an uncaught
    exception ended the script, killed on Ctrl-C, else finished."""
    with _OPEN_LOCK:
        # Ids sort by creation time, so reversed order ends children before their parents.
        left = sorted(_OPEN.values(), key=lambda run: run.id, reverse=True)
    status, error = _exit_status()
    for run in left:
        try:
            run._finish(status, error)
        except Exception as exc:  # the database may be gone at exit: report, never raise
            print(f"keel: could not end run {run.id} at exit: {exc}", file=sys.stderr)


def _exit_status() -> tuple[str, str | None]:
    # The interpreter sets sys.last_value for an uncaught exception before atexit runs; in an
    # interactive session it may be stale (an old error at the prompt), so it is ignored there.
    exc = getattr(sys, "last_value", None)
    interactive = hasattr(sys, "ps1") or "IPython" in sys.modules or sys.flags.interactive
    if exc is None or interactive:
        return "finished", None
    if isinstance(exc, KeyboardInterrupt):
        return "killed", describe_error(exc)
    return "failed", describe_error(exc)
