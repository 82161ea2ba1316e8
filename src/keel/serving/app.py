"""The model server: an ASGI app serving a project's endpoints over three protocols.

``create_app`` builds the app; its endpoints' models load when the app starts (the ASGI
lifespan), and ``/ready`` answers 200 once every one has loaded. Routes:

- ``POST /v1/endpoints/{name}/predict``   Keel's JSON protocol (keel.serving.native)
- ``/v2/...``                             Open Inference Protocol V2 (keel.serving.v2)
- ``POST /invocations``                   MLflow's scoring protocol (keel.serving.mlflow)
- ``GET /health``, ``GET /ready``, ``GET /metrics`` (Prometheus), ``GET /openapi.json``

Errors are JSON ``{"error": message}``: 404 for an unknown endpoint, 413 for a body above
``serving.max_request_bytes``, 422 (400 on V2) for input that does not fit the model, 503 while
loading or when a store is down. Every request is logged as one JSON line on the
``keel.serving.access`` logger.

    app = create_app(project, endpoints={"fraud": EndpointConfig(model="fraud@champion",
                                                                  features="fraud")})
    uvicorn.run(app)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from keel.errors import ConfigError, InvalidInputError, KeelError
from keel.serving import admin_api, feedback_api, mlflow, native, v2
from keel.serving.auth import ApiKeyMiddleware, ApiKeys
from keel.serving.batching import Batcher
from keel.serving.endpoints import EndpointRegistry
from keel.serving.metrics import ServerMetrics
from keel.serving.middleware import AccessLogMiddleware, SizeLimitMiddleware
from keel.serving.pipeline import status_for
from keel.serving.predict import PredictionSink, Predictor
from keel.serving.router import DEFAULT_REFRESH_S, Router
from keel.serving.shadow import DEFAULT_QUEUE_SIZE, Shadow, ShadowQueue, check_queue_size

if TYPE_CHECKING:
    from keel.config import EndpointConfig
    from keel.project import Project

logger = logging.getLogger("keel.serving")


def create_app(
    project: Project,
    *,
    endpoints: Mapping[str, EndpointConfig] | None = None,
    log: PredictionSink | None = None,
    api_keys: ApiKeys | None = None,
    refresh_s: float | None = None,
    shadow_queue_size: int | None = None,
    shadow_process: bool | None = None,
) -> FastAPI:
    """The model server of ``project`` for ``endpoints`` (default: ``serving.endpoints``),
    writing every prediction to ``log`` (default: the project's prediction log at
    ``serving.prediction_log``), requiring ``api_keys`` (default: ``serving.api_keys`` and
    ``serving.admin_keys``; none configured: open, see keel.serving.auth).

    Each endpoint serves its `keel deploy` state when it has one, re-read every ``refresh_s``
    seconds (default: ``serving.refresh_s``, else 5); a shadow candidate's copies wait in a
    queue of ``shadow_queue_size`` requests (default: ``serving.shadow_queue_size``, else
    1000), beyond which they are dropped (keel.serving.router, keel.serving.shadow); they are
    predicted in a separate low-priority process when ``shadow_process`` (default:
    ``serving.shadow_process``) and the log is a prediction log, else in a server thread.

    >>> app = create_app(project, endpoints={"fraud": EndpointConfig(model="fraud@1")})
    ... # doctest: +SKIP
    """
    from keel import __version__

    registry = EndpointRegistry.from_config(project, endpoints)
    metrics = ServerMetrics()
    serving = project.config.serving
    # Read leniently, like the keys: the serving section may not declare these settings.
    if refresh_s is None:
        refresh_s = float(getattr(serving, "refresh_s", None) or DEFAULT_REFRESH_S)
    if shadow_queue_size is None:
        shadow_queue_size = int(getattr(serving, "shadow_queue_size", None) or DEFAULT_QUEUE_SIZE)
    shadow_queue_size = check_queue_size(shadow_queue_size)
    if shadow_process is None:
        shadow_process = bool(getattr(serving, "shadow_process", True))
    router = Router(registry, refresh_s=refresh_s)
    predictor = Predictor(registry, log, metrics, router=router)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from keel.serving.compaction import Compactor
        from keel.serving.feedback import FeedbackLog

        folder = project.root / project.config.serving.prediction_log
        if predictor.log is None:
            predictor.log = _default_log(project)
        shadow = _shadow(project, predictor.log, metrics, shadow_queue_size, shadow_process)
        predictor.shadow = shadow
        app.state.feedback = FeedbackLog(folder)
        # Sealed segments become Parquet in the background, off the request path.
        compactor = Compactor(folder, interval_s=60.0, separate_process=True)
        compactor.start()
        router.load()
        shadow.start()

        def prepare_shadows() -> None:  # candidates ready before their first copy arrives
            shadow.prepare(router.shadows())

        prepare_shadows()
        refresher = asyncio.create_task(router.run(after_refresh=prepare_shadows))
        logger.info("serving endpoints %s", sorted(registry.endpoints))
        try:
            yield
        finally:
            refresher.cancel()
            with suppress(asyncio.CancelledError):
                await refresher
            shadow.stop()
            compactor.stop()
            registry.close()
            app.state.feedback.close()
            close = getattr(predictor.log, "close", None)
            if callable(close):
                close()

    app = FastAPI(
        title="Keel model server",
        version=__version__,
        lifespan=lifespan,
        description="Predictions from a Keel project's registered models.",
    )
    app.state.predictor = predictor
    app.state.project = project
    app.state.batcher = Batcher(predictor)
    app.include_router(native.router)
    app.include_router(v2.router)
    app.include_router(mlflow.router)
    app.include_router(feedback_api.router)
    app.include_router(admin_api.router)
    _add_health(app, predictor)
    app.add_exception_handler(KeelError, _keel_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
    # Added last = outermost: the access log also sees requests refused for size.
    app.add_middleware(SizeLimitMiddleware, max_bytes=project.config.serving.max_request_bytes)
    keys = _config_keys(project) if api_keys is None else api_keys
    if keys.enabled:  # before the body is read: a caller without a key sends nothing big
        app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(AccessLogMiddleware)
    return app


def _shadow(
    project: Project, log: PredictionSink, metrics: ServerMetrics, size: int, in_process: bool
) -> Shadow:
    from keel.serving.predlog import PredictionLog
    from keel.serving.shadow_process import ShadowProcess

    if in_process and isinstance(log, PredictionLog):
        return ShadowProcess(project.root, log.folder, metrics, size=size)
    return ShadowQueue(log, metrics, size=size)


def app_from_environment() -> FastAPI:
    """The app of the project found from the environment (``$KEEL_PROJECT_DIR``, else the
    working directory) serving ``$KEEL_SERVE_ENDPOINTS`` (JSON ``{name: {"model": ...,
    "features": ...}}``, set by `keel serve --endpoint`) or else ``serving.endpoints``: the
    factory each `keel serve` worker calls."""
    from keel.config import EndpointConfig
    from keel.project import Project

    raw = os.environ.get("KEEL_SERVE_ENDPOINTS")
    endpoints = None
    if raw:
        try:
            endpoints = {k: EndpointConfig(**v) for k, v in json.loads(raw).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"KEEL_SERVE_ENDPOINTS is not a JSON object of endpoints ({exc}); "
                'set it like {"fraud": {"model": "fraud@champion"}} or unset it'
            ) from exc
    return create_app(Project.discover(), endpoints=endpoints)


def _add_health(app: FastAPI, predictor: Predictor) -> None:
    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["health"])
    async def ready() -> Response:
        """200 once every endpoint's model has loaded, else 503 (readiness)."""
        registry = predictor.registry
        body = {
            "ready": registry.ready,
            "endpoints": {
                name: endpoint.version.ref for name, endpoint in registry.endpoints.items()
            },
        }
        return JSONResponse(body, status_code=200 if registry.ready else 503)

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        """Prometheus metrics."""
        body, content_type = predictor.metrics.render()
        return Response(body, media_type=content_type)


def _error(request: Request, status: int, message: str) -> JSONResponse:
    path = request.url.path
    if status == 422 and path.startswith("/v2"):
        status = 400  # the V2 protocol answers 400 to any bad request
    if path == "/invocations":
        code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        return JSONResponse({"error_code": code, "message": message}, status_code=status)
    return JSONResponse({"error": message}, status_code=status)


async def _keel_error(request: Request, exc: KeelError) -> JSONResponse:
    return _error(request, status_for(exc), str(exc))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    message = "invalid request: " + "; ".join(problems)
    return _error(request, 422, str(InvalidInputError(message)))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s", request.url.path)
    return _error(request, 500, f"internal error ({type(exc).__name__}); see the server log")


def _config_keys(project: Project) -> ApiKeys:
    # Read leniently: the serving section gains api_keys/admin_keys with the security work.
    serving = project.config.serving
    return ApiKeys.from_values(
        getattr(serving, "api_keys", None) or (), getattr(serving, "admin_keys", None) or ()
    )


def _default_log(project: Project) -> PredictionSink:
    from keel.serving.predlog import PredictionLog

    return PredictionLog(project.root / project.config.serving.prediction_log)
