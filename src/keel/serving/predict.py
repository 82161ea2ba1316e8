"""One prediction request, whatever the protocol: rows in, predictions out, every row logged.

For each request: the entity rows (join keys plus request fields) go through the endpoint's
feature service (online store plus on-demand functions, the code used for training); the model
input is assembled in the signature's column order from the features and the rows' own fields;
the model predicts (keel.serving.pipeline). Each row is answered by its unit's variant of the
endpoint's deployment (keel.serving.router); a shadow candidate gets a copy
(keel.serving.shadow). Every row gets a request id and a prediction-log record, written before
the response is returned; requests that arrive together may share one pass (predict_batch,
keel.serving.batching).

    predictor = Predictor(registry, log, ServerMetrics())
    served = predictor.predict("fraud", [{"user_id": 7, "amount": 12.5}])
    served.predictions, served.request_ids
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from keel.errors import (
    KeelError,
)
from keel.serving.pipeline import (
    check_rows,
    check_types,
    log_record,
    lookup,
    predict_rows,
    source_of,
    status_for,
)
from keel.serving.predlog import UNIT
from keel.serving.router import split
from keel.serving.shadow import ShadowJob

if TYPE_CHECKING:
    from keel.serving.endpoints import Endpoint, EndpointRegistry
    from keel.serving.metrics import ServerMetrics
    from keel.serving.router import Route, Router
    from keel.serving.shadow import Shadow

PRIMARY = "primary"


class PredictionSink(Protocol):
    """Where prediction records go (keel.serving.predlog.PredictionLog in a server)."""

    def append(self, record: dict[str, Any]) -> object: ...


@dataclass(frozen=True)
class Served:
    """The answer to one request: per row, the model that answered (``models``), the
    prediction, the request id and the variant. ``endpoint`` is the first row's model, for the
    protocols that answer with one model only."""

    models: list[Endpoint]
    predictions: list[Any]
    request_ids: list[str]
    variants: list[str]

    @property
    def endpoint(self) -> Endpoint:
        return self.models[0]

    @property
    def model_versions(self) -> list[int]:
        return [model.version.version for model in self.models]

    @property
    def variant(self) -> str:
        return self.variants[0] if self.variants else PRIMARY

    @property
    def model_version(self) -> int:
        return self.endpoint.version.version

    def part(self, offset: int, size: int) -> Served:
        """The answer to the ``size`` rows from ``offset`` (one request of a merged pass)."""
        end = offset + size
        return Served(
            self.models[offset:end],
            self.predictions[offset:end],
            self.request_ids[offset:end],
            self.variants[offset:end],
        )


class Predictor:
    """Runs requests against a registry's endpoints, routed by their deployments (see
    keel.serving.router), logging and measuring each one; shadow copies go to ``shadow``."""

    def __init__(
        self,
        registry: EndpointRegistry,
        log: PredictionSink | None,
        metrics: ServerMetrics,
        *,
        router: Router | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        from keel.serving.router import Router

        self.registry = registry
        self.log = log
        self.metrics = metrics
        self.router = Router(registry) if router is None else router
        self.shadow = shadow

    def predict(self, name: str, rows: object) -> Served:
        """Predict every row for endpoint ``name``; KeelError subclasses for bad input.

        Each row goes to its unit's variant, so a batch may be answered by several models.
        """
        route = self.router.route(name)
        start_ns = time.perf_counter_ns()
        time_us = time.time_ns() // 1000
        try:
            checked = check_rows(rows)
        except KeelError as exc:
            self._failed(route.primary, PRIMARY, exc, time_us, start_ns)
            raise
        return self._predict(route, checked, [len(checked)], time_us, start_ns, quiet=False)

    def predict_batch(self, name: str, requests: Sequence[object]) -> list[Served | KeelError]:
        """Predict several requests for endpoint ``name`` in one pass — one online lookup and
        one model call for all their rows — and answer each with its own rows' predictions,
        or its own error. When the merged pass fails, each request is predicted alone, so a
        bad request never fails the others (keel.serving.batching gathers the requests)."""
        if len(requests) == 1:
            return [self._outcome(name, requests[0])]
        route = self.router.route(name)
        start_ns = time.perf_counter_ns()
        time_us = time.time_ns() // 1000
        results: list[Served | KeelError | None] = [None] * len(requests)
        good: list[int] = []
        for i, rows in enumerate(requests):
            try:
                check_rows(rows)
                good.append(i)
            except KeelError as exc:
                self._failed(route.primary, PRIMARY, exc, time_us, start_ns)
                results[i] = exc
        merged = [row for i in good for row in cast(list[dict[str, Any]], requests[i])]
        sizes = [len(cast(list[Any], requests[i])) for i in good]
        try:
            served = self._predict(route, merged, sizes, time_us, start_ns, quiet=True)
        except KeelError:
            # One request spoiled the pass (its lookup or its values): answer each alone. (With
            # features.log_served, the good requests' lookups are then logged twice: the same
            # values, which skew rates do not change.)
            for i in good:
                results[i] = self._outcome(name, requests[i])
        else:
            offset = 0
            for i, size in zip(good, sizes, strict=True):
                results[i] = served.part(offset, size)
                offset += size
        return [result for result in results if result is not None]

    def _outcome(self, name: str, rows: object) -> Served | KeelError:
        try:
            return self.predict(name, rows)
        except KeelError as exc:
            return exc

    def _predict(
        self,
        route: Route,
        checked: list[dict[str, Any]],
        sizes: Sequence[int],
        time_us: int,
        start_ns: int,
        *,
        quiet: bool,
    ) -> Served:
        """The rows of ``len(sizes)`` requests (``sizes`` rows each, in order), checked by
        check_rows. A failure is logged and counted unless ``quiet`` (the caller retries)."""
        ids = [uuid.uuid4().hex for _ in checked]
        variants, units = route.assign_units(checked, ids)
        predictions: list[Any] = [None] * len(checked)
        inputs: list[dict[str, Any]] = [{}] * len(checked)
        timings: dict[str, tuple[float, float]] = {}
        primary_features: dict[str, list[Any]] = {}
        for variant, positions in split(variants).items():
            endpoint = route.models[variant]
            part = [checked[i] for i in positions]
            try:
                check_types(endpoint, part)
                features, lookup_s = lookup(endpoint, part)
                part_inputs, part_predictions, model_s = predict_rows(endpoint, part, features)
            except KeelError as exc:
                if not quiet:
                    self._failed(endpoint, variant, exc, time_us, start_ns)
                raise
            if variant == PRIMARY:
                primary_features = features
            timings[variant] = (lookup_s, model_s)
            for j, i in enumerate(positions):
                inputs[i], predictions[i] = part_inputs[j], part_predictions[j]
        latency_us = (time.perf_counter_ns() - start_ns) // 1000
        models = [route.models[v] for v in variants]
        if self.log is not None:
            answered = zip(models, variants, ids, inputs, predictions, strict=True)
            for i, (model, variant, request_id, features, prediction) in enumerate(answered):
                record = log_record(
                    source_of(model),
                    variant,
                    request_id,
                    time_us,
                    features,
                    prediction,
                    latency_us,
                    200,
                )
                if units is not None:
                    record[UNIT] = units[i]  # kept in the log's extra fields
                self.log.append(record)
        self._measure(route.models, variants, sizes, timings, start_ns)
        candidate = route.shadow
        if candidate is not None and self.shadow is not None:
            # After the log write and off the response path: the shadow never delays it.
            self.shadow.submit(ShadowJob(candidate, checked, primary_features, ids, time_us))
        return Served(models, predictions, ids, variants)

    def _measure(
        self,
        models: Mapping[str, Endpoint],
        variants: list[str],
        sizes: Sequence[int],
        timings: Mapping[str, tuple[float, float]],
        start_ns: int,
    ) -> None:
        """Per variant: the requests it answered (a request whose rows went to two variants
        counts for each), its rows, and each request's latency; lookup and model time once
        per pass."""
        elapsed_s = (time.perf_counter_ns() - start_ns) / 1e9
        answered: dict[str, int] = dict.fromkeys(timings, 0)
        offset = 0
        for size in sizes:
            for variant in set(variants[offset : offset + size]):
                answered[variant] += 1
            offset += size
        for variant, (lookup_s, model_s) in timings.items():
            endpoint = models[variant]
            labels = (endpoint.name, variant, str(endpoint.version.version))
            self.metrics.requests.labels(*labels, "ok").inc(answered[variant])
            self.metrics.predictions.labels(*labels).inc(variants.count(variant))
            self.metrics.lookup_time.labels(*labels).observe(lookup_s)
            self.metrics.model_time.labels(*labels).observe(model_s)
            latency = self.metrics.latency.labels(*labels)
            for _ in range(answered[variant]):
                latency.observe(elapsed_s)

    def _failed(
        self, endpoint: Endpoint, variant: str, exc: KeelError, time_us: int, start_ns: int
    ) -> None:
        latency_us = (time.perf_counter_ns() - start_ns) // 1000
        status = status_for(exc)
        labels = (endpoint.name, variant, str(endpoint.version.version))
        if self.log is not None:
            request_id = uuid.uuid4().hex
            self.log.append(
                log_record(
                    source_of(endpoint), variant, request_id, time_us, {}, None, latency_us, status
                )
            )
        self.metrics.requests.labels(*labels, "error").inc()
        self.metrics.errors.labels(*labels, str(status)).inc()
