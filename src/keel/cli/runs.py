"""`keel runs ...`: list, show, search and compare tracked runs.

Domain code is imported inside each command so that `keel --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from keel.cli.context import JSON_OPTION, project_session

if TYPE_CHECKING:
    from keel.project import Project
    from keel.tracking.query import RunComparison
    from keel.tracking.records import RunInfo

app = typer.Typer(no_args_is_help=True)

# Ids start with 12 hex digits of milliseconds: 16 characters also tell apart runs started in
# the same millisecond, and any unique prefix of 6 or more works in `keel runs show`.
SHORT_ID = 16


@app.command("list")
def list_command(
    experiment: str | None = typer.Option(None, "--experiment", "-e", help="Only this one."),
    status: str | None = typer.Option(
        None, "--status", "-s", help="running, finished, failed or killed."
    ),
    limit: int = typer.Option(20, "--limit", "-n", help="How many of the newest runs."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The newest runs first."""
    from keel.tracking.query import list_runs

    with project_session() as project:
        found = list_runs(project, experiment=experiment, status=status, limit=limit)
    if as_json:
        _print_runs_json(found)
        return
    _print_runs_table("runs", found, [])
    if len(found) == limit:
        _note(f"showing the newest {limit}; --limit N shows more")


@app.command("show")
def show_command(
    run_id: str = typer.Argument(..., help="A run id, or a unique prefix of 6+ characters."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Everything recorded for one run: values, code, environment, artifacts, lineage."""
    from keel.tracking.query import get_run

    with project_session() as project:
        run = get_run(project, run_id)
        environment = _environment(project, run.environment_sha256)
    if as_json:
        from keel.cli.output import print_json

        print_json({**_run_dict(run), "environment": environment})
        return
    _print_run(run, environment)


@app.command("search")
def search_command(
    filter_text: str = typer.Argument(
        "", metavar="FILTER", help="e.g. \"metrics.auc > 0.9 and params.model = 'lgbm'\""
    ),
    order_by: list[str] | None = typer.Option(
        None, "--order-by", "-o", help="KEY [ASC|DESC]; repeat for more keys."
    ),
    experiment: list[str] | None = typer.Option(
        None, "--experiment", "-e", help="Only these experiments; repeat for more."
    ),
    max_results: int = typer.Option(100, "--max-results", "-n", help="At most this many."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Runs matching a filter (metrics.KEY, params.KEY, tags.KEY, attributes; AND/OR/NOT)."""
    from keel.tracking.query import search_runs
    from keel.tracking.search import fields_of, parse_filter, parse_order_by

    with project_session() as project:
        found = search_runs(
            project,
            filter_text,
            order_by=order_by,
            experiments=experiment,
            max_results=max_results,
        )
    if as_json:
        _print_runs_json(found)
        return
    fields = fields_of(parse_filter(filter_text)) + [i.field for i in parse_order_by(order_by)]
    logged = [f.label for f in fields if f.entity != "attributes"]
    _print_runs_table("matching runs", found, list(dict.fromkeys(logged)))


@app.command("compare")
def compare_command(
    run_ids: list[str] = typer.Argument(..., help="Two or more run ids (or unique prefixes)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Params and latest metrics side by side; rows that differ are marked ≠."""
    from keel.tracking.query import compare_runs

    with project_session() as project:
        comparison = compare_runs(project, run_ids)
    if as_json:
        from keel.cli.output import print_json

        print_json(
            {
                "runs": [run.id for run in comparison.runs],
                "params": comparison.params,
                "metrics": comparison.metrics,
                "differing_params": comparison.differing_params,
                "differing_metrics": comparison.differing_metrics,
            }
        )
        return
    _print_comparison(comparison)


def _print_runs_table(title: str, found: list[RunInfo], logged: list[str]) -> None:
    from keel.cli.output import print_table

    columns = ["run id", "experiment", "name", "status", "start", "duration", *logged]
    rows = [
        [
            run.id[:SHORT_ID],
            run.experiment,
            run.name,
            run.status,
            run.start_time,
            _duration(run.duration_seconds),
            *(_logged_value(run, label) for label in logged),
        ]
        for run in found
    ]
    print_table(
        f"{title} ({len(found)})", columns, [[_cell(v) for v in row] for row in rows], markup=True
    )


def _print_run(run: RunInfo, environment: dict[str, Any] | None) -> None:
    from keel.cli.output import print_fields, print_table

    git = None
    if run.git_commit:
        dirty = {True: " (dirty)", False: " (clean)", None: ""}[run.git_dirty]
        git = f"{run.git_commit} on {run.git_branch or '?'}{dirty}"
    env = None
    if run.environment_sha256:
        env = run.environment_sha256
        if environment:
            env += f" (python {environment['python_version']}, {environment['platform']})"
    fields: list[tuple[str, Any]] = [
        ("experiment", run.experiment),
        ("name", run.name),
        ("status", run.status),
        ("error", run.error),
        ("started", run.start_time),
        ("ended", run.end_time),
        ("duration", _duration(run.duration_seconds)),
        ("user", run.user),
        ("parent run", run.parent_run_id),
        ("git", git),
        ("git diff", run.git_diff_sha256),
        ("environment", env),
        ("command", run.command),
        ("seeds", run.seeds or None),
        ("notes", run.notes),
    ]
    print_fields(
        f"run {run.id}", [(k, _cell(v)) for k, v in fields if v not in (None, "")], markup=True
    )
    for title, values in (("params", run.params), ("metrics", run.metrics), ("tags", run.tags)):
        if values:
            print_table(
                title,
                ["key", "value"],
                [[_cell(k), _cell(v)] for k, v in values.items()],
                markup=True,
            )
    if run.artifacts:
        rows = [[_cell(a.path), a.sha256[:12], _size(a.size)] for a in run.artifacts]
        print_table("artifacts", ["path", "sha256", "size"], rows, markup=True)
    if run.inputs:
        rows = [[i.kind, _cell(i.ref), _cell(i.name)] for i in run.inputs]
        print_table("lineage inputs", ["kind", "ref", "name"], rows, markup=True)


def _print_comparison(comparison: RunComparison) -> None:
    from keel.cli.output import print_table

    rows: list[list[str]] = []
    sections = (
        ("params", comparison.params, comparison.differing_params),
        ("metrics", comparison.metrics, comparison.differing_metrics),
    )
    for prefix, values, differing in sections:
        for key, per_run in values.items():
            differs = key in differing
            cells = [_cell(f"{prefix}.{key}"), *(_cell(v) for v in per_run)]
            style = "[bold yellow]{}[/]" if differs else "{}"
            rows.append(["≠" if differs else "", *(style.format(c) for c in cells)])
    columns = ["", "key", *(run.id[:SHORT_ID] for run in comparison.runs)]
    print_table(f"comparing {len(comparison.runs)} runs", columns, rows, markup=True)


def _print_runs_json(found: list[RunInfo]) -> None:
    from keel.cli.output import print_json

    print_json([_run_dict(run) for run in found])


def _run_dict(run: RunInfo) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(run), "duration_seconds": run.duration_seconds}


def _environment(project: Project, sha256: str | None) -> dict[str, Any] | None:
    from dataclasses import asdict

    from keel.errors import NotFoundError
    from keel.tracking.query import get_environment

    if sha256 is None:
        return None
    try:
        return asdict(get_environment(project, sha256))
    except NotFoundError:  # a run may name an environment row that was never written
        return None


def _logged_value(run: RunInfo, label: str) -> Any:
    entity, _, key = label.partition(".")
    values: dict[str, dict[str, Any]] = {
        "metrics": run.metrics,
        "params": run.params,
        "tags": run.tags,
    }
    return values[entity].get(key)


def _cell(value: Any) -> str:
    """Format for a table cell, escaped so that '[...]' in user data is not read as markup."""
    from rich.markup import escape

    from keel.cli.output import format_value

    return escape(format_value(value))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _size(size: int) -> str:
    value, unit = float(size), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def _note(text: str) -> None:
    from keel.cli.output import err_console

    err_console.print(f"[dim]{text}[/]", highlight=False)
