"""Prometheus metrics of the model server, in a registry of their own per app.

Each app gets its own CollectorRegistry so that several apps in one process (tests, embedded
use) never collide. With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
folder: each worker then writes its samples there and `/metrics` aggregates all workers.

    metrics = ServerMetrics()
    metrics.requests.labels("fraud", "primary", "3", "ok").inc()
    body, content_type = metrics.render()
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, exposition, generate_latest

# Sub-millisecond to seconds: a small model with an online lookup answers in about a millisecond.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LABELS = ("endpoint", "variant", "model_version")


class ServerMetrics:
    """Requests, latency and errors per endpoint, variant and model version; time spent in the
    feature lookup and in the model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "keel_requests",
            "Prediction requests answered, by outcome (ok or error).",
            (*_LABELS, "status"),
            registry=self.registry,
        )
        self.predictions = Counter(
            "keel_predictions",
            "Rows predicted (a batch request counts each row).",
            _LABELS,
            registry=self.registry,
        )
        self.errors = Counter(
            "keel_request_errors",
            "Prediction requests that failed, by HTTP status code.",
            (*_LABELS, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "keel_request_latency_seconds",
            "Time to answer a prediction request, feature lookup and logging included.",
            _LABELS,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.lookup_time = Histogram(
            "keel_feature_lookup_seconds",
            "Time spent reading online features for a request.",
            _LABELS,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.model_time = Histogram(
            "keel_model_seconds",
            "Time spent in the model for a request.",
            _LABELS,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "keel_shadow_dropped",
            "Copies of requests not sent to a shadow candidate because its queue was full.",
            ("endpoint",),
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (all workers' when multiprocess)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged), exposition.CONTENT_TYPE_LATEST
        return generate_latest(self.registry), exposition.CONTENT_TYPE_LATEST
