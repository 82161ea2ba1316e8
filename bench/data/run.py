"""The data benchmark: Keel and DVC side by side, same machine, same run, same data.

Generates the data set once (bench/data/dataset.py: 4 × 400 MiB + 10,000 × ~40 KiB), starts a
SeaweedFS S3 server (tests/support/s3_server.py) with one bucket per tool, then runs each
tool's side in its own virtual environment and temporary folder (bench/data/flow.py: add,
re-add, status, push, pull, each a whole CLI command); prints the table and writes
bench/results/data-latest.json. Start it through bench/run.sh, which builds DVC's venv:

    bash bench/run.sh data [--quick] [--repeats N] [--transfer-repeats N] [--only keel|dvc]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dataset
import flow

from common import BENCH_DIR, CACHE_DIR, REPO, BenchError, Row, print_table, run_side

HERE = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "data-latest.json"
TOOLS = ("dvc", "keel")
BUCKETS = {"keel": "keel-bench", "dvc": "dvc-bench"}
VOLUME_MB = 512


@dataclass(frozen=True)
class Goal:
    label: str
    key: str  # the side's result field
    factor: float  # DVC / Keel at least this


GOALS = [
    Goal("first add (CLI wall time)", "add", 2.0),
    Goal("re-add, unchanged", "readd", 4.0),
    Goal("status, unchanged", "status", 4.0),
    Goal("push to SeaweedFS S3", "push", 3.0),
    Goal("pull, empty cache and workspace", "pull", 3.0),
]

# Rows of context beside push and pull: (label, the side's result field, ratio shown, note).
CPU_CONTEXT = [
    (
        "S3 server CPU during",
        "server_cpu",
        True,
        "SeaweedFS user + system time, median of the runs; it shares the cores with the client",
    ),
    (
        "CPU taken by the host during",
        "stolen_cpu",
        False,
        "steal time of both cores (/proc/stat), median of the runs: other virtual machines' "
        "work, not either tool's",
    ),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="36 MB of data, a smoke run")
    parser.add_argument("--repeats", type=_runs, default=5, help="runs of re-add and status")
    parser.add_argument(
        "--transfer-repeats", type=_runs, default=3, help="runs of push and pull (best counts)"
    )
    parser.add_argument("--only", action="append", choices=TOOLS, help="run this side only")
    parser.add_argument("--dvc-python", default=str(CACHE_DIR / "dvc-venv/bin/python"))
    parser.add_argument("--keel-python", default=sys.executable)
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def _runs(text: str) -> int:
    """A number of runs: at least one (a step timed zero times has no figure)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of runs of 1 or more")
    return int(text)


def run_sides(args: argparse.Namespace, data_set: Path) -> dict[str, Any]:
    """Each side in turn against one S3 server, each in its own bucket and folder.

    Every folder is deleted only once all sides are done: on this machine's ext4 (no journal)
    the inode allocator skips inodes freed in the last minutes, reading each one's table
    block, so the 40,000 files a side deletes would slow every file the next side creates."""
    sys.path.insert(0, str(REPO))
    from tests.support import s3_server as weed

    pythons = {"keel": args.keel_python, "dvc": args.dvc_python}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as work:
        # Volumes of 512 MB: a bucket's first write grows 7 of them, room for a whole push.
        # With the tests' 64 MB ones, every 450 MB or so a write finds all of its bucket's
        # volumes full and waits while new ones are grown, the machine idle meanwhile.
        collections = len(args.only or TOOLS) * args.transfer_repeats + 1  # + the ready probe
        process, server = weed.start(
            Path(work) / "weed", volume_mb=VOLUME_MB, max_volumes=collections * 7 + 7
        )
        try:
            for tool in args.only or TOOLS:
                buckets = [
                    flow.bucket_for(BUCKETS[tool], push) for push in range(args.transfer_repeats)
                ]
                for bucket in buckets:
                    _make_bucket(server, bucket)
                side_args = [
                    *("--dataset", str(data_set), "--endpoint", server.endpoint_url),
                    *("--bucket", BUCKETS[tool], "--key", server.key, "--secret", server.secret),
                    *("--repeats", str(args.repeats)),
                    *("--transfer-repeats", str(args.transfer_repeats)),
                    *("--server-pid", str(process.pid)),
                ]
                side = Path(work) / tool
                side.mkdir()
                results[tool] = _run_side(tool, os.path.abspath(pythons[tool]), side_args, side)
                if isinstance(results[tool], dict):
                    usage = [_bucket_usage(server, bucket) for bucket in buckets]
                    results[tool]["remote_objects"] = usage
        finally:
            weed.stop(process)
    return results


def _run_side(tool: str, python: str, side_args: list[str], folder: Path) -> dict[str, Any] | str:
    print(f"▶ {tool}: {tool}_side.py", file=sys.stderr, flush=True)
    try:
        script = HERE / f"{tool}_side.py"
        log_file = CACHE_DIR / "logs" / f"data-{tool}.log"
        return run_side(python, script, side_args, cwd=folder, log_file=log_file)
    except BenchError as exc:
        return str(exc)


def _client(server: Any) -> Any:
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.key,
        aws_secret_access_key=server.secret,
        region_name="us-east-1",
    )


def _make_bucket(server: Any, bucket: str) -> None:
    _client(server).create_bucket(Bucket=bucket)


def _bucket_usage(server: Any, bucket: str) -> dict[str, int]:
    """What a push left on the server: the number of objects and their bytes."""
    pages = _client(server).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    sizes = [item["Size"] for page in pages for item in page.get("Contents", [])]
    return {"objects": len(sizes), "bytes": sum(sizes)}


def make_rows(results: dict[str, Any], quick: bool, repeats: int, transfers: int) -> list[Row]:
    keel, dvc = (results.get(tool) for tool in ("keel", "dvc"))
    rows = []
    for goal in GOALS:
        row = Row(goal.label, _seconds(keel, goal.key), _seconds(dvc, goal.key))
        row.goal = f"≥ {goal.factor:g}× faster"
        row.passed = row.ratio is not None and row.ratio >= goal.factor
        if keel is None or dvc is None:  # --only: one side was not run, nothing to judge
            row.passed = None
        if goal.key == "pull" and not all(_pulled_right(side) for side in (keel, dvc)):
            row.passed = False  # fast but wrong is a failure
        row.note = _note(goal.key, repeats, transfers, keel, dvc)
        rows.append(row)
    extra = Row(
        "status against the remote (after push)",
        _seconds(keel, "remote_status"),
        _seconds(dvc, "remote_status"),
        note="keel data status with a default remote; dvc status --cloud",
    )
    rows.append(extra)
    for label, key, compared, note in CPU_CONTEXT:
        for step in ("push", "pull"):
            keel_cpu, dvc_cpu = (_median_of(side, key, step) for side in (keel, dvc))
            rows.append(Row(f"{label} {step}", keel_cpu, dvc_cpu, note=note, compared=compared))
    for tool, side in (("keel", keel), ("dvc", dvc)):
        error = side if isinstance(side, str) else (side or {}).get("error")
        if error:
            note = _last_words(error)
            rows.append(Row(f"{tool} side failed", None, None, passed=False, note=note))
        elif not _pulled_right(side):
            note = json.dumps(side["pull_check"])[:300]
            rows.append(Row(f"{tool}: pulled bytes differ", None, None, passed=False, note=note))
        elif not _pushed_alike(side):
            note = f"the pushes left different buckets: {side['remote_objects']}"
            rows.append(Row(f"{tool}: pushes differ", None, None, passed=False, note=note))
    if quick:  # smoke sizes: the goals are written for the full data set
        for row in rows:
            row.passed = None if row.goal else row.passed
    return rows


def _last_words(error: str) -> str:
    """The end of a failed command's output on one line, without rich's box drawing."""
    words = error.translate({ord(c): " " for c in "│╭╮╰╯─"}).split()
    return " ".join(words)[-240:]


def _pulled_right(side: Any) -> bool:
    """A side that did not run has nothing wrong to report here; its failure has its own row."""
    return not isinstance(side, dict) or bool(side.get("pull_check", {"ok": True})["ok"])


def _pushed_alike(side: Any) -> bool:
    """Every push went into an empty bucket, so each must have left the same objects."""
    usage = side.get("remote_objects", []) if isinstance(side, dict) else []
    return all(bucket == usage[0] for bucket in usage)


def _seconds(side: Any, key: str) -> float | None:
    if not isinstance(side, dict) or key not in side:
        return None
    value = side[key]
    # best of the repeats: other work on the machine only ever adds time, to either side
    return float(value["min"] if isinstance(value, dict) else value)


def _median_of(side: Any, key: str, step: str) -> float | None:
    """The median of the CPU seconds a side recorded under ``key`` for each run of ``step``."""
    if not isinstance(side, dict):
        return None
    values = side.get(key, {}).get(step)
    return float(statistics.median(values)) if values else None


def _note(key: str, repeats: int, transfers: int, keel: Any, dvc: Any) -> str:
    if key in ("readd", "status"):
        return f"best of {repeats} runs"
    if key not in ("push", "pull"):
        return "one run"
    runs = "one run" if transfers == 1 else f"best of {transfers} runs"
    medians = [_median(side, key) for side in (keel, dvc)]
    if transfers > 1 and None not in medians:
        keel_median, dvc_median = medians
        runs += f" (medians {keel_median:.2f} vs {dvc_median:.2f} s)"
    return runs + ("; bytes checked against the data set's sha256" if key == "pull" else "")


def _median(side: Any, key: str) -> float | None:
    if not isinstance(side, dict) or not isinstance(side.get(key), dict):
        return None
    return float(side[key]["median"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = dataset.QUICK if args.quick else dataset.FULL
    data_set = dataset.ensure(spec)
    manifest = dataset.load_manifest(data_set)
    raw: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    raw["sides"] = run_sides(args, data_set)
    raw["load_after"] = os.getloadavg()[0]
    rows = make_rows(raw["sides"], args.quick, args.repeats, args.transfer_repeats)
    title = "Keel vs DVC: data versioning"
    print_table(title, rows, caption=_caption(raw, manifest, args.quick), other="DVC")
    _write_results(args, rows, raw, manifest)
    return 1 if any(row.passed is False for row in rows) else 0


def _caption(raw: dict[str, Any], manifest: dict[str, Any], quick: bool) -> str:
    sides = raw["sides"].values()
    versions = [f"{s['tool']} {s['version']}" for s in sides if isinstance(s, dict)]
    files = len(manifest["files"])
    parts = ["quick smoke run, goals not judged"] if quick else []
    parts.append(f"{files:,} files, {dataset.total_bytes(manifest) / 1e9:.2f} GB")
    parts += versions
    parts.append(f"{os.cpu_count()} cores, {_filesystem()}")
    parts.append(f"load {raw['load_before']:.1f} before, {raw['load_after']:.1f} after")
    return "; ".join(parts)


def _filesystem() -> str:
    """Which link types a tool can use depends on it: ext4 has no reflink, so both copy."""
    where = tempfile.gettempdir()
    done = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "-T", where], capture_output=True, text=True
    )
    return f"{where} on {done.stdout.strip() or 'an unknown file system'}"


def _write_results(
    args: argparse.Namespace, rows: list[Row], raw: dict[str, Any], manifest: dict[str, Any]
) -> None:
    path: Path = args.results
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "suite": "data",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "quick": args.quick,
        "data_set": {"spec": manifest["spec"], "bytes": dataset.total_bytes(manifest)},
        "rows": [_row_json(row) for row in rows],
        "raw": raw,
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", "utf-8")
    print(f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def _row_json(row: Row) -> dict[str, Any]:
    """Row keeps the other tool's figure under the registry suite's name; here it is DVC's."""
    data = row.to_json()
    data["dvc"] = data.pop("mlflow")
    return data


if __name__ == "__main__":
    sys.exit(main())
