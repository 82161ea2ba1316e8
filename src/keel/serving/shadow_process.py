"""Shadow predictions in a separate process at the lowest CPU priority.

A shadow thread inside the server shares its interpreter lock: each candidate prediction holds
the lock the event loop needs, and the primary's latency grows with the candidate's work. A
process of its own shares nothing but a pipe; at the lowest priority (nice 19) the kernel runs
it on the CPU time the server leaves over. The server only hands each copy over (a pickled task
into a bounded queue: tens of microseconds); the process loads each candidate version from the
registry once, predicts, logs each row as variant ``"shadow"`` in its own prediction-log
segment, and reports back what the server's metrics need.

The process starts with the first copy (a server that never shadows never runs it) and ends
with the server, or by itself when the server is gone.

    shadow = ShadowProcess(project.root, log_folder, metrics, size=1000)
    shadow.submit(ShadowJob(candidate, rows, features, request_ids, time_us))
    shadow.join()   # every copy handed over so far is predicted and logged
    shadow.stop()
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.serving.shadow import (
    DEFAULT_QUEUE_SIZE,
    CopyOutcome,
    ShadowJob,
    check_queue_size,
    log_copy,
    predict_copy,
    record_outcome,
)

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.queues import JoinableQueue, SimpleQueue

    from keel.serving.endpoints import Endpoint, EndpointRegistry
    from keel.serving.metrics import ServerMetrics
    from keel.serving.predlog import PredictionLog

logger = logging.getLogger("keel.serving.shadow")

LOWEST_PRIORITY = 19
_PARENT_CHECK_S = 1.0


@dataclass(frozen=True)
class ShadowTask:
    """A copy as it crosses to the process: plain data, the candidate named by its version."""

    endpoint: str
    model: str
    model_version: int
    features_service: str | None
    rows: Sequence[Mapping[str, Any]]
    features: Mapping[str, list[Any]]
    request_ids: Sequence[str]
    time_us: int

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.model_version}"


class ShadowProcess:
    """Hands shadow copies to a low-priority process; drops (and counts) them when its queue
    of ``size`` copies is full."""

    def __init__(
        self,
        project_root: Path,
        log_folder: Path,
        metrics: ServerMetrics,
        *,
        size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.project_root = Path(project_root)
        self.log_folder = Path(log_folder)
        self.metrics = metrics
        self._context = multiprocessing.get_context("spawn")
        self._tasks: JoinableQueue[ShadowTask | None] = self._context.JoinableQueue(
            maxsize=check_queue_size(size)
        )
        self._outcomes: SimpleQueue[CopyOutcome | None] = self._context.SimpleQueue()
        self._process: SpawnProcess | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Condition()
        self._handed = 0
        self._reported = 0
        self._prepared: set[tuple[str, str, str | None]] = set()

    @property
    def pid(self) -> int | None:
        """The process's id once it has started."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Nothing to do: the process starts when there is a candidate (``prepare``) or a copy."""

    def prepare(self, candidates: Sequence[Endpoint]) -> None:
        """Start the process if it is not running and have it load ``candidates`` now, so
        their start-up (imports, model loading: seconds of CPU) is over before copies come."""
        with self._lock:
            for candidate in candidates:
                key = (candidate.name, candidate.version.ref, candidate.features)
                if key in self._prepared:
                    continue
                try:
                    if self._process is None:
                        self._launch()
                    self._tasks.put_nowait(_task(candidate, (), {}, (), 0))  # no rows: load
                except Exception:  # the first copy will try again
                    logger.exception("shadow candidate %s not prepared", candidate.version.ref)
                    continue
                self._prepared.add(key)

    def submit(self, job: ShadowJob) -> bool:
        """Hand ``job`` over without waiting; False (and counted) when the queue is full."""
        candidate = job.candidate
        task = _task(candidate, job.rows, job.features, job.request_ids, job.time_us)
        with self._lock:
            try:
                if self._process is None:
                    self._launch()
                self._tasks.put_nowait(task)
            except queue.Full:
                self.metrics.shadow_dropped.labels(candidate.name).inc()
                return False
            except Exception:  # a copy is never worth an error in the response
                logger.exception("shadow copy not handed over")
                self.metrics.shadow_dropped.labels(candidate.name).inc()
                return False
            self._handed += 1
        return True

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait until every copy handed over has been predicted, logged and counted; False
        when ``timeout_s`` passed first or the process is gone."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            while self._reported < self._handed:
                if self._process is None or not self._process.is_alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(0.1 if left is None else min(left, 0.1))
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Let the process finish the copies it has (within ``timeout_s``), then end it."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            self._tasks.put(None, timeout=timeout_s)
        except queue.Full:
            logger.warning("shadow queue still full at shutdown; remaining copies are lost")
        process.join(timeout_s)
        if process.is_alive():
            process.kill()
            process.join()
        self._outcomes.put(None)  # ends the reader
        if self._reader is not None:
            self._reader.join(timeout_s)
            self._reader = None

    def _launch(self) -> None:
        process = self._context.Process(
            target=run_shadow_process,
            args=(str(self.project_root), str(self.log_folder), self._tasks, self._outcomes),
            name="keel-shadow",
            daemon=True,
        )
        process.start()
        self._process = process
        self._reader = threading.Thread(target=self._read, name="keel-shadow-outcomes", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            outcome = self._outcomes.get()
            if outcome is None:
                return
            record_outcome(self.metrics, outcome)
            with self._lock:
                self._reported += 1
                self._lock.notify_all()


def run_shadow_process(
    project_root: str,
    log_folder: str,
    tasks: JoinableQueue[ShadowTask | None],
    outcomes: SimpleQueue[CopyOutcome | None],
) -> None:
    """The process's main: predict and log each task until told to stop or orphaned."""
    import signal

    from keel.project import Project
    from keel.serving.endpoints import EndpointRegistry
    from keel.serving.predlog import PredictionLog

    os.nice(LOWEST_PRIORITY - os.nice(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    parent = os.getppid()
    project = Project(Path(project_root))
    registry = EndpointRegistry(project, {})
    log = PredictionLog(log_folder)
    loaded: dict[tuple[str, str, str | None], Endpoint | Exception] = {}
    try:
        while True:
            try:
                task = tasks.get(timeout=_PARENT_CHECK_S)
            except queue.Empty:
                if os.getppid() != parent:  # the server died without stopping us
                    return
                continue
            try:
                if task is None:
                    return
                if not task.rows:  # a candidate to load before its copies come
                    _candidate(task, registry, loaded)
                    continue
                outcomes.put(_predict_task(task, registry, loaded, log))
            except Exception:  # the process must outlive any candidate or log failure
                logger.exception("shadow prediction failed")
                if task is not None and task.rows:
                    outcomes.put(_failed(task, 500))
            finally:
                tasks.task_done()
    finally:
        log.close()
        registry.close()
        project.close()


def _predict_task(
    task: ShadowTask,
    registry: EndpointRegistry,
    loaded: dict[tuple[str, str, str | None], Endpoint | Exception],
    log: PredictionLog,
) -> CopyOutcome:
    from keel.errors import KeelError
    from keel.serving.pipeline import status_for

    candidate = _candidate(task, registry, loaded)
    if isinstance(candidate, Exception):
        status = status_for(candidate) if isinstance(candidate, KeelError) else 500
        source = (task.endpoint, task.model, task.model_version)
        nothing = [None] * len(task.rows)
        empty: list[dict[str, Any]] = [{} for _ in task.rows]
        log_copy(source, task.request_ids, task.time_us, empty, nothing, 0, status, log)
        return _failed(task, status)
    return predict_copy(candidate, task.rows, task.features, task.request_ids, task.time_us, log)


def _candidate(
    task: ShadowTask,
    registry: EndpointRegistry,
    loaded: dict[tuple[str, str, str | None], Endpoint | Exception],
) -> Endpoint | Exception:
    """The task's candidate, loaded once (or the error that kept it from loading)."""
    from keel.config import EndpointConfig

    key = (task.endpoint, task.ref, task.features_service)
    if key not in loaded:
        try:
            config = EndpointConfig(model=task.ref, features=task.features_service)
            loaded[key] = registry.load_endpoint(task.endpoint, config)
        except Exception as exc:  # a candidate that cannot load: its copies log the error
            logger.warning("shadow model %s cannot be loaded: %s", task.ref, exc)
            loaded[key] = exc
    return loaded[key]


def _task(
    candidate: Endpoint,
    rows: Sequence[Mapping[str, Any]],
    features: Mapping[str, list[Any]],
    request_ids: Sequence[str],
    time_us: int,
) -> ShadowTask:
    return ShadowTask(
        endpoint=candidate.name,
        model=candidate.version.name,
        model_version=candidate.version.version,
        features_service=candidate.features,
        rows=rows,
        features=features,
        request_ids=request_ids,
        time_us=time_us,
    )


def _failed(task: ShadowTask, status: int) -> CopyOutcome:
    return CopyOutcome(task.endpoint, task.model_version, status, len(task.rows), 0)
