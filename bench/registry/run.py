"""The registry benchmark: Keel and MLflow side by side, same machine, same run.

Each measurement runs once per tool, in a subprocess of that tool's virtual environment and in
its own temporary folder; this orchestrator collects their JSON, prints the table and writes
bench/results/registry-latest.json. Start it through bench/run.sh, which builds MLflow's venv:

    bash bench/run.sh registry --only search --mlflow-runs 50000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_side import POPULATE_VERSION

from common import BENCH_DIR, CACHE_DIR, REPO, BenchError, Row, print_table, run_side

HERE = Path(__file__).resolve().parent
MEASUREMENTS = ("metrics", "models", "search", "startup")
RESULTS = BENCH_DIR / "results" / "registry-latest.json"


@dataclass(frozen=True)
class Sizes:
    points: int
    models: int
    mlflow_runs: int
    keel_runs: int
    repeats: int


@dataclass(frozen=True)
class Sides:
    keel_python: str
    mlflow_python: str
    sizes: Sizes
    quick: bool

    def run(self, tool: str, script: str, args: list[str]) -> dict[str, Any]:
        python = self.keel_python if tool == "keel" else self.mlflow_python
        print(f"▶ {tool}: {script} {' '.join(args)}", file=sys.stderr, flush=True)
        log_file = CACHE_DIR / "logs" / "registry" / f"{tool}-{Path(script).stem}-{args[0]}.log"
        with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-") as folder:
            return run_side(python, HERE / script, args, cwd=Path(folder), log_file=log_file)


def bench_metrics(sides: Sides) -> tuple[list[Row], dict[str, Any]]:
    n = sides.sizes.points
    keel = sides.run("keel", "keel_side.py", ["metrics", "--n", str(n)])
    mlflow = sides.run("mlflow", "mlflow_side.py", ["metrics", "--n", str(n)])
    stored = [keel["stored_points"], *mlflow["stored_points"].values()]
    note = "" if all(count == n for count in stored) else f"stored points {stored}, expected {n}"
    label = f"log {n:,} metric points"
    main = Row(f"{label}, per call", keel["per_call_seconds"], mlflow["per_call_seconds"])
    main.goal = "Keel < 0.5 s, ≥ 10×"
    main.passed = not note and main.keel is not None and main.keel < 0.5 and _ratio_at_least(main)
    main.note = note or "log_metric per call through the end of the run"
    rows = [
        main,
        Row(f"{label}, MLflow async", keel["per_call_seconds"], mlflow["async_seconds"]),
        Row(f"{label}, MLflow log_batch", keel["per_call_seconds"], mlflow["batch_seconds"]),
    ]
    return rows, {"keel": keel, "mlflow": mlflow}


def bench_models(sides: Sides) -> tuple[list[Row], dict[str, Any]]:
    n = sides.sizes.models
    keel = sides.run("keel", "keel_side.py", ["models", "--n", str(n)])
    mlflow = sides.run("mlflow", "mlflow_side.py", ["models", "--n", str(n)])
    counts = (
        keel["registered_versions"],
        mlflow["registered_versions"],
        mlflow["registered_pinned"],
    )
    note = "" if counts == (n, n, n) else f"registered versions {counts}, expected {n} each"
    label = "register a model version"
    median = Row(
        f"{label} (median of {n})",
        keel["log_model"]["median"],
        mlflow["log_model"]["median"],
        goal="Keel < 50 ms, ≥ 10×",
        note=note or "sklearn LogisticRegression with input example",
    )
    median.passed = not note and median.keel is not None and median.keel < 0.05
    median.passed = median.passed and _ratio_at_least(median)
    rows = [
        median,
        Row(f"{label} (mean of {n})", keel["log_model"]["mean"], mlflow["log_model"]["mean"]),
        Row(
            f"{label}, MLflow given pip_requirements (median)",
            keel["log_model"]["median"],
            mlflow["log_model_pinned"]["median"],
            note="MLflow skips inferring requirements in a subprocess",
        ),
        Row(
            f"{label} with its run's start and end (median)",
            keel["with_run"]["median"],
            mlflow["with_run"]["median"],
        ),
    ]
    return rows, {"keel": keel, "mlflow": mlflow}


def bench_search(sides: Sides) -> tuple[list[Row], dict[str, Any]]:
    sizes = sides.sizes
    repeats = ["--repeats", str(sizes.repeats)]
    mlflow = _search(sides, "mlflow", sizes.mlflow_runs, repeats)
    keel_same = _search(sides, "keel", sizes.mlflow_runs, repeats)
    same = Row(
        f"search {sizes.mlflow_runs:,} runs (like for like)",
        keel_same["search"]["median"],
        mlflow["search"]["median"],
        note=_search_note(keel_same, mlflow),
    )
    same.passed = None if same.note.startswith("same") else False
    raw = {"mlflow": mlflow, f"keel_{sizes.mlflow_runs}": keel_same}
    if sizes.keel_runs == sizes.mlflow_runs:
        keel_goal = keel_same
    else:
        keel_goal = _search(sides, "keel", sizes.keel_runs, repeats)
        raw[f"keel_{sizes.keel_runs}"] = keel_goal
    goal = Row(
        f"search {sizes.keel_runs:,} runs",
        keel_goal["search"]["median"],
        mlflow["search"]["median"] if sizes.keel_runs == sizes.mlflow_runs else None,
        goal="Keel < 200 ms",
        note=f"{keel_goal['results']} results, median of {sizes.repeats}",
    )
    goal.passed = goal.keel is not None and goal.keel < 0.2 and keel_goal["sorted"]
    return [same, goal], raw


def _search(sides: Sides, tool: str, n: int, repeats: list[str]) -> dict[str, Any]:
    folder = CACHE_DIR / "search"
    cache = folder / f"{tool}-{n}-{_cache_key(tool)}"
    for stale in folder.glob(f"{tool}-{n}-*"):  # filled by code that has changed since
        if stale != cache:
            shutil.rmtree(stale)
    folder.mkdir(parents=True, exist_ok=True)
    script = f"{tool}_side.py"
    return sides.run(tool, script, ["search", "--n", str(n), "--cache", str(cache), *repeats])


def _cache_key(tool: str) -> str:
    """Populated databases are rebuilt when what fills them changes."""
    paths = ["bench/registry/populate_runs.py"]
    if tool == "keel":
        paths.append("src/keel/metadata/schema.py")
    else:
        paths.append("bench/requirements-mlflow.txt")
    digest = hashlib.sha256(f"{tool} {POPULATE_VERSION}".encode())
    for path in paths:
        file = REPO / path
        digest.update(file.read_bytes() if file.exists() else b"missing")
    return digest.hexdigest()[:12]


def _search_note(keel: dict[str, Any], mlflow: dict[str, Any]) -> str:
    """Both sides searched the same synthetic runs, so they must return the same AUCs."""
    if not (keel["sorted"] and mlflow["sorted"]):
        return "a side returned results out of order"
    if keel["aucs"] != mlflow["aucs"]:
        return f"results differ: {keel['results']} vs {mlflow['results']} runs or other AUCs"
    return f"same {keel['results']} runs returned by both"


def bench_startup(sides: Sides) -> tuple[list[Row], dict[str, Any]]:
    repeats = ["--repeats", str(sides.sizes.repeats)]
    keel = sides.run("keel", "startup.py", ["keel", *repeats])
    mlflow = sides.run("mlflow", "startup.py", ["mlflow", *repeats])
    imports = Row(
        "import (fresh interpreter)", keel["import"]["median"], mlflow["import"]["median"]
    )
    imports.goal, imports.passed = "Keel < 0.2 s", imports.keel is not None and imports.keel < 0.2
    cli = Row("CLI --help (wall, process start)", keel["help"]["median"], mlflow["help"]["median"])
    cli.goal, cli.passed = "Keel < 0.3 s", cli.keel is not None and cli.keel < 0.3
    return [imports, cli], {"keel": keel, "mlflow": mlflow}


def _ratio_at_least(row: Row, factor: float = 10.0) -> bool:
    return row.ratio is not None and row.ratio >= factor


BENCHES: dict[str, Callable[[Sides], tuple[list[Row], dict[str, Any]]]] = {
    "metrics": bench_metrics,
    "models": bench_models,
    "search": bench_search,
    "startup": bench_startup,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only", action="append", choices=MEASUREMENTS, help="run this measurement (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--mlflow-runs", type=int, help="runs in MLflow's search database")
    parser.add_argument("--keel-runs", type=int, help="runs in Keel's goal search database")
    parser.add_argument("--models", type=int, help="model versions to register per tool")
    parser.add_argument("--mlflow-python", default=str(CACHE_DIR / "mlflow-venv/bin/python"))
    parser.add_argument("--keel-python", default=sys.executable)
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def sizes_for(args: argparse.Namespace) -> Sizes:
    quick = Sizes(points=1_000, models=5, mlflow_runs=1_000, keel_runs=2_000, repeats=3)
    full = Sizes(points=10_000, models=100, mlflow_runs=20_000, keel_runs=100_000, repeats=5)
    base = quick if args.quick else full
    return Sizes(
        points=base.points,
        models=args.models or base.models,
        mlflow_runs=args.mlflow_runs or base.mlflow_runs,
        keel_runs=args.keel_runs or base.keel_runs,
        repeats=base.repeats,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # abspath, not resolve(): a venv's python is a symlink whose target is outside the venv.
    pythons = os.path.abspath(args.keel_python), os.path.abspath(args.mlflow_python)
    sides = Sides(*pythons, sizes_for(args), args.quick)
    rows: list[Row] = []
    raw: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    for name in args.only or MEASUREMENTS:
        try:
            new_rows, raw[name] = BENCHES[name](sides)
        except BenchError as exc:
            new_rows, raw[name] = [Row(name, None, None, passed=False, note=str(exc))], None
        rows += new_rows
    raw["load_after"] = os.getloadavg()[0]
    for row in rows:
        if args.quick and row.goal:  # smoke sizes: the goals are written for the full sizes
            row.passed = None
    print_table("Keel vs MLflow: tracking and registry", rows, caption=_caption(raw, sides))
    _write_results(args.results, rows, raw, sides)
    return 1 if any(row.passed is False for row in rows) else 0


def _caption(raw: dict[str, Any], sides: Sides) -> str:
    versions = {
        side.get("tool"): side.get("version")
        for result in raw.values()
        if isinstance(result, dict)
        for side in result.values()
        if isinstance(side, dict) and side.get("version")
    }
    tools = ", ".join(f"{tool} {version}" for tool, version in sorted(versions.items()))
    parts = ["quick smoke run, goals not judged"] if sides.quick else []
    parts += [tools] if tools else []
    parts.append(f"{os.cpu_count()} cores, Python {platform.python_version()}")
    # Both sides share the machine with whatever else runs; a high load inflates both.
    parts.append(f"load {raw['load_before']:.1f} before, {raw['load_after']:.1f} after")
    return "; ".join(parts)


def _write_results(path: Path, rows: list[Row], raw: dict[str, Any], sides: Sides) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "suite": "registry",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "quick": sides.quick,
        "sizes": sides.sizes.__dict__,
        "rows": [row.to_json() for row in rows],
        "raw": raw,
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", "utf-8")
    print(f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    sys.exit(main())
