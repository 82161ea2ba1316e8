"""Load tests of a running model server: a fixed-rate run and a search for its capacity.

Requests use the native protocol (``POST /v1/endpoints/{name}/predict``) with rows read from
a JSON-lines file or synthesized from the endpoint's Open Inference metadata
(``GET /v2/models/{name}`` lists its inputs and their types). The capacity search doubles the
rate while the p99 latency stays within the SLO (and errors within their allowance), then
bisects between the last rate that passed and the first that failed.

    summary = run_loadtest("http://127.0.0.1:8000", "fraud", rps=200, duration=10)
    capacity = find_capacity("http://127.0.0.1:8000", "fraud", start_rps=100, duration=5,
                             slo_p99_ms=10)
    capacity.rate        # the highest rate that kept p99 <= 10 ms
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from keel.errors import InvalidInputError, NotFoundError
from keel.serving.loadgen import Summary, make_client, run_open_loop, summarize

if TYPE_CHECKING:
    import httpx

SYNTHETIC_ROWS = 100


@dataclass(frozen=True)
class Target:
    """Where and what to send: the server, the endpoint, and how each request is made."""

    url: str
    endpoint: str
    body: Path | None = None  # JSON lines, one row object per line; None: synthesize rows
    rows_per_request: int = 1
    api_key: str | None = None
    connections: int = 64
    timeout_s: float = 10.0

    @property
    def path(self) -> str:
        return f"/v1/endpoints/{quote(self.endpoint, safe='')}/predict"


@dataclass(frozen=True)
class Probe:
    """One rate tried by the capacity search and whether it met the SLO."""

    rate: float
    summary: Summary
    passed: bool


@dataclass
class Capacity:
    """The result of a capacity search: the highest passing rate (0.0 when none passed), every
    probe in the order run, and why the search stopped (``"converged"``, ``"max_rps"`` when
    even the ceiling passed, ``"max_probes"``)."""

    rate: float
    slo_p99_ms: float
    probes: list[Probe] = field(default_factory=list)
    stopped: str = "converged"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file: one JSON object per line, blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(
            f"body file {str(path)!r} does not exist; give a JSON-lines file"
        ) from None
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}:{number} is not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise InvalidInputError(
                f"{path}:{number} is not a JSON object; write one row per line such as "
                '{"user_id": 7, "amount": 12.5}'
            )
        rows.append(row)
    if not rows:
        raise InvalidInputError(f"body file {str(path)!r} has no rows; write one object per line")
    return rows


def synthesize_rows(
    inputs: Sequence[Mapping[str, Any]], count: int = SYNTHETIC_ROWS, *, seed: int = 0
) -> list[dict[str, Any]]:
    """``count`` rows of made-up values for V2 input descriptions (``name``, ``datatype``).

    Integers fall in 1..100 so entity keys have a chance to exist; for realistic keys give a
    body file instead.

    >>> synthesize_rows([{"name": "n", "datatype": "INT64"}], 2, seed=1)
    [{'n': 18}, {'n': 73}]
    """
    rng = random.Random(seed)
    return [
        {i["name"]: _value(str(i.get("datatype", "")), rng) for i in inputs} for _ in range(count)
    ]


def _value(datatype: str, rng: random.Random) -> Any:
    if datatype.startswith(("INT", "UINT")):
        return rng.randint(1, 100)
    if datatype.startswith("FP"):
        return round(rng.random(), 4)
    if datatype == "BOOL":
        return rng.random() < 0.5
    return f"v{rng.randint(1, 100)}"


def request_bodies(rows: Sequence[dict[str, Any]], per_request: int) -> list[dict[str, Any]]:
    """Native request bodies of ``per_request`` rows each, taking the rows in turn (wrapping
    around), so every row is used before any repeats.

    >>> request_bodies([{"a": 1}, {"a": 2}, {"a": 3}], 2)
    [{'rows': [{'a': 1}, {'a': 2}]}, {'rows': [{'a': 3}, {'a': 1}]}, {'rows': [{'a': 2}, {'a': 3}]}]
    """
    if per_request < 1:
        raise InvalidInputError(f"--rows {per_request} must be at least 1 row per request")
    if not rows:
        raise InvalidInputError("there are no rows to send")
    bodies = []
    step = 0
    while True:
        batch = [rows[(step + k) % len(rows)] for k in range(per_request)]
        bodies.append({"rows": batch})
        step += per_request
        if step % len(rows) == 0:
            return bodies


async def prepare(client: httpx.AsyncClient, target: Target) -> list[dict[str, Any]]:
    """Check the server answers and build the request bodies for ``target``."""
    import httpx

    try:
        live = await client.get("/v2/health/live")
    except httpx.HTTPError as exc:
        raise InvalidInputError(
            f"no model server answers at {target.url} ({type(exc).__name__}); start one with "
            "'keel serve' or pass --url"
        ) from exc
    if live.status_code != 200:
        raise InvalidInputError(
            f"{target.url} is not a Keel model server (GET /v2/health/live gave "
            f"{live.status_code}); pass the server's address with --url"
        )
    if target.body is not None:
        return request_bodies(read_rows(target.body), target.rows_per_request)
    meta = await client.get(f"/v2/models/{quote(target.endpoint, safe='')}")
    if meta.status_code != 200:
        raise NotFoundError(
            f"endpoint {target.endpoint!r} is not served at {target.url} (GET /v2/models "
            f"gave {meta.status_code}); check the name, or give rows with --body"
        )
    inputs = meta.json().get("inputs") or []
    return request_bodies(synthesize_rows(inputs), target.rows_per_request)


def run_loadtest(target: Target, *, rps: float, duration: float) -> Summary:
    """Send open-loop load at ``rps`` for ``duration`` seconds and summarize what happened."""

    async def main() -> Summary:
        async with _client(target) as client:
            bodies = await prepare(client, target)
            result = await run_open_loop(client, target.path, bodies, rate=rps, duration=duration)
        return summarize(result)

    return asyncio.run(main())


def find_capacity(
    target: Target,
    *,
    start_rps: float,
    duration: float,
    slo_p99_ms: float,
    max_error_share: float = 0.01,
    max_rps: float = 100_000.0,
    precision: float = 0.05,
    max_probes: int = 16,
    on_probe: Callable[[Probe], None] | None = None,
) -> Capacity:
    """The highest rate (requests/s) whose p99 latency stays within ``slo_p99_ms`` and whose
    error share within ``max_error_share``; each probe runs ``duration`` seconds."""

    async def main() -> Capacity:
        async with _client(target) as client:
            bodies = await prepare(client, target)

            async def probe(rate: float) -> Summary:
                run = await run_open_loop(
                    client,
                    target.path,
                    bodies,
                    rate=rate,
                    duration=duration,
                    connections=target.connections,
                )
                return summarize(run)

            return await search_capacity(
                probe,
                start_rps=start_rps,
                slo_p99_ms=slo_p99_ms,
                max_error_share=max_error_share,
                max_rps=max_rps,
                precision=precision,
                max_probes=max_probes,
                on_probe=on_probe,
            )

    return asyncio.run(main())


async def search_capacity(
    probe: Callable[[float], Awaitable[Summary]],
    *,
    start_rps: float,
    slo_p99_ms: float,
    max_error_share: float = 0.01,
    max_rps: float = 100_000.0,
    precision: float = 0.05,
    max_probes: int = 16,
    on_probe: Callable[[Probe], None] | None = None,
) -> Capacity:
    """Doubling from ``start_rps`` then bisection, over any ``probe`` (rate -> Summary).

    Stops when the bracket between the best passing and the worst failing rate is within
    ``precision`` of the failing rate (or 1 request/s), when ``max_rps`` passes, or after
    ``max_probes`` probes; ``Capacity.rate`` is the best passing rate seen.
    """
    if not slo_p99_ms > 0:
        raise InvalidInputError(f"--slo-p99 {slo_p99_ms} must be a positive number of ms")
    if not 0 < start_rps <= max_rps:
        raise InvalidInputError(
            f"--rps {start_rps} must be positive and at most --max-rps {max_rps}"
        )
    if max_probes < 1:
        raise InvalidInputError(f"max_probes {max_probes} must be at least 1")
    capacity = Capacity(rate=0.0, slo_p99_ms=slo_p99_ms)
    low, high = 0.0, None  # best passing rate, worst failing rate
    rate = start_rps
    while True:
        summary = await probe(rate)
        passed = summary.sent > 0 and (
            summary.p99_ms <= slo_p99_ms and summary.error_share <= max_error_share
        )
        result = Probe(rate=rate, summary=summary, passed=passed)
        capacity.probes.append(result)
        if on_probe is not None:
            on_probe(result)
        if passed:
            low = capacity.rate = rate
        else:
            high = rate
        if passed and high is None and rate >= max_rps:
            capacity.stopped = "max_rps"
            return capacity
        if high is not None and high - low <= max(precision * high, 1.0):
            return capacity
        if len(capacity.probes) >= max_probes:
            capacity.stopped = "max_probes"
            return capacity
        rate = min(rate * 2, max_rps) if high is None else _middle(low, high)


def _middle(low: float, high: float) -> float:
    middle = (low + high) / 2
    # Whole numbers read better in the probe table; the bracket is wider than 1 here, so the
    # rounded middle still lies strictly inside it.
    return float(round(middle)) if middle >= 10 else middle


def _client(target: Target) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    return make_client(
        target.url, connections=target.connections, timeout=target.timeout_s, headers=headers
    )
