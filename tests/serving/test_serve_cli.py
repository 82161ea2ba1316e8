"""`keel serve`: argument handling, and a real two-worker server started by the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from keel.cli import serve as serve_cli
from keel.config import EndpointConfig
from keel.errors import InvalidInputError
from keel.serving.predlog import read_predictions
from tests.serving.test_app import Served, build_project
from tests.support.servers import free_port

ENVIRONMENT_AT_IMPORT = dict(os.environ)

# The command on a root app of its own, as keel.cli.main registers it.
SCRIPT = """
import sys, typer
from keel.cli import serve
app = typer.Typer()
@app.callback()
def root() -> None: ...
serve.register(app)
app(sys.argv[1:])
"""


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None: ...

    serve_cli.register(app)
    return app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    result = build_project(tmp_path_factory.mktemp("cli") / "proj")
    yield result
    result.project.close()


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    # run_server sets these for its workers; set-then-delete makes monkeypatch restore them.
    for name in (serve_cli.ENDPOINTS_ENV, "KEEL_PROJECT_DIR"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return calls


def test_endpoint_specs_are_parsed() -> None:
    assert serve_cli.parse_endpoints(["fraud=fraud@live:fraud", "plain=plain@1"]) == {
        "fraud": EndpointConfig(model="fraud@live", features="fraud"),
        "plain": EndpointConfig(model="plain@1"),
    }
    for bad in ["fraud", "=fraud@1", "fraud=", "bad name=m@1"]:
        with pytest.raises(InvalidInputError, match="endpoint"):
            serve_cli.parse_endpoints([bad])
    with pytest.raises(InvalidInputError, match="twice"):
        serve_cli.parse_endpoints(["a=m@1", "a=m@2"])


def test_serve_passes_options_and_endpoints_to_uvicorn_workers(
    served: Served, uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(served.project.root)
    args = ["serve", "--port", "9123", "--workers", "1", "--endpoint", "p=plain@1"]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 0, result.output
    [call] = uvicorn_calls
    assert call["app"] == "keel.serving.app:app_from_environment"
    assert (call["factory"], call["port"], call["workers"]) == (True, 9123, 1)
    assert call["host"] == "127.0.0.1"  # serving.host
    # Several workers: independent servers on SO_REUSEPORT sockets.
    started: list[tuple[Any, ...]] = []
    monkeypatch.setattr(serve_cli, "run_workers", lambda *a: started.append(a))
    args[4] = "3"
    assert CliRunner().invoke(cli(), args).exit_code == 0
    assert started == [(3, "127.0.0.1", 9123, "info")]
    assert os.environ["KEEL_PROJECT_DIR"] == str(served.project.root)
    assert os.environ[serve_cli.ENDPOINTS_ENV] == '{"p": {"model": "plain@1", "features": null}}'


def test_serve_without_endpoints_says_how_to_add_one(
    served: Served, uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(served.project.root)
    result = CliRunner().invoke(cli(), ["serve"])
    assert isinstance(result.exception, InvalidInputError)
    assert "--endpoint" in str(result.exception)
    assert uvicorn_calls == []


def wait_ready(process: subprocess.Popen[bytes], base: str, stderr: Path) -> None:
    deadline = time.monotonic() + 60  # a start-up bound for slow machines, not a benchmark
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"keel serve exited: {stderr.read_text()}")
        try:
            if httpx.get(base + "/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("keel serve did not become ready")


def start_two_workers(served: Served, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`keel serve --workers 2` on a free port serving fraud@live, in a session of its own
    (so a test may kill the whole group); the process, its port and its stderr file."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    command = [sys.executable, "-c", SCRIPT, "serve", "--port", str(port), "--workers", "2"]
    command += ["--endpoint", "fraud=fraud@live:fraud"]
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=served.project.root, env=env, stderr=sink, start_new_session=True
        )
    return process, port, stderr


def test_keel_serve_runs_two_workers_that_answer_and_log(served: Served, tmp_path: Path) -> None:
    process, port, stderr = start_two_workers(served, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base, stderr)
        ids = []
        for amount in (20.0, 8.0, 3.0):
            response = httpx.post(
                base + "/v1/endpoints/fraud/predict",
                json={"row": {"user_id": 1, "amount": amount}},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["predictions"] == pytest.approx([served.expected_fraud(1, amount)])
            ids += body["request_ids"]
        assert httpx.get(base + "/v1/endpoints/plain/predict").status_code in (404, 405)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert '"path": "/v1/endpoints/fraud/predict"' in stderr.read_text()  # JSON access log
    folder = Path(served.project.root) / served.project.config.serving.prediction_log
    logged = read_predictions(folder).to_pylist()
    assert {row["request_id"] for row in logged} >= set(ids)


def test_the_cli_tests_leave_no_environment_behind() -> None:
    for name in (serve_cli.ENDPOINTS_ENV, "KEEL_PROJECT_DIR"):
        assert os.environ.get(name) == ENVIRONMENT_AT_IMPORT.get(name)


def test_sigkill_under_load_loses_no_acknowledged_prediction(
    served: Served, tmp_path: Path
) -> None:
    """Every prediction whose response arrived is in the log, even when the whole server is
    killed with SIGKILL in the middle of the load."""
    import http.client
    import json
    import threading

    process, port, stderr = start_two_workers(served, tmp_path)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        body = json.dumps({"rows": [{"user_id": 1 + offset % 2, "amount": 5.0}] * 2})
        headers = {"content-type": "application/json"}
        try:
            while not stop.is_set():
                conn.request("POST", "/v1/endpoints/fraud/predict", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                if response.status == 200:
                    with lock:
                        acknowledged.extend(json.loads(payload)["request_ids"])
        except (OSError, http.client.HTTPException):
            return  # the server is gone
        finally:
            conn.close()

    try:
        wait_ready(process, f"http://127.0.0.1:{port}", stderr)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(acknowledged) >= 300, "the load must be under way when the kill lands"
    folder = Path(served.project.root) / served.project.config.serving.prediction_log
    logged = {row["request_id"] for row in read_predictions(folder).to_pylist()}
    missing = set(acknowledged) - logged
    assert not missing, f"{len(missing)} acknowledged predictions are not in the log"


def test_worker_connections_send_without_waiting_for_acks() -> None:
    """Each worker's accepted connections have TCP_NODELAY: without it a keep-alive client
    waits ~40 ms on every response after its first (Nagle's algorithm + delayed ACK)."""
    import asyncio
    import socket

    async def accepted_nodelay() -> int:
        found: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            found.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listening = serve_cli.listening_socket("127.0.0.1", free_port())
        server = await asyncio.start_server(handle, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
            value = await asyncio.wait_for(found, 10)
            writer.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
