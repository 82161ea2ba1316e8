"""`keel reproduce MODEL@VERSION`: rebuild a registered model from its recorded code, data,
params, seed (and, with --env, package versions) and report whether it is the same model.
Exit code 0 only when it is (bit-identical, or every prediction within --rtol/--atol)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from keel.training.reproduce import ReproductionReport

_SHOWN_PACKAGES = 8


def register(app: typer.Typer) -> None:
    """Add the `reproduce` command to the root app."""
    app.command("reproduce")(reproduce)


def reproduce(
    ref: str = typer.Argument(..., metavar="MODEL@VERSION", help="e.g. fraud@3 or fraud@champion"),
    env: bool = typer.Option(
        False, "--env", help="Run in a new virtual environment with the recorded package versions."
    ),
    rtol: float | None = typer.Option(
        None, "--rtol", help="Accept predictions within this relative difference."
    ),
    atol: float | None = typer.Option(
        None, "--atol", help="Accept predictions within this absolute difference."
    ),
    keep: bool = typer.Option(False, "--keep", help="Keep the worktree under .keel/reproduce/."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Rebuild a registered model from what its run recorded and compare it with the original."""
    from keel.cli.context import project_session
    from keel.cli.output import err_console
    from keel.training.reproduce import reproduce as run_reproduction

    with project_session() as project, err_console.status("reproducing " + ref) as status:

        def show(message: str) -> None:
            status.update(message.strip()[:100])
            if not message.startswith("  "):  # a step of ours, not a line of the trainer
                err_console.print("• " + message, markup=False, highlight=False)

        report = run_reproduction(
            project, ref, env=env, rtol=rtol, atol=atol, keep=keep, progress=show
        )
    if as_json:
        from keel.cli.output import print_json

        print_json(report_dict(report))
    else:
        print_report(report)
    raise typer.Exit(0 if report.reproduced else 1)


def print_report(report: ReproductionReport) -> None:
    """The one-screen summary: verdict, code, data, environment, model and predictions."""
    from rich.table import Table
    from rich.text import Text

    from keel.cli.output import console

    colour = "green" if report.reproduced else "red"
    table = Table(title=f"Reproduction of {report.model}", show_header=False, header_style="bold")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("result", Text(report.status.upper(), style=f"bold {colour}"))
    params = ", ".join(f"{k}={v}" for k, v in report.params.items()) or "none"
    table.add_row("trainer", f"{report.trainer}, seed {report.seed}, params {params}")
    table.add_row("recorded run", report.run_id)
    table.add_row("rebuilt run", f"{report.new_run_id} (experiment 'reproductions')")
    diff = "with its recorded diff" if report.diff_applied else "clean"
    table.add_row("code", f"commit {report.commit[:12]} ({diff})")
    if report.omitted_files:
        table.add_row(
            "",
            Text(
                "missing (too large for the diff): " + ", ".join(report.omitted_files),
                style="yellow",
            ),
        )
    for check in report.datasets:
        mark = (
            "restored" if check.ok else f"MISMATCH: worktree has {(check.restored or 'none')[:12]}"
        )
        table.add_row(
            "data",
            Text(f"{check.path} {check.recorded[:12]} {mark}", style="" if check.ok else "red"),
        )
    table.add_row("environment", _environment_text(report))
    comparison = report.comparison
    same = "identical" if comparison.identical else "DIFFERENT"
    table.add_row(
        "artifact",
        f"{same}: recorded {comparison.recorded_sha256[:12]}  rebuilt {comparison.new_sha256[:12]}",
    )
    for file in comparison.files:
        table.add_row(
            "", f"{file.path}: {(file.recorded or 'absent')[:12]} -> {(file.new or 'absent')[:12]}"
        )
    predictions = comparison.predictions
    if predictions is not None:
        table.add_row(
            "predictions",
            f"{predictions.output} on {predictions.rows} validation rows: "
            f"{predictions.differing_rows} differ, max abs {predictions.max_abs:.3g}, "
            f"max rel {predictions.max_rel:.3g}" + _tolerance(report),
        )
        for row, old, new in predictions.examples[:3]:
            table.add_row("", f"row {row}: {old} -> {new}")
    for name, (old_value, new_value) in report.metrics.items():
        table.add_row("metric", f"{name}: {_num(old_value)} -> {_num(new_value)}")
    for reason in report.nondeterminism:
        table.add_row("warning", Text(reason, style="yellow"))
    for warning in comparison.warnings:
        table.add_row("warning", Text(warning, style="yellow"))
    if report.worktree is not None:
        table.add_row("worktree", str(report.worktree))
    console.print(table)


def report_dict(report: ReproductionReport) -> dict[str, object]:
    """The report as plain JSON-ready data (for --json)."""
    comparison = report.comparison
    predictions = comparison.predictions
    return {
        "model": report.model,
        "status": report.status,
        "reproduced": report.reproduced,
        "trainer": report.trainer,
        "seed": report.seed,
        "params": report.params,
        "run_id": report.run_id,
        "new_run_id": report.new_run_id,
        "commit": report.commit,
        "diff_applied": report.diff_applied,
        "datasets": [
            {"path": c.path, "recorded": c.recorded, "restored": c.restored}
            for c in report.datasets
        ],
        "environment": {
            "python": [report.environment.recorded_python, report.environment.current_python],
            "changes": {c.name: [c.recorded, c.current] for c in report.environment.changes},
            "isolated": report.isolated_environment,
        },
        "artifact": {
            "recorded": comparison.recorded_sha256,
            "rebuilt": comparison.new_sha256,
            "differing_files": [f.path for f in comparison.files],
        },
        "predictions": None
        if predictions is None
        else {
            "output": predictions.output,
            "rows": predictions.rows,
            "differing_rows": predictions.differing_rows,
            "max_abs": predictions.max_abs,
            "max_rel": predictions.max_rel,
        },
        "metrics": {k: list(v) for k, v in report.metrics.items()},
        "worktree": None if report.worktree is None else str(report.worktree),
    }


def _environment_text(report: ReproductionReport) -> str:
    env = report.environment
    where = "recorded versions (--env)" if report.isolated_environment else "this environment"
    python = f"Python {env.recorded_python}"
    if env.current_python != env.recorded_python:
        python += f" -> {env.current_python}"
    if not env.changes:
        return f"{where}: {python}, all packages as recorded"
    shown = [c.describe() for c in env.changes[:_SHOWN_PACKAGES]]
    more = len(env.changes) - len(shown)
    counts = ", ".join(f"{len(env.of_kind(k))} {k}" for k in ("changed", "added", "removed"))
    return f"{where}: {python}; {counts}: " + "; ".join(shown) + (f"; +{more} more" if more else "")


def _tolerance(report: ReproductionReport) -> str:
    if report.rtol is None and report.atol is None:
        return ""
    return f" (tolerance rtol={report.rtol or 0:g}, atol={report.atol or 0:g})"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
