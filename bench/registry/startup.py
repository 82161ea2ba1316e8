"""Start-up cost, measured in fresh interpreters of the virtual environment this runs in.

``import TOOL`` is timed inside each fresh interpreter (the import alone, as a user's script
pays it); ``TOOL --help`` is the wall time of the console script, interpreter start included,
as a user at a shell waits for it. One untimed run of each first, so that byte-code caches
exist, then the median of ``--repeats`` fresh runs.

    python bench/registry/startup.py keel --out result.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import time
from pathlib import Path

from common import emit, summarize

_IMPORT_TIMER = (
    "import time; start = time.perf_counter(); import {module}; print(time.perf_counter() - start)"
)


def time_import(module: str) -> float:
    """Seconds that ``import module`` takes in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_TIMER.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def time_help(script: Path) -> float:
    """Wall seconds of ``script --help`` from spawn to exit."""
    start = time.perf_counter()
    subprocess.run([str(script), "--help"], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tool", choices=["keel", "mlflow"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    script = Path(sys.executable).parent / args.tool
    time_import(args.tool)
    time_help(script)
    imports = [time_import(args.tool) for _ in range(args.repeats)]
    helps = [time_help(script) for _ in range(args.repeats)]
    version = importlib.metadata.version(args.tool)
    emit(
        args.out,
        {
            "tool": args.tool,
            "version": version,
            "import": summarize(imports),
            "help": summarize(helps),
        },
    )


if __name__ == "__main__":
    main()
