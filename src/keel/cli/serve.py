"""`keel serve`: run the model server on uvicorn, with one or more worker processes.

Each worker builds the app itself (uvicorn's factory mode) from the project directory and the
endpoints passed down through the environment, so every worker serves the same thing.
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from keel.config import EndpointConfig
    from keel.project import Project

# The endpoints chosen with --endpoint, as JSON, for the worker processes (not a config key).
ENDPOINTS_ENV = "KEEL_SERVE_ENDPOINTS"
FACTORY = "keel.serving.app:app_from_environment"


def register(app: typer.Typer) -> None:
    """Add the `serve` command to the root app."""
    app.command("serve")(serve)


def serve(
    host: str | None = typer.Option(None, "--host", help="Address to bind (serving.host)."),
    port: int | None = typer.Option(None, "--port", help="Port to bind (serving.port)."),
    workers: int | None = typer.Option(
        None, "--workers", help="Worker processes (serving.workers)."
    ),
    endpoint: list[str] = typer.Option(
        [],
        "--endpoint",
        metavar="NAME=MODEL@ALIAS[:SERVICE]",
        help="Serve this endpoint (repeatable); when given, only these are served instead of "
        "serving.endpoints.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    """Serve the project's endpoints over HTTP (native JSON, Open Inference V2, MLflow)."""
    from keel.cli.context import current_project

    project = current_project()
    try:
        run_server(
            project,
            endpoints=parse_endpoints(endpoint) if endpoint else None,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )
    finally:
        project.close()


def parse_endpoints(specs: list[str]) -> dict[str, EndpointConfig]:
    """``["fraud=fraud@champion:fraud"]`` -> ``{"fraud": EndpointConfig(...)}``; a name
    given twice is an error."""
    from keel.errors import InvalidInputError
    from keel.serving.endpoints import parse_endpoint_spec

    out: dict[str, EndpointConfig] = {}
    for spec in specs:
        name, config = parse_endpoint_spec(spec)
        if name in out:
            raise InvalidInputError(f"endpoint {name!r} is given twice with --endpoint")
        out[name] = config
    return out


def run_server(
    project: Project,
    *,
    endpoints: dict[str, EndpointConfig] | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_level: str = "info",
) -> None:
    """Run uvicorn until stopped; ``None`` arguments take the ``serving`` configuration."""
    import uvicorn

    from keel.errors import InvalidInputError

    config = project.config.serving
    chosen = config.endpoints if endpoints is None else endpoints
    if not chosen:
        raise InvalidInputError(
            "there is no endpoint to serve; add serving.endpoints to keel.yaml or pass "
            "--endpoint NAME=MODEL@ALIAS[:SERVICE]"
        )
    count = config.workers if workers is None else workers
    if count < 1:
        raise InvalidInputError(f"--workers {count} is not a positive number of processes")
    os.environ["KEEL_PROJECT_DIR"] = str(project.root)
    if endpoints is not None:
        os.environ[ENDPOINTS_ENV] = json.dumps({k: v.model_dump() for k, v in endpoints.items()})
    bind_host = config.host if host is None else host
    bind_port = config.port if port is None else port
    if count > 1:
        run_workers(count, bind_host, bind_port, log_level)
        return
    uvicorn.run(
        FACTORY,
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=1,
        log_level=log_level,
        access_log=False,  # the app writes its own JSON access log
        log_config=log_config(log_level),
    )


def run_workers(count: int, host: str, port: int, log_level: str) -> None:
    """``count`` independent uvicorn servers, each on its own socket bound with SO_REUSEPORT,
    so the kernel spreads connections over them. Stops them all on Ctrl-C or SIGTERM."""
    import multiprocessing
    import signal

    context = multiprocessing.get_context("spawn")
    processes = [
        # Not daemonic: a worker starts its own shadow process (keel.serving.shadow_process),
        # which multiprocessing forbids daemonic processes; stop() below ends them instead.
        context.Process(target=_worker, args=(host, port, log_level))
        for _ in range(count)
    ]
    for process in processes:
        process.start()

    def stop(*_: object) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()

    signal.signal(signal.SIGTERM, stop)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for process in processes:
            process.join(timeout=10)


def _worker(host: str, port: int, log_level: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        FACTORY,
        factory=True,
        log_level=log_level,
        access_log=False,
        log_config=log_config(log_level),
    )
    uvicorn.Server(config).run(sockets=[listening_socket(host, port)])


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` that other processes may bind too (SO_REUSEPORT).

    The protocol is named on purpose: asyncio sets TCP_NODELAY on accepted connections only
    when the listening socket says IPPROTO_TCP, and without it every response after a
    connection's first waits ~40 ms for the client's delayed ACK (Nagle's algorithm) —
    the defect of uvicorn's own multi-worker socket.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging plus Keel's: JSON access lines as they are, the rest prefixed."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(message)s"},
            "default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "access": {"class": "logging.StreamHandler", "formatter": "plain"},
            "default": {"class": "logging.StreamHandler", "formatter": "default"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "keel.serving": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "keel.serving.access": {
                "handlers": ["access"],
                "level": level.upper(),
                "propagate": False,
            },
        },
    }
