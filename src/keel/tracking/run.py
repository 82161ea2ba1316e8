"""Runs: one execution of training code, with what it was given (params, inputs, seeds), what
it produced (metrics, artifacts, models) and what it ran on (code, environment), captured when
it starts. Start one with keel.start_run (keel.tracking.fluent).

    with keel.start_run(experiment="fraud", params={"lr": 0.1}) as run:
        for epoch in range(10):
            run.log_metric("loss", train_one_epoch())
        run.log_artifact("plots/")

Only the standard library is imported here at module level: ``import keel`` stays fast.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError, StateError
from keel.tracking.records import ArtifactRecord

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from keel.project import Project
    from keel.registry.versions import ModelVersion
    from keel.tracking.writes import Point

END_STATUSES = ("finished", "failed", "killed")


class Run:
    """A run being recorded. Get one from ``keel.start_run``; its ``id`` names it everywhere.

    Params, metrics, artifacts, inputs and seeds can only be logged while it runs; tags and
    notes may still be set after it ended.
    """

    def __init__(
        self,
        project: Project,
        run_id: str,
        experiment: str,
        *,
        parent: Run | None = None,
        seeds: Mapping[str, int] | None = None,
    ) -> None:
        from keel.tracking.metric_buffer import MetricBuffer

        self.project = project
        self.id = run_id
        self.experiment = experiment
        self.parent = parent
        self.status = "running"
        self._seeds = dict(seeds or {})
        tracking = project.config.tracking
        self._metrics = MetricBuffer(
            self._write_metrics,
            batch_size=tracking.metric_batch_size,
            flush_seconds=tracking.flush_seconds,
        )

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, experiment={self.experiment!r}, status={self.status!r})"

    @property
    def ended(self) -> bool:
        return self.status != "running"

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            self.end()
            return
        status = "killed" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            self._finish(status, describe_error(exc))
        except Exception as inner:  # never hide the user's exception behind ours
            exc.add_note(f"keel: could not record the end of run {self.id}: {inner}")

    def end(self, status: str = "finished") -> None:
        """Flush buffered metrics and end the run; ending an ended run does nothing.

        >>> run = keel.start_run(); run.log_metric("auc", 0.9); run.end()   # doctest: +SKIP
        """
        if status not in END_STATUSES:
            raise InvalidInputError(
                f"run status {status!r} is unknown; use one of {', '.join(END_STATUSES)}"
            )
        self._finish(status, None)

    def _finish(self, status: str, error: str | None) -> None:
        if self.ended:
            return
        from keel.core.timeutil import now_ms
        from keel.tracking import fluent, writes

        self._metrics.flush()
        with self.project.metadata.write() as conn:
            writes.update_run(conn, self.id, status=status, end_time=now_ms(), error=error)
        self.status = status
        fluent.run_ended(self)

    def flush(self) -> None:
        """Write buffered metric points now."""
        self._metrics.flush()

    # --- params, tags, notes, seeds ----------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        """Record one param (stored as text). Params never change: the same value again is
        fine, another value raises InvalidInputError naming both.

        >>> run.log_param("lr", 0.1)   # doctest: +SKIP
        """
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record several params in one transaction (all or none)."""
        from keel.tracking import writes

        self._check_running("log params")
        self._write(writes.write_params, writes.text_values("param", params))

    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag (stored as text); unlike a param it may be overwritten, even after end."""
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several tags in one transaction."""
        from keel.tracking import writes

        self._write(writes.write_tags, writes.text_values("tag", tags))

    def set_notes(self, text: str) -> None:
        """Replace the run's free-text notes (Markdown is fine), even after it ended."""
        from keel.tracking import writes

        self._write(_update_run, {"notes": writes.check_notes(text)})

    def set_seed(self, seed: int, name: str = "global") -> None:
        """Seed Python's ``random`` and NumPy's global generator, and record the seed.

        >>> run.set_seed(42)          # doctest: +SKIP
        """
        import random

        from keel.tracking import writes

        self._check_running("set a seed")
        seeds = writes.check_seeds({name: seed})
        random.seed(seed)
        try:
            import numpy
        except ImportError:  # NumPy is optional here: nothing more to seed
            pass
        else:
            numpy.random.seed(seed)
        self._seeds |= seeds
        self._write(_update_run, {"seeds": dict(self._seeds)})

    # --- metrics -----------------------------------------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: datetime | None = None
    ) -> None:
        """Buffer one metric point; ``step`` defaults to one past the key's greatest step
        (0 first); ``timestamp`` (an aware datetime) to now. NaN raises InvalidInputError,
        ±inf is stored (see keel.tracking.metric_buffer).

        >>> run.log_metric("loss", 0.31, step=100)   # doctest: +SKIP
        """
        if self.status != "running":
            self._check_running("log metrics")
        self._metrics.add(key, value, step, timestamp)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Buffer one point per key, all at ``step`` (default: each key's next step); if one
        is invalid, none is logged."""
        self._check_running("log metrics")
        if not isinstance(metrics, Mapping):
            raise InvalidInputError(f"metrics must be a dict of name to number, got {metrics!r}")
        self._metrics.add_many(metrics, step)

    def _write_metrics(self, points: list[Point]) -> None:
        from keel.tracking import writes

        self._write(writes.write_metrics, points)

    # --- artifacts, inputs, models -----------------------------------------------------------

    def log_artifact(self, local_path: str | Path, path: str | None = None) -> list[ArtifactRecord]:
        """Store a file (as ``path``, default its name) or a folder (its files under ``path``,
        default the folder's name) in the artifact store and record them on the run.

        >>> run.log_artifact("model.pkl")          # doctest: +SKIP
        [ArtifactRecord(path='model.pkl', sha256='9f86d0...', size=1024)]
        """
        from keel.tracking import writes

        self._check_running("log artifacts")
        records = []
        for source, target in writes.collect_files(Path(local_path), path):
            info = self.project.artifacts.put_file(source)
            records.append(ArtifactRecord(target, info.sha256, info.size))
        if records:
            self._write(writes.write_artifacts, records)
        return records

    def log_text(self, text: str, path: str) -> ArtifactRecord:
        """Store ``text`` (UTF-8) as the artifact ``path``.

        >>> run.log_text(report, "reports/summary.md")   # doctest: +SKIP
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"log_text needs a str, got {type(text).__name__}")
        return self._log_bytes(text.encode("utf-8"), path)

    def log_dict(self, obj: Mapping[str, Any] | list[Any], path: str) -> ArtifactRecord:
        """Store ``obj`` as JSON (``.json``) or YAML (``.yaml``/``.yml``) at ``path``.

        >>> run.log_dict({"threshold": 0.7}, "config.yaml")   # doctest: +SKIP
        """
        from keel.tracking import writes

        return self._log_bytes(writes.serialize(obj, path), path)

    def _log_bytes(self, data: bytes, path: str) -> ArtifactRecord:
        from keel.tracking import writes

        self._check_running("log artifacts")
        target = writes.check_artifact_path(path)
        info = self.project.artifacts.put_bytes(data)
        record = ArtifactRecord(target, info.sha256, info.size)
        self._write(writes.write_artifacts, [record])
        return record

    def log_input(
        self,
        kind: str,
        ref: str,
        name: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a lineage input: kind 'dataset' (ref: its content hash), 'feature_view'
        ('view@version') or 'training_set' (its fingerprint).

        >>> run.log_input("dataset", sha, name="data/train.parquet")   # doctest: +SKIP
        """
        from keel.tracking import writes

        self._check_running("log inputs")
        self._write(writes.write_input, writes.check_input(kind, ref, name, details))

    def log_model(
        self,
        model: Any,
        name: str,
        *,
        input_example: Any = None,
        flavor: str | None = None,
        description: str | None = None,
    ) -> ModelVersion:
        """Register ``model`` as the next version of registered model ``name``, linked to this
        run (see keel.registry.versions.register_model_version).

        >>> version = run.log_model(clf, "fraud", input_example=X[:5])   # doctest: +SKIP
        """
        from keel.registry.versions import register_model_version

        self.flush()  # the version's run shows every metric logged before it
        return register_model_version(
            self.project,
            model,
            name,
            run_id=self.id,
            input_example=input_example,
            flavor=flavor,
            description=description,
        )

    # --- helpers -----------------------------------------------------------------------------

    def _write(self, func: Callable[[Connection, str, Any], None], payload: Any) -> None:
        with self.project.metadata.write() as conn:
            func(conn, self.id, payload)

    def _check_running(self, action: str) -> None:
        if self.ended:
            raise StateError(
                f"cannot {action}: run {self.id} has ended ({self.status}); start a new run"
            )


def describe_error(exc: BaseException) -> str:
    """The text stored in runs.error: 'Type: message' on the first line, then the traceback."""
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__}: {exc}\n\n{trace}"


def _update_run(conn: Connection, run_id: str, values: dict[str, Any]) -> None:
    from keel.tracking import writes

    writes.update_run(conn, run_id, **values)
