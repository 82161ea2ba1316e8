"""Feedback attached later joins predictions by request id; the latest label and outcome win."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from keel.errors import InvalidInputError
from keel.serving.compaction import compact
from keel.serving.feedback import FeedbackLog
from keel.serving.predlog import PredictionLog, read_predictions

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def predict(folder: Path, *ids: str) -> None:
    log = PredictionLog(folder)
    for i, rid in enumerate(ids):
        log.append({"request_id": rid, "time_us": T0 + i, "endpoint": "e", "prediction": 0.5})
    log.close()


def joined(folder: Path) -> dict[str, tuple[object, object, object]]:
    table = read_predictions(folder)
    return {
        rid: (label, outcome, when)
        for rid, label, outcome, when in zip(
            table.column("request_id").to_pylist(),
            table.column("label").to_pylist(),
            table.column("outcome").to_pylist(),
            table.column("feedback_time").to_pylist(),
            strict=True,
        )
    }


@pytest.mark.parametrize("compacted", [False, True])
def test_feedback_joins_by_request_id_and_the_latest_wins(tmp_path: Path, compacted: bool) -> None:
    predict(tmp_path, "a", "b", "c")
    feedback = FeedbackLog(tmp_path)
    # Arrival order differs from feedback time: the later time wins, not the later write.
    feedback.attach("a", label=1, time_us=T0 + 300)
    feedback.attach("a", label=0, time_us=T0 + 200)
    feedback.attach("b", label=0, time_us=T0 + 100)
    feedback.attach("b", outcome=12.5, time_us=T0 + 400)  # an outcome alone keeps the label
    feedback.attach("zzz", label=1)  # for no known prediction: ignored by the join
    if compacted:
        feedback.close()
        assert compact(tmp_path).feedback_segments == 1
    got = joined(tmp_path)
    assert got["a"] == (1.0, None, datetime.fromtimestamp((T0 + 300) / 1e6, UTC))
    assert got["b"] == (0.0, 12.5, datetime.fromtimestamp((T0 + 400) / 1e6, UTC))
    assert got["c"] == (None, None, None)
    assert set(got) == {"a", "b", "c"}


def test_feedback_split_between_segments_and_parquet(tmp_path: Path) -> None:
    predict(tmp_path, "a")
    first = FeedbackLog(tmp_path)
    first.attach("a", label=0, time_us=T0 + 1)
    first.close()
    compact(tmp_path)
    FeedbackLog(tmp_path).attach("a", label=1, time_us=T0 + 2)
    assert joined(tmp_path)["a"][0] == 1.0


def test_text_labels_stay_text(tmp_path: Path) -> None:
    predict(tmp_path, "a", "b")
    feedback = FeedbackLog(tmp_path)
    feedback.attach("a", label="fraud")
    feedback.attach("b", label={"class": "ok"})
    table = read_predictions(tmp_path)
    assert table.schema.field("label").type == pa.string()
    assert table.column("label").to_pylist() == ["fraud", '{"class": "ok"}']


def test_bad_feedback_is_refused(tmp_path: Path) -> None:
    feedback = FeedbackLog(tmp_path)
    with pytest.raises(InvalidInputError, match="request id"):
        feedback.attach("", label=1)
    with pytest.raises(InvalidInputError, match="neither label nor outcome"):
        feedback.attach("a")
    with pytest.raises(InvalidInputError, match="time_us"):
        feedback.attach("a", label=1, time_us=1.5)  # type: ignore[arg-type]
