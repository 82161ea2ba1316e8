"""The features benchmark: Keel's feature store and Feast 0.67 side by side, same machine, same
run, same Parquet data.

Generates the data once (bench/features/dataset.py), then runs each side in its own virtual
environment and temporary folder (bench/features/flow.py: training set, materialize into
SQLite and into Redis, online lookups, start-up), checks that both computed the same values,
prints the table and writes bench/results/features-latest.json. Start it through
bench/run.sh, which builds Feast's venv:

    bash bench/run.sh features [--quick] [--only training|materialize|online|startup]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dataset

from common import BENCH_DIR, CACHE_DIR, REPO, BenchError, Row, print_table, run_side

HERE = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "features-latest.json"
TOOLS = ("keel", "feast")
PHASES = ("training", "materialize", "online", "startup")
# One Redis server for both, each side in a database of its own under a key prefix (Keel) or
# project name (Feast) of its own; each side deletes its keys and reports what is left.
REDIS = {"keel": "redis://127.0.0.1:6379/15", "feast": "redis://127.0.0.1:6379/14"}


@dataclass(frozen=True)
class Goal:
    label: str
    phase: str
    path: tuple[str, ...]  # where the seconds are in a side's result
    factor: float  # Feast / Keel at least this


def goals(spec: dataset.Spec) -> list[Goal]:
    train = (
        f"training set: {spec.feature_rows:,} feature rows, {spec.entity_rows:,} entity rows, "
        f"{len(dataset.TRAIN_FEATURES)} features"
    )
    mat = f"materialize {spec.keys:,} keys × {len(dataset.ONLINE_FEATURES)} features"
    found = [Goal(train, "training", ("training", "seconds"), 3.0)]
    for store in ("sqlite", "redis"):
        found.append(Goal(f"{mat} into {store}", "materialize", (store, "materialize_seconds"), 50))
    for store in ("sqlite", "redis"):
        for size in (1, 100):
            for stat in ("p50", "p99"):
                label = f"online {store}: {size} key{'s' if size > 1 else ''} × 50, {stat}"
                found.append(Goal(label, "online", (store, f"lookup_{size}", stat), 10.0))
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes, a smoke run")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks that both run")
    parser.add_argument("--only", action="append", choices=PHASES, help="run this phase only")
    parser.add_argument("--feast-python", default=str(CACHE_DIR / "feast-venv/bin/python"))
    parser.add_argument("--keel-python", default=sys.executable)
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def run_sides(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    pythons = {"keel": args.keel_python, "feast": args.feast_python}
    phases = [arg for phase in args.only or PHASES for arg in ("--phase", phase)]
    results: dict[str, Any] = {}
    for tool in TOOLS:
        _warm_page_cache(data)  # each side starts with the Parquet files in memory
        print(f"▶ {tool}: {tool}_side.py", file=sys.stderr, flush=True)
        side_args = ["--data", str(data), "--redis", REDIS[tool], *phases]
        with tempfile.TemporaryDirectory(prefix=f"bench-features-{tool}-") as folder:
            try:
                log_file = CACHE_DIR / "logs" / f"features-{tool}.log"
                script = HERE / f"{tool}_side.py"
                python = os.path.abspath(pythons[tool])
                results[tool] = run_side(
                    python, script, side_args, cwd=Path(folder), log_file=log_file
                )
            except BenchError as exc:
                results[tool] = {"errors": {"side": str(exc)}}
    return results


def _warm_page_cache(data: Path) -> None:
    for file in sorted(data.glob("*.parquet")):
        with file.open("rb") as stream:
            while stream.read(1 << 24):
                pass


def _get(side: Any, path: tuple[str, ...]) -> float | None:
    value = side
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value)


def make_rows(results: dict[str, Any], args: argparse.Namespace, data: Path) -> list[Row]:
    spec = dataset.load_spec(data)
    keel, feast = results.get("keel", {}), results.get("feast", {})
    phases = args.only or PHASES
    rows = []
    for goal in goals(spec):
        if goal.phase not in phases:
            continue
        row = Row(goal.label, _get(keel, goal.path), _get(feast, goal.path))
        row.goal = f"≥ {goal.factor:g}× faster"
        row.passed = row.ratio is not None and row.ratio >= goal.factor
        row.note = _note(goal, keel, feast, spec)
        rows.append(row)
    if "startup" in phases:
        for label, key in (("import", "import"), ("import + store", "import_and_store")):
            path = ("startup", key, "median")
            note = "median of 5 fresh interpreters; informational"
            rows.append(Row(f"start-up: {label}", _get(keel, path), _get(feast, path), note=note))
    rows += check_rows(keel, feast, spec, data, phases)
    if args.quick or args.tiny:  # smoke sizes: the goals are written for the full sizes
        for row in rows:
            row.passed = None if row.goal else row.passed
    return rows


def _note(goal: Goal, keel: dict[str, Any], feast: dict[str, Any], spec: dataset.Spec) -> str:
    if goal.phase == "training":
        sides = (("Keel", keel), ("Feast", feast))
        counts = [f"{t} {s['training']['rows']:,} rows" for t, s in sides if _has(s, "training")]
        return f"{', '.join(counts)} of {spec.entity_rows:,} entity rows; to Arrow, best of 3 runs"
    if goal.phase == "materialize":
        store = goal.path[0]
        if store == "sqlite":
            sides = (("Keel", keel), ("Feast", feast))
            sizes = [
                f"{t} {s[store]['file_bytes'] / 1e6:,.1f} MB"
                for t, s in sides
                if "file_bytes" in s.get(store, {})
            ]
            return "SQLite file: " + ", ".join(sizes) + "; one run"
        return "one run"
    size = goal.path[1].removeprefix("lookup_")
    count = spec.lookups_1 if size == "1" else spec.lookups_100
    return f"{count:,} lookups after a warm-up, same keys; SDK call + to_dict()"


def check_rows(
    keel: dict[str, Any], feast: dict[str, Any], spec: dataset.Spec, data: Path, phases: Any
) -> list[Row]:
    """Fast but wrong is a failure: one row per failed side or wrong result."""
    problems: list[tuple[str, str]] = []
    for tool, side in (("keel", keel), ("feast", feast)):
        for step, error in side.get("errors", {}).items():
            problems.append((f"{tool} {step} failed", _last_words(error)))
    if "training" in phases and _has(keel, "training") and _has(feast, "training"):
        problems += _training_problems(keel["training"], feast["training"], spec)
    if {"materialize", "online"} & set(phases):
        want = dataset.expected_profile(data, dataset.probe_keys(spec))
        for tool, side in (("keel", keel), ("feast", feast)):
            for store in ("sqlite", "redis"):
                got = side.get(store, {})
                if "probe" in got and not _same_values(got["probe"], want):
                    problems.append((f"{tool} {store}: wrong online values", "probe keys"))
                left = got.get("redis_keys_left")
                if left:
                    problems.append((f"{tool} {store}: Redis keys left", str(left)))
    return [Row(label, None, None, passed=False, note=note) for label, note in problems]


def _has(side: dict[str, Any], step: str) -> bool:
    """Whether ``step`` finished on that side (a failed step may have left partial figures)."""
    return bool(side.get(step)) and step not in side.get("errors", {})


def _training_problems(
    keel: dict[str, Any], feast: dict[str, Any], spec: dataset.Spec
) -> list[tuple[str, str]]:
    problems = []
    if keel["rows"] != spec.entity_rows:
        problems.append(("keel: training rows", f"{keel['rows']:,} for {spec.entity_rows:,}"))
    # by construction every known-user row finds a value and the other 15 % find none
    with_value = spec.entity_rows - spec.entity_rows // 10 - spec.entity_rows // 20
    for tool, side in (("keel", keel), ("feast", feast)):
        counts = {f["non_null"] for f in side["features"].values()}
        if counts != {with_value}:
            problems.append((f"{tool}: rows with values", f"{sorted(counts)} != {with_value:,}"))
    for name, ours in keel["features"].items():
        theirs = feast["features"][name]["sum"]
        if not math.isclose(ours["sum"], theirs, rel_tol=1e-9):
            problems.append(("training sets differ", f"sum of {name}: {ours['sum']} vs {theirs}"))
            break
    return problems


def _same_values(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> bool:
    for name, expected in want.items():
        values = got.get(name)
        if values is None or len(values) != len(expected):
            return False
        for value, target in zip(values, expected, strict=True):
            if (value is None) != (target is None):
                return False
            if target is not None and not math.isclose(value, target, rel_tol=1e-12):
                return False
    return True


def _last_words(error: str) -> str:
    return " ".join(error.split())[-240:]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = dataset.TINY if args.tiny else dataset.QUICK if args.quick else dataset.FULL
    print(f"▶ data: {spec}", file=sys.stderr, flush=True)
    data = dataset.ensure(spec, CACHE_DIR)
    raw: dict[str, Any] = {"load_before": os.getloadavg()}
    raw["sides"] = run_sides(args, data)
    raw["load_after"] = os.getloadavg()
    rows = make_rows(raw["sides"], args, data)
    title = "Keel vs Feast: feature store"
    smoke = args.quick or args.tiny
    print_table(title, rows, caption=_caption(raw, spec, smoke), other="Feast")
    _write_results(args, rows, raw, spec)
    return 1 if any(row.passed is False for row in rows) else 0


def _caption(raw: dict[str, Any], spec: dataset.Spec, quick: bool) -> str:
    sides = [s for s in raw["sides"].values() if "version" in s]
    parts = ["quick smoke run, goals not judged"] if quick else []
    parts += [f"{s['tool']} {s['version']}" for s in sides]
    parts.append(f"{os.cpu_count()} cores")
    before, after = raw["load_before"][0], raw["load_after"][0]
    parts.append(f"load {before:.1f} before, {after:.1f} after")
    return "; ".join(parts)


def _write_results(
    args: argparse.Namespace, rows: list[Row], raw: dict[str, Any], spec: dataset.Spec
) -> None:
    path: Path = args.results
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "suite": "features",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "quick": args.quick,
        "tiny": args.tiny,
        "spec": spec.__dict__,
        "rows": [_row_json(row) for row in rows],
        "raw": raw,
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", "utf-8")
    print(f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def _row_json(row: Row) -> dict[str, Any]:
    """Row keeps the other tool's figure under the registry suite's name; here it is Feast's."""
    data = row.to_json()
    data["feast"] = data.pop("mlflow")
    return data


if __name__ == "__main__":
    sys.exit(main())
