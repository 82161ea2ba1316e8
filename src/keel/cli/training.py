"""`keel train`: run a project's trainer as a tracked run, with a progress display and a
one-screen summary — a plain command any scheduler (cron, Airflow, a Kubernetes CronJob) can
run."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from keel.training.train import TrainResult


def register(app: typer.Typer) -> None:
    """Add the `train` command to the root app."""
    app.command("train")(train)


def train(
    name: str = typer.Argument(..., metavar="NAME", help="The trainer's name (@keel.trainer)."),
    param: list[str] = typer.Option(
        [], "--param", "-p", metavar="KEY=VALUE", help="A param value; repeat for several."
    ),
    data_rev: str | None = typer.Option(
        None, "--data-rev", help="Read the entities at this git revision (tag, branch, commit)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random generator."),
    experiment: str | None = typer.Option(
        None, "--experiment", help="Experiment of the run (default: the trainer's name)."
    ),
    no_register: bool = typer.Option(
        False, "--no-register", help="Log the run but register no model version."
    ),
    file: Path | None = typer.Option(
        None, "--file", help="The trainer file (default: train.py in the project root)."
    ),
    output: Path | None = typer.Option(
        None, "--output", help="Also save the model (and result.json) into this empty folder."
    ),
    reproduce: bool = typer.Option(
        False,
        "--reproduce",
        help="Rebuild a past model: accept any registered feature version, register nothing.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train a model with a declared trainer: training set through the feature store, time
    split, fit, evaluation on the validation period, and a run with full lineage; registers
    the model version (unless --no-register)."""
    from keel.cli.context import project_session
    from keel.training.params import parse_assignments
    from keel.training.seeding import NondeterminismWarning
    from keel.training.train import train as run_trainer

    params = parse_assignments(param)
    with project_session() as project:
        job = partial(
            run_trainer,
            name,
            params=params,
            data_rev=data_rev,
            seed=seed,
            experiment=experiment,
            register=not no_register,
            file=file,
            output=output,
            reproduce=reproduce,
            project=project,
        )
        with warnings.catch_warnings():
            # The summary lists them (and --json has them): not twice, not as raw warnings.
            warnings.simplefilter("ignore", NondeterminismWarning)
            result = job() if as_json else _with_progress(job)
    if as_json:
        from keel.cli.output import print_json

        print_json(_as_dict(result))
    else:
        _summary(result)


def _with_progress(job: Callable[..., TrainResult]) -> TrainResult:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from keel.cli.output import console
    from keel.training.train import STEPS

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        tasks = [progress.add_task(step, start=False, total=1) for step in STEPS]
        current: list[int] = []

        def on_step(index: int) -> None:
            if current:
                progress.update(tasks[current[-1]], completed=1)
                progress.stop_task(tasks[current[-1]])
            current.append(index)
            progress.start_task(tasks[index])

        result = job(on_step=on_step)
        if current:
            progress.update(tasks[current[-1]], completed=1)
            progress.stop_task(tasks[current[-1]])
    return result


def _summary(result: TrainResult) -> None:
    from rich.rule import Rule

    from keel.cli.output import console, print_fields, print_table

    record = result.record
    split = record["split"]
    version = result.model_version
    console.print(Rule(f"keel train {result.trainer}"))
    print_fields(
        "Run",
        [
            ("run", f"{result.run_id} (experiment {record['experiment']})"),
            ("model version", version.ref if version is not None else "not registered"),
            ("artifact sha256", result.artifact_sha256),
            ("params", record["params"] or "none"),
            ("seed", record["seed"]),
            ("data", f"{record['entities']} @ {record['data_rev'] or 'worktree'}"),
            ("features", f"{len(record['features'])}: {', '.join(record['features'])}"),
            (
                "split",
                f"train {split['train_rows']} rows before {split['valid_from']}, validate "
                f"{split['valid_rows']} rows until {split['valid_until'] or 'the end'}",
            ),
            ("training set", record["training_set"]),
            *([("output", str(result.output))] if result.output is not None else []),
        ],
    )
    print_table("Validation metrics", ["metric", "value"], sorted(result.metrics.items()))
    for reason in result.nondeterminism:
        console.print(f"[yellow]nondeterministic:[/] {reason}", highlight=False)


def _as_dict(result: TrainResult) -> dict[str, Any]:
    version = result.model_version
    return {
        "run_id": result.run_id,
        "trainer": result.trainer,
        "model_version": version.ref if version is not None else None,
        "artifact_sha256": result.artifact_sha256,
        "metrics": result.metrics,
        "nondeterminism": result.nondeterminism,
        "output": None if result.output is None else str(result.output),
        "train": result.record,
    }
