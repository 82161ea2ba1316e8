"""Shared helpers of the benchmarks: timing, the JSON hand-over between a side and its
orchestrator, and the result table.

The side scripts import this module inside MLflow's virtual environment too, which has neither
keel nor rich, so nothing here imports either at module level.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
CACHE_DIR = REPO / ".bench"


class BenchError(Exception):
    """A side failed or returned something the orchestrator cannot use."""


class Stopwatch:
    """Adds up the time spent inside ``with watch:`` blocks; each block is one lap.

    >>> watch = Stopwatch()
    >>> with watch:
    ...     pass
    >>> len(watch.laps)
    1
    """

    def __init__(self) -> None:
        self.laps: list[float] = []
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.laps.append(time.perf_counter() - self._start)

    @property
    def total(self) -> float:
        return sum(self.laps)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median, mean, min and max of timings in seconds.

    >>> summarize([1.0, 2.0, 4.0])["median"]
    2.0
    """
    if not samples:
        raise BenchError("no samples to summarize")
    return {
        "n": float(len(samples)),
        "median": statistics.median(samples),
        "mean": statistics.fmean(samples),
        "min": min(samples),
        "max": max(samples),
    }


def timed_repeats(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; returns the times."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def metric_values(n: int) -> list[float]:
    """A decaying, noisy loss curve of ``n`` points, the same on both sides."""
    import random

    rng = random.Random(0)
    return [1.0 / (1.0 + i / 100) + rng.gauss(0.0, 0.01) for i in range(n)]


def model_frames(n: int, *, rows: int = 200) -> list[tuple[Any, Any]]:
    """``n`` different small training sets (features DataFrame, labels Series) for
    LogisticRegression; different data so that no side can skip a duplicate artifact."""
    import numpy as np
    import pandas as pd

    frames = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        x = pd.DataFrame(rng.normal(size=(rows, 5)), columns=["f0", "f1", "f2", "f3", "f4"])
        y = pd.Series((x["f0"] + rng.normal(scale=0.5, size=rows) > 0).astype("int64"), name="y")
        frames.append((x, y))
    return frames


def emit(out: str | Path, payload: dict[str, Any]) -> None:
    """Write a side's result where the orchestrator reads it (a file, so that whatever the
    library prints on stdout cannot corrupt it)."""
    Path(out).write_text(json.dumps(payload, indent=2, sort_keys=True), "utf-8")


PROGRESS = "  · "


def log(message: str) -> None:
    """Progress for the person watching; the orchestrator shows only lines with this prefix
    and keeps the libraries' own chatter in the side's log file."""
    print(f"{PROGRESS}{message}", file=sys.stderr, flush=True)


def run_side(
    python: str | Path, script: Path, args: Sequence[str], *, cwd: Path, log_file: Path
) -> dict[str, Any]:
    """Run ``python script args... --out FILE`` in ``cwd`` and return the JSON it wrote.

    Everything the side prints goes to ``log_file``; its progress lines are echoed to stderr,
    and the end of the log is shown when it fails.
    """
    out = cwd / f"result-{script.stem}.json"
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR)}
    command = [str(python), str(script), *args, "--out", str(out)]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if not Path(python).exists():
        raise BenchError(f"{python} does not exist; bench/run.sh builds the venvs it needs")
    with (
        log_file.open("w", encoding="utf-8") as sink,
        subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process,
    ):
        for line in process.stdout or ():
            sink.write(line)
            if line.startswith(PROGRESS):
                sys.stderr.write(line)
        code = process.wait()
    if code != 0 or not out.exists():
        tail = "\n".join(log_file.read_text("utf-8").splitlines()[-15:])
        raise BenchError(
            f"{' '.join(command)} failed with exit code {code}:\n{tail}\n(whole log: {log_file})"
        )
    result: dict[str, Any] = json.loads(out.read_text("utf-8"))
    return result


@dataclass
class Row:
    """One line of the result table. Times in seconds; ``ratio`` is MLflow / Keel."""

    measurement: str
    keel: float | None
    mlflow: float | None
    goal: str = ""
    passed: bool | None = None
    note: str = ""
    compared: bool = True  # False: context side by side (no ratio), not a race

    @property
    def ratio(self) -> float | None:
        if not self.compared or self.keel is None or self.mlflow is None or self.keel <= 0:
            return None
        return self.mlflow / self.keel

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def format_seconds(value: float | None) -> str:
    """Seconds in the unit that reads best.

    >>> format_seconds(0.0123)
    '12.3 ms'
    """
    if value is None:
        return "—"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def format_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}×"


def print_table(
    title: str, rows: Sequence[Row], *, caption: str = "", other: str = "MLflow"
) -> None:
    """Print the side-by-side table: measurement, Keel, ``other`` (the tool compared with,
    whose figures are in ``Row.mlflow``), ratio, goal, pass/fail."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption or None, title_justify="left")
    table.add_column("measurement")
    table.add_column("Keel", justify="right")
    table.add_column(other, justify="right")
    table.add_column(f"{other}/Keel", justify="right")
    table.add_column("goal")
    table.add_column("result")
    for row in rows:
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: ""}[row.passed]
        measurement = f"{row.measurement}\n[dim]{row.note}[/]" if row.note else row.measurement
        table.add_row(
            measurement,
            format_seconds(row.keel),
            format_seconds(row.mlflow),
            format_ratio(row.ratio),
            row.goal,
            verdict,
        )
    console = Console()
    if not console.is_terminal:  # rich assumes 80 columns when piped; keep rows on one line
        console = Console(width=140)
    console.print(table)
