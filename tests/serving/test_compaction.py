"""Compaction: partitions, crash safety, live segments left alone, concurrent compactors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from keel.errors import InvalidInputError
from keel.serving.compaction import Compactor, compact, compact_in_child
from keel.serving.feedback import FeedbackLog
from keel.serving.predlog import PredictionLog, read_predictions
from keel.serving.segments import any_sealed

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000_000


def rec(rid: str, time_us: int, endpoint: str = "churn") -> dict[str, object]:
    return {
        "request_id": rid,
        "time_us": time_us,
        "endpoint": endpoint,
        "variant": "primary",
        "model": "m",
        "model_version": 1,
        "features": {"x": len(rid)},
        "prediction": 0.5,
        "latency_us": 10,
        "status": 200,
    }


def parquet_files(folder: Path) -> list[Path]:
    return sorted((folder / "compacted").rglob("*.parquet"))


def parquet_rows(folder: Path) -> list[str]:
    ids: list[str] = []
    for file in parquet_files(folder):
        ids += pq.read_table(file).column("request_id").to_pylist()
    return sorted(ids)


def fill(folder: Path) -> list[str]:
    log = PredictionLog(folder)
    ids = []
    for day in range(2):
        for endpoint in ("churn", "fraud"):
            for i in range(3):
                rid = f"{endpoint}-{day}-{i}"
                log.append(rec(rid, T0 + day * DAY + i, endpoint))
                ids.append(rid)
    log.close()
    return sorted(ids)


def test_partitions_by_endpoint_and_date_then_deletes_segments(tmp_path: Path) -> None:
    ids = fill(tmp_path)
    before = read_predictions(tmp_path)
    result = compact(tmp_path)
    assert (result.segments, result.rows, result.live) == (1, 12, 0)
    partitions = sorted(
        str(f.parent.relative_to(tmp_path / "compacted")) for f in parquet_files(tmp_path)
    )
    assert partitions == [
        "endpoint=churn/date=2026-01-01",
        "endpoint=churn/date=2026-01-02",
        "endpoint=fraud/date=2026-01-01",
        "endpoint=fraud/date=2026-01-02",
    ]
    for file in parquet_files(tmp_path):
        table = pq.read_table(file)
        endpoint = file.parent.parent.name.removeprefix("endpoint=")
        assert set(table.column("endpoint").to_pylist()) == {endpoint}
        assert table.num_rows == 3
    assert list((tmp_path / "segments").glob("*.jsonl")) == []
    assert parquet_rows(tmp_path) == ids
    assert read_predictions(tmp_path).equals(before)
    assert compact(tmp_path).segments == 0


def test_rerun_after_a_crash_before_the_delete_does_not_duplicate(tmp_path: Path) -> None:
    ids = fill(tmp_path)
    (segment,) = (tmp_path / "segments").glob("*.jsonl")
    saved = tmp_path / "saved.jsonl"
    shutil.copy(segment, saved)
    compact(tmp_path)
    # The crash: Parquet written, segment not yet deleted; one partition not yet written either.
    shutil.copy(saved, segment)
    missing = parquet_files(tmp_path)[0]
    missing.unlink()
    assert sorted(read_predictions(tmp_path).column("request_id").to_pylist()) == ids
    result = compact(tmp_path)
    assert result.segments == 1
    assert result.files == (missing,)
    assert parquet_rows(tmp_path) == ids
    assert not segment.exists()


def test_a_live_writers_active_segment_is_not_compacted(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, segment_bytes=600)
    for i in range(10):
        log.append(rec(f"r{i}", T0 + i))
    active = log.active_segment
    assert active is not None
    result = compact(tmp_path)
    assert result.live == 1
    assert result.segments >= 1
    assert list((tmp_path / "segments").glob("*.jsonl")) == [active]
    log.append(rec("r10", T0 + 10))  # the writer is unharmed
    assert read_predictions(tmp_path).num_rows == 11
    log.close()
    assert compact(tmp_path).live == 0
    assert parquet_rows(tmp_path) == sorted(f"r{i}" for i in range(11))


def test_segments_of_a_dead_process_are_compacted(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from keel.serving.predlog import PredictionLog\n"
        "log = PredictionLog(sys.argv[1])\n"
        f"log.append({{'request_id': 'dead', 'time_us': {T0}, 'endpoint': 'e'}})\n"
        "os._exit(0)\n"  # no close: the lock goes with the process
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)
    result = compact(tmp_path)
    assert (result.segments, result.live) == (1, 0)
    assert parquet_rows(tmp_path) == ["dead"]


def test_older_than_leaves_fresh_segments(tmp_path: Path) -> None:
    fill(tmp_path)
    assert compact(tmp_path, older_than_s=3600).segments == 0
    assert compact(tmp_path, older_than_s=0).segments == 1
    with pytest.raises(InvalidInputError, match="older_than_s"):
        compact(tmp_path, older_than_s=-1)


def test_concurrent_compactors_write_each_row_once(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, segment_bytes=400)
    ids = [f"r{i:03d}" for i in range(200)]
    for i, rid in enumerate(ids):
        log.append(rec(rid, T0 + i))
    log.close()
    results = []
    workers = [threading.Thread(target=lambda: results.append(compact(tmp_path))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sum(r.rows for r in results) == 200
    assert parquet_rows(tmp_path) == ids
    assert read_predictions(tmp_path).column("request_id").to_pylist() == ids


def test_feedback_segments_are_compacted_too(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.append(rec("a", T0))
    log.close()
    feedback = FeedbackLog(tmp_path)
    feedback.attach("a", label=1, time_us=T0 + 5)
    feedback.close()
    result = compact(tmp_path)
    assert result.feedback_segments == 1
    assert list((tmp_path / "feedback" / "segments").glob("*.jsonl")) == []
    assert read_predictions(tmp_path).column("label").to_pylist() == [1.0]


@pytest.mark.parametrize("separate_process", [False, True], ids=["thread", "process"])
def test_background_compactor(tmp_path: Path, separate_process: bool) -> None:
    ids = fill(tmp_path)
    compactor = Compactor(tmp_path, interval_s=0.02, separate_process=separate_process)
    compactor.start()
    try:
        deadline = time.monotonic() + 20
        while list((tmp_path / "segments").glob("*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        compactor.stop()
    assert compactor.failures == 0
    assert compactor.runs >= 1
    assert parquet_rows(tmp_path) == ids
    with pytest.raises(InvalidInputError, match="interval_s"):
        Compactor(tmp_path, interval_s=0)


def test_leftovers_of_crashes_are_swept_once_old(tmp_path: Path) -> None:
    fill(tmp_path)
    compact(tmp_path)
    partition = parquet_files(tmp_path)[0].parent
    stale_tmp = partition / ".part-x.parquet.0123.tmp"
    stale_tmp.write_bytes(b"half a parquet file")
    fresh_tmp = partition / ".part-y.parquet.4567.tmp"
    fresh_tmp.write_bytes(b"being written")
    stale_creating = tmp_path / "segments" / ".pred-1-2-3.creating"
    stale_creating.write_bytes(b"")
    hour_ago = time.time() - 7200
    for path in (stale_tmp, stale_creating):
        os.utime(path, (hour_ago, hour_ago))
    compact(tmp_path)
    assert not stale_tmp.exists()
    assert not stale_creating.exists()
    assert fresh_tmp.exists()
    assert len(read_predictions(tmp_path).column("request_id")) == 12


def test_only_sealed_segments_call_for_a_compaction(tmp_path: Path) -> None:
    segments = tmp_path / "segments"
    live = PredictionLog(tmp_path)
    live.append(rec("live-1", T0 + 1, "fraud"))
    assert not any_sealed(segments)  # the one segment is held by its writer
    other = PredictionLog(tmp_path)
    other.append(rec("sealed-1", T0, "fraud"))
    other.close()
    assert any_sealed(segments)
    result = compact_in_child(tmp_path)
    assert (result.segments, result.rows, result.live) == (1, 1, 1)
    assert not any_sealed(segments)
    assert read_predictions(tmp_path).column("request_id").to_pylist() == ["sealed-1", "live-1"]
    live.close()
