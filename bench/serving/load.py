"""Load for the serving benchmark, generated in its own process (like wrk) by an asyncio client
on raw keep-alive HTTP/1.1 connections: each request is pre-encoded bytes written in one call
and each response read by its Content-Length, so the generator spends a few microseconds per
request and leaves the CPUs to the server under test.

- closed loop: a fixed number of connections, each sending its next request as soon as the
  previous one answered — the highest throughput;
- open loop: requests due on a fixed schedule whatever the answers, latency counted from when
  each was due (lag counts, no coordinated omission) — latency at a given rate.

    python load.py closed URL PATH BODIES.json --connections 64 --seconds 8
    python load.py open URL PATH BODIES.json --rate 500 --seconds 8

prints one JSON object; `run_closed` / `run_open` start it from the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _requests(host: str, port: int, path: str, bodies: Sequence[Mapping[str, Any]]) -> list[bytes]:
    out = []
    for body in bodies:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        out.append(head.encode() + payload)
    return out


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request, read its whole response, return the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length > 0:
        await reader.readexactly(length)
    return status


async def _closed(
    host: str, port: int, requests: list[bytes], connections: int, seconds: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        i = offset
        while time.perf_counter() < end:
            start = time.perf_counter()
            status = await _exchange(reader, writer, requests[i % len(requests)])
            latencies.append(time.perf_counter() - start)
            errors += status != 200
            i += connections
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(connections)))
    elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": (len(latencies) - errors) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "connections": connections,
    }


async def _open(
    host: str, port: int, requests: list[bytes], rate: float, seconds: float, connections: int
) -> dict[str, Any]:
    """A pool of connections; request k is due at start + k / rate and goes out on the next
    free connection — when none is free it waits, and that wait counts in its latency."""
    total = int(rate * seconds)
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.05

    async def one(index: int, due: float) -> None:
        nonlocal errors
        connection = await pool.get()
        status = await _exchange(*connection, requests[index % len(requests)])
        latencies.append(time.perf_counter() - due)
        errors += status != 200
        pool.put_nowait(connection)

    tasks = []
    for index in range(total):
        due = start + index / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {
        "rps": (len(latencies) - errors) / max(elapsed, total / rate),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": errors,
    }


def _run(
    mode: str, url: str, path: str, bodies: Sequence[Mapping[str, Any]], **options: float
) -> dict[str, Any]:
    """Run the load in a separate process (this file as a script) and return its figures."""
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as folder:
        bodies_file = Path(folder) / "bodies.json"
        bodies_file.write_text(json.dumps(list(bodies)))
        command = [sys.executable, __file__, mode, url, path, str(bodies_file)]
        for name, value in options.items():
            command += [f"--{name}", str(value)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout))


def run_closed(
    url: str, path: str, bodies: Sequence[Mapping[str, Any]], *, connections: int, seconds: float
) -> dict[str, Any]:
    return _run("closed", url, path, bodies, connections=connections, seconds=seconds)


def run_open(
    url: str,
    path: str,
    bodies: Sequence[Mapping[str, Any]],
    *,
    rate: float,
    seconds: float,
    connections: int = 32,
) -> dict[str, Any]:
    return _run("open", url, path, bodies, rate=rate, seconds=seconds, connections=connections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["closed", "open"])
    parser.add_argument("url")
    parser.add_argument("path")
    parser.add_argument("bodies", type=Path)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args()
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = _requests(host, port, args.path, json.loads(args.bodies.read_text()))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.mode == "closed":
        result = asyncio.run(_closed(host, port, requests, args.connections, args.seconds))
    else:
        result = asyncio.run(_open(host, port, requests, args.rate, args.seconds, args.connections))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
