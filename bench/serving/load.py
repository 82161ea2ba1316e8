"""Load for the serving benchmark, from threads with keep-alive `http.client` connections (a
C-speed HTTP/1.1 client path, like wrk's): closed loop — a fixed number of connections, each
sending its next request as soon as the previous one answered, which measures the highest
throughput — and open loop — requests due on a fixed schedule whatever the answers, latency
counted from when each was due, which measures latency at a given rate."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)


def _post(conn: http.client.HTTPConnection, path: str, payload: bytes) -> int:
    conn.request("POST", path, body=payload, headers={"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def _encode(bodies: Sequence[Mapping[str, Any]]) -> list[bytes]:
    return [json.dumps(body).encode() for body in bodies]


def closed_loop(
    url: str,
    path: str,
    bodies: Sequence[Mapping[str, Any]],
    *,
    connections: int = 8,
    seconds: float = 10.0,
) -> dict[str, Any]:
    payloads = _encode(bodies)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        conn = _connection(url)
        mine: list[float] = []
        failed = 0
        i = offset
        while time.perf_counter() < end:
            start = time.perf_counter()
            status = _post(conn, path, payloads[i % len(payloads)])
            mine.append(time.perf_counter() - start)
            failed += status != 200
            i += connections
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "rps": (len(latencies) - errors[0]) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def open_loop(
    url: str,
    path: str,
    bodies: Sequence[Mapping[str, Any]],
    *,
    rate: float,
    seconds: float,
    connections: int = 32,
) -> dict[str, Any]:
    payloads = _encode(bodies)
    total = int(rate * seconds)
    start = time.perf_counter() + 0.1
    next_index = [0]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = _connection(url)
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= total:
                break
            due = start + index / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            status = _post(conn, path, payloads[index % len(payloads)])
            done = time.perf_counter()
            with lock:
                latencies.append(done - due)  # from when it was due: lag counts
                errors[0] += status != 200
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {
        "rps": (len(latencies) - errors[0]) / max(elapsed, total / rate),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": errors[0],
    }
