"""The open-loop load generator behind `keel loadtest`.

Open loop means request ``i`` is due at ``start + i / rate`` whether or not earlier requests
have answered, the way independent clients arrive at a real server. A closed loop (send, wait,
send again) slows down with the server and so hides exactly the queueing a capacity test looks
for. Each request's latency is measured from the moment it was *due*, not from the moment it
left, so a generator that falls behind cannot make the server look faster than it is; requests
that left more than ``LATE_AFTER_S`` after they were due are counted as late starts, a sign the
load generator was short of CPU or every connection was busy.

    async with make_client("http://127.0.0.1:8000") as client:
        result = await run_open_loop(client, "/v1/endpoints/fraud/predict",
                                     [{"rows": [{"user_id": 7}]}], rate=50, duration=2)
    summary = summarize(result)
    summary.achieved_rps, summary.p99_ms, summary.errors     # (50.0, 4.2, {})
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    import httpx

LATE_AFTER_S = 0.005
DEFAULT_CONNECTIONS = 64
DEFAULT_TIMEOUT_S = 10.0


@dataclass
class LoadResult:
    """What happened to every request of one run, in schedule order.

    ``latency_s[i]`` runs from when request ``i`` was due to when its answer (or failure)
    arrived; ``lag_s[i]`` from when it was due to when it actually left; ``outcome[i]`` is the
    HTTP status as text (``"200"``) or the kind of transport failure (``"timeout"``,
    ``"connect"``, ...).
    """

    rate: float
    duration: float
    latency_s: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Summary:
    """One run in figures: rates in requests/s, latencies in milliseconds."""

    requested_rps: float
    duration_s: float
    sent: int
    completed: int
    ok: int
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    late_starts: int
    max_lag_ms: float
    errors: dict[str, int]

    @property
    def error_share(self) -> float:
        """Errors as a share of the requests sent (0 when nothing was sent)."""
        return (self.sent - self.ok) / self.sent if self.sent else 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in [0, 1]) of values sorted ascending: the smallest
    value with at least a share ``q`` of all values at or below it; 0.0 for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
    """
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(result: LoadResult) -> Summary:
    """Achieved rate, latency percentiles, late starts and errors of one run.

    The achieved rate counts successful (2xx) answers over the longer of the schedule's span
    (requests sent / rate) and the time the last answer took to arrive, so a server that
    answers late, or not at all, shows a lower rate than was asked for.
    """
    latencies = sorted(result.latency_s)
    ok = sum(1 for o in result.outcome if o.startswith("2"))
    errors = Counter(o for o in result.outcome if not o.startswith("2"))
    window = max(len(result.outcome) / result.rate, result.elapsed_s)
    return Summary(
        requested_rps=result.rate,
        duration_s=result.duration,
        sent=len(result.outcome),
        completed=sum(1 for o in result.outcome if o.isdigit()),
        ok=ok,
        achieved_rps=ok / window if window > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p90_ms=percentile(latencies, 0.90) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] if latencies else 0.0) * 1000,
        late_starts=sum(1 for lag in result.lag_s if lag > LATE_AFTER_S),
        max_lag_ms=max(result.lag_s, default=0.0) * 1000,
        errors=dict(sorted(errors.items())),
    )


def check_plan(rate: float, duration: float) -> int:
    """The number of requests a run sends; refuses a rate or duration that is not positive."""
    if not (math.isfinite(rate) and rate > 0):
        raise InvalidInputError(f"--rps {rate} is not a positive number of requests per second")
    if not (math.isfinite(duration) and duration > 0):
        raise InvalidInputError(f"--duration {duration} is not a positive number of seconds")
    # At least one request, so a short probe at a low rate still measures something.
    return max(1, math.ceil(rate * duration - 1e-9))


def make_client(
    base_url: str,
    *,
    connections: int = DEFAULT_CONNECTIONS,
    timeout: float = DEFAULT_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """An HTTP client with a connection pool large enough for the in-flight requests."""
    try:
        import httpx
    except ImportError:
        raise ConfigError(
            "keel loadtest needs the httpx package; install it with 'pip install httpx'"
        ) from None
    if connections < 1:
        raise InvalidInputError(f"--connections {connections} must be at least 1")
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        base_url=base_url,
        limits=limits,
        timeout=httpx.Timeout(timeout),
        headers=dict(headers or {}),
    )


async def run_open_loop(
    client: httpx.AsyncClient,
    path: str,
    bodies: Sequence[Mapping[str, Any]],
    *,
    rate: float,
    duration: float,
    connections: int = DEFAULT_CONNECTIONS,
) -> LoadResult:
    """POST ``bodies`` (in turn) to ``path`` at ``rate`` requests/s for ``duration`` seconds,
    on a fixed schedule, with at most ``connections`` requests in flight, then wait for the
    requests still in flight (each bounded by the client's timeout)."""
    count = check_plan(rate, duration)
    if connections < 1:
        raise InvalidInputError(f"--connections {connections} must be at least 1")
    if not bodies:
        raise InvalidInputError("there is no request body to send; give at least one row")
    # Encoded once: JSON encoding per request would cost the generator CPU it needs for sending.
    payloads = [json.dumps(body).encode() for body in bodies]
    result = LoadResult(rate=rate, duration=duration)
    result.latency_s = [0.0] * count
    result.lag_s = [0.0] * count
    result.outcome = [""] * count
    headers = {"content-type": "application/json"}

    # Requests past the connection count wait here, not in httpx's pool: its queue gets slower
    # the longer it is, which would turn a slow server into a slow load generator as well.
    slots = asyncio.Semaphore(connections)

    async def one(i: int, due: float) -> None:
        async with slots:
            result.lag_s[i] = time.perf_counter() - due
            try:
                payload = payloads[i % len(payloads)]
                response = await client.post(path, content=payload, headers=headers)
                result.outcome[i] = str(response.status_code)
            except Exception as exc:  # any transport failure is a counted error, never a crash
                result.outcome[i] = failure_kind(exc)
        result.latency_s[i] = time.perf_counter() - due

    tasks: list[asyncio.Task[None]] = []
    begin = time.perf_counter()
    sent = 0
    while sent < count:
        now = time.perf_counter()
        # Launch everything that is due; after a stall several go at once, each on its time.
        while sent < count and begin + sent / rate <= now:
            tasks.append(asyncio.create_task(one(sent, begin + sent / rate)))
            sent += 1
        if sent < count:
            await asyncio.sleep(max(0.0, begin + sent / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - begin
    return result


def failure_kind(exc: BaseException) -> str:
    """A short name for a request that got no HTTP answer."""
    import httpx

    kinds: list[tuple[type[BaseException], str]] = [
        (httpx.PoolTimeout, "pool_timeout"),
        (httpx.TimeoutException, "timeout"),
        (httpx.ConnectError, "connect"),
        (httpx.RemoteProtocolError, "protocol"),
        (httpx.ReadError, "read"),
        (httpx.WriteError, "write"),
    ]
    for kind, name in kinds:
        if isinstance(exc, kind):
            return name
    return type(exc).__name__
