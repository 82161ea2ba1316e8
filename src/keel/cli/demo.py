"""`keel demo`: the whole platform, end to end, on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from keel.demo.pipeline import DemoResult


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    directory: Path = typer.Option(
        Path("keel-demo"), "--dir", help="Folder for the demo project (recreated on each run)."
    ),
    rows: int = typer.Option(1_000_000, "--rows", min=10_000, help="Transactions to generate."),
    seed: int = typer.Option(7, "--seed", help="Seed of the synthetic data and the models."),
) -> None:
    """Run the platform end to end: data, features, training, registry, serving checks."""
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from keel.cli.output import console
    from keel.demo.pipeline import STEPS, prepare_directory, run_demo

    directory = directory.resolve()
    prepare_directory(directory)
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        tasks = [progress.add_task(step, start=False, total=1) for step in STEPS]

        def on_step(index: int) -> None:
            if index > 0:
                progress.update(tasks[index - 1], completed=1)
                progress.stop_task(tasks[index - 1])
            progress.start_task(tasks[index])

        result = run_demo(directory, n_rows=rows, seed=seed, on_step=on_step)
        progress.update(tasks[-1], completed=1)
        progress.stop_task(tasks[-1])
    _summary(result, time.perf_counter() - started)


def _summary(result: DemoResult, seconds: float) -> None:
    from rich.rule import Rule

    from keel.cli.lineage import print_lineage_tree
    from keel.cli.output import console, print_table
    from keel.demo.pipeline import EXPERIMENT, MODEL_NAME
    from keel.registry.aliases import alias_history
    from keel.registry.lineage import lineage
    from keel.tracking.query import search_runs

    project = result.project
    console.print(Rule(f"Keel demo — {result.rows:,} transactions, {seconds:.1f} s"))
    runs = search_runs(project, f"experiment = '{EXPERIMENT}'", order_by="metrics.auc DESC")
    print_table(
        "Runs, best first (keel runs search \"experiment = 'fraud-demo'\" --order-by "
        "'metrics.auc DESC')",
        ["run", "model", "status", "auc", "avg precision", "git commit"],
        [
            (
                r.id[:16],
                r.params.get("model"),
                r.status,
                r.metrics.get("auc"),
                r.metrics.get("average_precision"),
                (r.git_commit or "")[:10],
            )
            for r in runs
        ],
    )
    print_table(
        f"Alias history of '{MODEL_NAME}' (keel models history {MODEL_NAME})",
        ["when", "alias", "from", "to", "by", "why"],
        [
            (c.at, c.alias, c.from_version, c.to_version, c.author, c.reason)
            for c in alias_history(project, MODEL_NAME)
        ],
    )
    shared = result.shared
    console.print(
        f"Data shared: {shared.pushed} object(s), {shared.bytes / 1e6:.1f} MB pushed to remote "
        f"'shared' ({shared.remote}; keel data push); a fresh git clone pulled "
        f"{shared.pulled} (keel data pull) and "
        + ("matched byte for byte, status clean." if shared.identical else "DID NOT MATCH.")
    )
    console.print(f"Lineage of the champion (keel lineage {MODEL_NAME}@champion):")
    print_lineage_tree(lineage(project, f"{MODEL_NAME}@champion"))
    _feature_store_summary(result)
    console.print(
        f"\nThe demo project is in {project.root}. Try: cd {project.root} && keel models show "
        f"{MODEL_NAME} && keel lineage --dataset {result.dataset_sha256[:12]}"
    )


def _feature_store_summary(result: DemoResult) -> None:
    from keel.cli.output import console, print_table
    from keel.demo.pipeline import MODEL_NAME

    print_table(
        "Feature definitions (keel features list)",
        ["name", "kind", "version", "status"],
        [(v.name, v.kind, v.version[:12], v.status) for v in result.feature_views],
    )
    console.print(
        f"Both models were trained by `keel train {MODEL_NAME}` on training sets built through "
        f"the feature store; `keel lineage {MODEL_NAME}@champion` names the feature versions, "
        "the training-set fingerprint and the data they came from."
    )
    serving = result.serving
    lookup = serving.lookup
    entity = ", ".join(f"{k}={lookup[k]}" for k in ("user_id", "merchant_id", "amount"))
    print_table(
        f"Online lookup at the end of the data ({entity}; keel features get-online "
        "--service fraud_features)",
        ["feature", "value", "version"],
        [
            (name, _short(lookup[name]), (version or "")[:12])
            for name, version in serving.versions.items()
        ],
    )
    skew = serving.skew
    print_table(
        f"Skew check: {serving.lookups} logged lookups recomputed offline "
        "(keel features skew-check)",
        ["feature", "rows", "mismatches", "rate"],
        [(f.feature, f.rows, f.mismatches, f"{f.rate:.2%}") for f in skew.features],
    )
    verdict = "no training-serving skew" if skew.ok else "SKEW FOUND"
    console.print(
        f"{verdict}; {serving.materialized_rows:,} source rows materialized into the online store."
    )
    _deployment_summary(result)
    from keel.cli.reproduce import print_report

    console.print(f"Reproduction of {MODEL_NAME}@champion (keel reproduce {MODEL_NAME}@champion):")
    print_report(result.reproduction)


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _deployment_summary(result: DemoResult) -> None:
    from keel.cli.deploy import print_history
    from keel.cli.deploy_control import print_report
    from keel.cli.output import console, print_table
    from keel.demo.deployment import ENDPOINT

    deployment = result.deployment
    console.print(
        f"Served {deployment.requests} replayed requests in-process through the model server "
        f"(keel serve); the challenger ran in shadow (keel deploy report {ENDPOINT}):"
    )
    print_report(deployment.shadow)
    print_table(
        f"Canary ramp of a retrained model, 1 s holds (keel deploy tick {ENDPOINT})",
        ["tick", "action", "share", "message"],
        [
            (i + 1, t.action, "" if t.percent is None else f"{t.percent:g} %", t.message)
            for i, t in enumerate(deployment.ticks)
        ],
    )
    print_history(ENDPOINT, deployment.history)
