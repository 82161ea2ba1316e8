"""Shadow predictions in a separate process at the lowest CPU priority.

A shadow thread inside the server shares its interpreter lock: each candidate prediction holds
the lock the event loop needs, and the primary's latency grows with the candidate's work. A
process of its own shares nothing but a pipe; at the lowest priority (nice 19) the kernel runs
it on the CPU time the server leaves over. The server only hands the copies over — those of
one event-loop turn pickled together, at most ``size`` on their way at once (more are dropped
and counted); the process loads each candidate version from the registry once, predicts, logs
each row as variant ``"shadow"`` in its own prediction-log segment, and reports back, a batch
at a time, what the server's metrics need.

The process starts when a route gets a shadow (a server that never shadows never runs it) and
ends with the server, or by itself when the server is gone.

    shadow = ShadowProcess(project.root, log_folder, metrics, size=1000)
    shadow.submit(ShadowJob(candidate, rows, features, request_ids, time_us))
    shadow.join()   # every copy handed over so far is predicted and logged
    shadow.stop()
"""

from __future__ import annotations

import asyncio
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
    log_failed,
    predict_copies,
    record_outcome,
)

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.queues import Queue, SimpleQueue

    from keel.serving.endpoints import Endpoint, EndpointRegistry
    from keel.serving.metrics import ServerMetrics
    from keel.serving.predlog import PredictionLog

logger = logging.getLogger("keel.serving.shadow")

LOWEST_PRIORITY = 19
DRAIN_LIMIT = 512  # copies predicted together at most
ROUND_S = 0.05  # the shadow predicts what has come at most this often
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
    """Hands shadow copies to a low-priority process; drops (and counts) them when ``size``
    copies are already on their way."""

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
        self._size = check_queue_size(size)
        # Batches both ways: the copies of one event-loop turn cross as one pickle, and the
        # process reports a batch's outcomes at once — a thread wake-up (and a turn of the
        # interpreter lock) per batch, not per copy.
        self._tasks: Queue[list[ShadowTask] | None] = self._context.Queue()
        self._outcomes: SimpleQueue[list[CopyOutcome] | None] = self._context.SimpleQueue()
        self._process: SpawnProcess | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Condition()
        self._pending: list[ShadowTask] = []
        self._flush_due = False
        self._handed = 0  # copies accepted
        self._reported = 0  # copies whose outcome came back
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
            loads = []
            for candidate in candidates:
                key = (candidate.name, candidate.version.ref, candidate.features)
                if key not in self._prepared:
                    self._prepared.add(key)
                    loads.append(_task(candidate, (), {}, (), 0))  # no rows: load it
            if not loads:
                return
            try:
                self._ensure_process()
                self._tasks.put(loads)
            except Exception:  # the first copy will try again
                logger.exception("shadow candidates not prepared")
                self._prepared.clear()

    def submit(self, job: ShadowJob) -> bool:
        """Hand ``job`` over without waiting; False (and counted) when ``size`` copies are
        already on their way."""
        candidate = job.candidate
        task = _task(candidate, job.rows, job.features, job.request_ids, job.time_us)
        with self._lock:
            if self._handed - self._reported >= self._size:
                self.metrics.shadow_dropped.labels(candidate.name).inc()
                return False
            try:
                self._ensure_process()
            except Exception:  # a copy is never worth an error in the response
                logger.exception("shadow process not started")
                self.metrics.shadow_dropped.labels(candidate.name).inc()
                return False
            self._pending.append(task)
            self._handed += 1
            if self._flush_due:
                return True
            self._flush_due = True
        try:  # in a server: once this event-loop turn is over, with the turn's other copies
            asyncio.get_running_loop().call_soon(self._flush)
        except RuntimeError:  # no event loop here: at once
            self._flush()
        return True

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait until every copy handed over has been predicted, logged and counted; False
        when ``timeout_s`` passed first or the process is gone."""
        self._flush()
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
        self._flush()
        process, self._process = self._process, None
        if process is None:
            return
        self._tasks.put(None)
        process.join(timeout_s)
        if process.is_alive():
            process.kill()
            process.join()
        self._outcomes.put(None)  # ends the reader
        if self._reader is not None:
            self._reader.join(timeout_s)
            self._reader = None

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._flush_due = False
        if batch:
            try:
                self._tasks.put(batch)
            except Exception:  # lost copies: reported as failed, so join() does not wait
                logger.exception("shadow copies not handed over")
                self._report([_failed(task, 500) for task in batch], record=False)

    def _ensure_process(self) -> None:
        if self._process is not None:
            return
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
            outcomes = self._outcomes.get()
            if outcomes is None:
                return
            self._report(outcomes, record=True)

    def _report(self, outcomes: list[CopyOutcome], *, record: bool) -> None:
        if record:
            for outcome in outcomes:
                record_outcome(self.metrics, outcome)
        with self._lock:
            self._reported += len(outcomes)
            self._lock.notify_all()


def run_shadow_process(
    project_root: str,
    log_folder: str,
    tasks: Queue[list[ShadowTask] | None],
    outcomes: SimpleQueue[list[CopyOutcome] | None],
) -> None:
    """The process's main: predict and log each task until told to stop or orphaned."""
    import signal

    from keel.project import Project
    from keel.serving.endpoints import EndpointRegistry
    from keel.serving.predlog import PredictionLog

    _lowest_priority()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops us
    parent = os.getppid()
    project = Project(Path(project_root))
    registry = EndpointRegistry(project, {})
    log = PredictionLog(log_folder)
    loaded: dict[tuple[str, str, str | None], Endpoint | Exception] = {}
    began = 0.0
    try:
        while True:
            try:
                batch = tasks.get(timeout=_PARENT_CHECK_S)
            except queue.Empty:
                if os.getppid() != parent:  # the server died without stopping us
                    return
                continue
            if batch is None:
                return
            # Copies are predicted in rounds at most every ROUND_S: the copies of a round share
            # one model call per candidate, far less CPU than one call each, and a shadow's
            # answers are wanted in reports, not within milliseconds.
            time.sleep(max(0.0, began + ROUND_S - time.monotonic()))
            began = time.monotonic()
            stop = _drain(tasks, batch)
            done: list[CopyOutcome] = []
            for group in _by_candidate(batch).values():
                try:
                    done += _predict_group(group, registry, loaded, log)
                except Exception:  # the process must outlive any candidate or log failure
                    logger.exception("shadow prediction failed")
                    done += [_failed(task, 500) for task in group if task.rows]
            if done:
                outcomes.put(done)
            if stop:
                return
    finally:
        log.close()
        registry.close()
        project.close()


def _drain(tasks: Queue[list[ShadowTask] | None], batch: list[ShadowTask]) -> bool:
    """Add the batches already waiting to ``batch`` (up to DRAIN_LIMIT copies): a process
    kept waiting by a busy server catches up in few model calls. True when the stop mark
    came with them."""
    while len(batch) < DRAIN_LIMIT:
        try:
            more = tasks.get_nowait()
        except queue.Empty:
            return False
        if more is None:
            return True
        batch += more
    return False


def _by_candidate(batch: list[ShadowTask]) -> dict[tuple[str, str, str | None], list[ShadowTask]]:
    groups: dict[tuple[str, str, str | None], list[ShadowTask]] = {}
    for task in batch:
        groups.setdefault((task.endpoint, task.ref, task.features_service), []).append(task)
    return groups


def _predict_group(
    group: list[ShadowTask],
    registry: EndpointRegistry,
    loaded: dict[tuple[str, str, str | None], Endpoint | Exception],
    log: PredictionLog,
) -> list[CopyOutcome]:
    """One candidate's copies: loaded once, predicted in one model call (a task without
    rows only asks for the candidate to be loaded)."""
    from keel.errors import KeelError
    from keel.serving.pipeline import status_for

    candidate = _candidate(group[0], registry, loaded)
    copies = [task for task in group if task.rows]
    if not isinstance(candidate, Exception):
        return predict_copies(candidate, copies, log)
    status = status_for(candidate) if isinstance(candidate, KeelError) else 500
    return [
        log_failed((task.endpoint, task.model, task.model_version), task, status, 0, log)
        for task in copies
    ]


def _lowest_priority() -> None:
    """Run only on CPU time nothing else wants: Linux's SCHED_IDLE policy (a task waking on a
    busy core preempts it at once, where a nice-19 task keeps the core for a moment), else
    the lowest nice value."""
    os.nice(LOWEST_PRIORITY - os.nice(0))
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:  # a sandbox may forbid it: nice 19 still holds
            logger.info("shadow process keeps the normal policy: %s", exc)


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
