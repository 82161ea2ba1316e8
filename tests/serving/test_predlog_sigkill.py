"""SIGKILL mid-stream loses no acknowledged prediction, even with compaction running alongside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from keel.serving.compaction import compact
from keel.serving.predlog import read_predictions

# The child acknowledges a request id on stdout only after append() returned, like a server
# sending its response; small segments and a busy compactor make the kill land anywhere:
# mid-append, mid-roll, mid-compaction.
CHILD = """
import sys
from keel.serving.compaction import Compactor
from keel.serving.predlog import PredictionLog

log = PredictionLog(sys.argv[1], segment_bytes=4096)
compactor = Compactor(sys.argv[1], interval_s=0.005)
compactor.start()
out = sys.stdout
i = 0
while True:
    rid = f"req-{i}"
    log.append({"request_id": rid, "time_us": 1767225600000000 + i, "endpoint": "e",
                "variant": "primary", "model": "m", "model_version": 1,
                "features": {"x": i}, "prediction": i * 0.5, "latency_us": 5, "status": 200})
    out.write(rid + "\\n")
    out.flush()
    i += 1
"""


def test_every_acknowledged_prediction_survives_sigkill(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    acknowledged: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(acknowledged) < 3000 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acknowledged.append(line.decode().strip())
        os.kill(child.pid, signal.SIGKILL)
    finally:
        # Whatever was already in the pipe was acknowledged too; a cut last line was not.
        rest, errors = child.communicate(timeout=30)
    acknowledged += [x for x in rest.decode().split("\n")[:-1] if x]
    assert child.returncode == -signal.SIGKILL, errors.decode()[-2000:]
    assert len(acknowledged) >= 3000

    logged = read_predictions(tmp_path).column("request_id").to_pylist()
    assert len(logged) == len(set(logged))  # no row read twice
    assert set(acknowledged) <= set(logged)
    # Now the dead writer's last segment is sealed: compacting it keeps every row exactly once.
    compact(tmp_path)
    assert list((tmp_path / "segments").glob("*.jsonl")) == []
    after = read_predictions(tmp_path).column("request_id").to_pylist()
    assert sorted(after) == sorted(logged)
