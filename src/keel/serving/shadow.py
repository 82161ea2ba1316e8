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
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

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


class ShadowQueue:
    """A bounded queue of shadow jobs and the worker thread predicting them."""

    def __init__(
        self, log: PredictionSink | None, metrics: ServerMetrics, *, size: int = DEFAULT_QUEUE_SIZE
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidInputError(f"shadow queue size {size!r} must be a whole number >= 1")
        self.log = log
        self.metrics = metrics
        self.dropped = Counter(
            "keel_shadow_dropped",
            "Copies of requests not sent to a shadow candidate because its queue was full.",
            ("endpoint",),
            registry=metrics.registry,
        )
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=size)
        self._thread: threading.Thread | None = None

    def submit(self, job: ShadowJob) -> bool:
        """Queue ``job`` without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped.labels(job.candidate.name).inc()
            return False
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="keel-shadow", daemon=True)
            self._thread.start()

    def join(self) -> None:
        """Wait until every queued job has been predicted and logged."""
        self._queue.join()

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
                self._run(job)
            except Exception:  # the worker must outlive any candidate or log failure
                logger.exception("shadow prediction failed")
            finally:
                self._queue.task_done()

    def _run(self, job: ShadowJob) -> None:
        from keel.serving.predict import log_record, model_columns, run_model, status_for

        candidate = job.candidate
        labels = (candidate.name, SHADOW, str(candidate.version.version))
        started = time.perf_counter_ns()
        inputs: list[dict[str, Any]] = [{} for _ in job.rows]
        try:
            columns = model_columns(candidate, job.rows, job.features)
            predictions = run_model(candidate, columns, len(job.rows))
            inputs = [{n: values[i] for n, values in columns.items()} for i in range(len(inputs))]
            status = 200
        except Exception as exc:  # a failing candidate is data for the report, not a crash
            status = status_for(exc) if isinstance(exc, KeelError) else 500
            predictions = [None] * len(job.rows)
            logger.warning("shadow model %s failed: %s", candidate.version.ref, exc)
        latency_us = (time.perf_counter_ns() - started) // 1000
        if self.log is not None:
            for request_id, features, prediction in zip(
                job.request_ids, inputs, predictions, strict=True
            ):
                self.log.append(
                    log_record(
                        candidate,
                        SHADOW,
                        request_id,
                        job.time_us,
                        features,
                        prediction,
                        latency_us,
                        status,
                    )
                )
        outcome = "ok" if status == 200 else "error"
        self.metrics.requests.labels(*labels, outcome).inc()
        if status == 200:
            self.metrics.predictions.labels(*labels).inc(len(job.rows))
            self.metrics.model_time.labels(*labels).observe(latency_us / 1e6)
        else:
            self.metrics.errors.labels(*labels, str(status)).inc()
