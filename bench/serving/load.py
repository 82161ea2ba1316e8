"""Load for the serving benchmark: closed loop (a fixed number of connections, each sending its
next request when the previous one answered — how wrk measures the highest throughput) and
open loop at a fixed rate (keel.serving.loadgen, for latency at a given load)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _closed_loop(
    url: str, path: str, bodies: Sequence[Mapping[str, Any]], connections: int, seconds: float
) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        end = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < end:
                body = bodies[i % len(bodies)]
                i += connections
                start = time.perf_counter()
                response = await client.post(path, json=body)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(connections)))
        elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": (len(latencies) - errors) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def closed_loop(
    url: str,
    path: str,
    bodies: Sequence[Mapping[str, Any]],
    *,
    connections: int = 8,
    seconds: float = 10.0,
) -> dict[str, Any]:
    return asyncio.run(_closed_loop(url, path, bodies, connections, seconds))


def open_loop(
    url: str, path: str, bodies: Sequence[Mapping[str, Any]], *, rate: float, seconds: float
) -> dict[str, Any]:
    from keel.serving.loadgen import make_client, run_open_loop, summarize

    async def run() -> Any:
        async with make_client(url, connections=64) as client:
            return await run_open_loop(client, path, bodies, rate=rate, duration=seconds)

    summary = summarize(asyncio.run(run()))
    return {
        "rps": summary.achieved_rps,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "errors": sum(summary.errors.values()),
        "late_starts": summary.late_starts,
    }
