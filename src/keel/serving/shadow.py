"""Shadow traffic: a candidate model predicts copies of live requests, off the response path.

The primary answers the request; a copy of its rows and the features looked up for them goes
into a bounded queue that one worker thread drains, predicting with the candidate and logging
each prediction as variant ``"shadow"`` under the request id the client received. When the
queue is full the copy is dropped and counted (``keel_shadow_dropped_total{endpoint}``): a
slow or failing candidate costs shadow data, never response time or errors.

    shadow = ShadowQueue(log, metrics, size=1000)
    shadow.start()
    shadow.submit(ShadowJob(candidate, rows, features, request_ids, time_us))
    shadow.stop()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from keel.errors import InvalidInputError, KeelError

if TYPE_CHECKING:
    from keel.serving.endpoints import Endpoint
    from keel.serving.metrics import ServerMetrics
    from keel.serving.predict import PredictionSink

logger = logging.getLogger("keel.serving.shadow")

SHADOW = "shadow"
DEFAULT_QUEUE_SIZE = 1000


@dataclass(frozen=True)
class ShadowJob:
    """One request's copy: the candidate, the rows, the looked-up feature columns, the ids."""

    candidate: Endpoint
    rows: Sequence[Mapping[str, Any]]
    features: Mapping[str, list[Any]]
    request_ids: Sequence[str]
    time_us: int


@dataclass(frozen=True)
class CopyOutcome:
    """What became of one copy: for the server's metrics, wherever the copy was predicted."""

    endpoint: str
    model_version: int
    status: int
    rows: int
    latency_us: int


class Shadow(Protocol):
    """Where the server sends shadow copies: a thread of its own (ShadowQueue) or a separate
    low-priority process (keel.serving.shadow_process.ShadowProcess)."""

    def submit(self, job: ShadowJob) -> bool: ...

    def start(self) -> None: ...

    def prepare(self, candidates: Sequence[Endpoint]) -> None: ...

    def join(self, timeout_s: float | None = None) -> bool: ...

    def stop(self, timeout_s: float = 5.0) -> None: ...


def check_queue_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInputError(f"shadow queue size {size!r} must be a whole number >= 1")
    return size


class ShadowQueue:
    """A bounded queue of shadow jobs and the worker thread predicting them."""

    def __init__(
        self, log: PredictionSink | None, metrics: ServerMetrics, *, size: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        self.log = log
        self.metrics = metrics
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=check_queue_size(size))
        self._thread: threading.Thread | None = None

    def submit(self, job: ShadowJob) -> bool:
        """Queue ``job`` without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.metrics.shadow_dropped.labels(job.candidate.name).inc()
            return False
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="keel-shadow", daemon=True)
            self._thread.start()

    def prepare(self, candidates: Sequence[Endpoint]) -> None:
        """Nothing to do: the candidates are loaded in this process already."""

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued job has been predicted and logged (``timeout_s`` is not
        enforced here: the thread always finishes its jobs)."""
        self._queue.join()
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the queued jobs (within ``timeout_s``) and end the worker."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            logger.warning("shadow queue still full at shutdown; remaining copies are lost")
        thread.join(timeout_s)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                for outcome in predict_copies(job.candidate, [job], self.log):
                    record_outcome(self.metrics, outcome)
            except Exception:  # the worker must outlive any candidate or log failure
                logger.exception("shadow prediction failed")
            finally:
                self._queue.task_done()


class Copy(Protocol):
    """What predicting a copy needs (a ShadowJob, or the task the shadow process receives)."""

    @property
    def rows(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def features(self) -> Mapping[str, list[Any]]: ...

    @property
    def request_ids(self) -> Sequence[str]: ...

    @property
    def time_us(self) -> int: ...


def predict_copies(
    candidate: Endpoint, copies: Sequence[Copy], log: PredictionSink | None
) -> list[CopyOutcome]:
    """Predict copies with ``candidate`` in one model call over all their rows — a model call
    costs about the same for one row as for many — and log each row as variant ``"shadow"``
    under the request id its client received, reporting each copy as its own. When a merged
    call fails, each copy is predicted alone, so each gets its own status; a failing
    candidate's copies are logged with the error status: data for the report, not a crash."""
    from keel.serving.pipeline import model_columns, run_model, source_of, status_for

    names = set(copies[0].features) if copies else set()
    if len(copies) > 1 and any(set(c.features) != names for c in copies):
        return [out for c in copies for out in predict_copies(candidate, [c], log)]
    started = time.perf_counter_ns()
    rows = [row for c in copies for row in c.rows]
    features = {name: [v for c in copies for v in c.features[name]] for name in names}
    try:
        columns = model_columns(candidate, rows, features)
        predictions = run_model(candidate, columns, len(rows))
    except Exception as exc:
        if len(copies) > 1:  # one copy spoiled the call: each alone gets its own status
            return [out for c in copies for out in predict_copies(candidate, [c], log)]
        status = status_for(exc) if isinstance(exc, KeelError) else 500
        logger.warning("shadow model %s failed: %s", candidate.version.ref, exc)
        latency_us = (time.perf_counter_ns() - started) // 1000
        return [log_failed(source_of(candidate), c, status, latency_us, log) for c in copies]
    latency_us = (time.perf_counter_ns() - started) // 1000
    outcomes = []
    offset = 0
    for c in copies:
        count = len(c.rows)
        inputs = [
            {n: values[i] for n, values in columns.items()} for i in range(offset, offset + count)
        ]
        answers = predictions[offset : offset + count]
        log_copy(
            source_of(candidate), c.request_ids, c.time_us, inputs, answers, latency_us, 200, log
        )
        outcomes.append(
            CopyOutcome(candidate.name, candidate.version.version, 200, count, latency_us)
        )
        offset += count
    return outcomes


def log_failed(
    source: tuple[str, str, int],
    copy: Copy,
    status: int,
    latency_us: int,
    log: PredictionSink | None,
) -> CopyOutcome:
    """Log a copy no prediction came of (``status``, no values) and its outcome."""
    count = len(copy.rows)
    empty: list[dict[str, Any]] = [{} for _ in range(count)]
    log_copy(source, copy.request_ids, copy.time_us, empty, [None] * count, latency_us, status, log)
    endpoint, _, model_version = source
    return CopyOutcome(endpoint, model_version, status, count, latency_us)


def log_copy(
    source: tuple[str, str, int],
    request_ids: Sequence[str],
    time_us: int,
    inputs: Sequence[dict[str, Any]],
    predictions: Sequence[Any],
    latency_us: int,
    status: int,
    log: PredictionSink | None,
) -> None:
    """Log each row of a copy as variant ``"shadow"``; ``source`` is (endpoint, model name,
    model version), see keel.serving.predict.source_of."""
    from keel.serving.pipeline import log_record

    if log is None:
        return
    for request_id, features, prediction in zip(request_ids, inputs, predictions, strict=True):
        record = (request_id, time_us, features, prediction, latency_us, status)
        log.append(log_record(source, SHADOW, *record))


def record_outcome(metrics: ServerMetrics, outcome: CopyOutcome) -> None:
    labels = (outcome.endpoint, SHADOW, str(outcome.model_version))
    metrics.requests.labels(*labels, "ok" if outcome.status == 200 else "error").inc()
    if outcome.status == 200:
        metrics.predictions.labels(*labels).inc(outcome.rows)
        metrics.model_time.labels(*labels).observe(outcome.latency_us / 1e6)
    else:
        metrics.errors.labels(*labels, str(outcome.status)).inc()
