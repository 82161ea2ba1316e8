"""`keel loadtest`: open-loop load against a running model server, and its capacity.

The command is the load generator's own process, apart from the server's, so the two do not
share an event loop. With --slo-p99 a plain run exits 1 when p99 exceeds the SLO (a gate a
release script can use); with --find-capacity it searches for the highest rate that meets it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from keel.cli.context import JSON_OPTION

if TYPE_CHECKING:
    from keel.serving.loadgen import Summary
    from keel.serving.loadtest import Capacity, Probe


def register(app: typer.Typer) -> None:
    """Add the top-level `loadtest` command to the root app."""
    app.command("loadtest")(loadtest)


def loadtest(
    endpoint: str = typer.Argument(..., help="The endpoint to load, e.g. fraud."),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="The model server."),
    rps: float = typer.Option(
        ..., "--rps", help="Requests per second (the starting rate with --find-capacity)."
    ),
    duration: float = typer.Option(
        ..., "--duration", help="Seconds of load (per probe with --find-capacity)."
    ),
    body: Path | None = typer.Option(
        None, "--body", help="JSON lines, one row per line; default: rows from V2 metadata."
    ),
    rows: int = typer.Option(1, "--rows", help="Rows per request."),
    slo_p99: float | None = typer.Option(None, "--slo-p99", help="The p99 latency SLO in ms."),
    find: bool = typer.Option(
        False, "--find-capacity", help="Search the highest rate whose p99 meets --slo-p99."
    ),
    max_rps: float = typer.Option(100_000.0, "--max-rps", help="Ceiling of the search."),
    max_errors: float = typer.Option(
        0.01, "--max-error-share", help="Error share a passing rate may have."
    ),
    connections: int = typer.Option(
        64, "--connections", help="Most requests in flight (and connections open)."
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds before a request fails."),
    api_key: str | None = typer.Option(None, "--api-key", help="Sent as a Bearer token."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Send open-loop load to ENDPOINT and report rate, latency percentiles and errors."""
    from keel.errors import InvalidInputError
    from keel.serving.loadtest import Target, find_capacity, run_loadtest

    target = Target(
        url=url.rstrip("/"),
        endpoint=endpoint,
        body=body,
        rows_per_request=rows,
        api_key=api_key,
        connections=connections,
        timeout_s=timeout,
    )
    if find:
        if slo_p99 is None:
            raise InvalidInputError("--find-capacity needs --slo-p99 MS, the p99 latency to keep")
        capacity = find_capacity(
            target,
            start_rps=rps,
            duration=duration,
            slo_p99_ms=slo_p99,
            max_error_share=max_errors,
            max_rps=max_rps,
            on_probe=None if as_json else _progress,
        )
        _print_capacity(capacity, as_json)
        return
    summary = run_loadtest(target, rps=rps, duration=duration)
    meets = None if slo_p99 is None else summary.p99_ms <= slo_p99
    _print_summary(endpoint, summary, slo_p99, meets, as_json)
    if meets is False:
        raise typer.Exit(1)


def _figures(summary: Summary) -> dict[str, Any]:
    return {
        "requested_rps": summary.requested_rps,
        "achieved_rps": round(summary.achieved_rps, 2),
        "sent": summary.sent,
        "ok": summary.ok,
        "p50_ms": round(summary.p50_ms, 3),
        "p90_ms": round(summary.p90_ms, 3),
        "p99_ms": round(summary.p99_ms, 3),
        "max_ms": round(summary.max_ms, 3),
        "late_starts": summary.late_starts,
        "max_lag_ms": round(summary.max_lag_ms, 3),
        "errors": summary.errors,
    }


def _print_summary(
    endpoint: str, summary: Summary, slo: float | None, meets: bool | None, as_json: bool
) -> None:
    from keel.cli.output import print_fields, print_json

    figures = {"endpoint": endpoint, "duration_s": summary.duration_s, **_figures(summary)}
    if slo is not None:
        figures |= {"slo_p99_ms": slo, "meets_slo": meets}
    if as_json:
        print_json(figures)
        return
    shown = {k: v for k, v in figures.items() if k != "errors"}
    shown["errors"] = ", ".join(f"{k}: {v}" for k, v in summary.errors.items()) or "none"
    print_fields(f"load test of {endpoint}", shown.items())
    if summary.late_starts:
        from keel.cli.output import err_console

        err_console.print(
            f"{summary.late_starts} requests left more than 5 ms late (the load generator was "
            "short of CPU, or every connection was busy); their latency counts from when they "
            "were due",
            highlight=False,
        )


def _progress(probe: Probe) -> None:
    from keel.cli.output import err_console

    verdict = "pass" if probe.passed else "fail"
    err_console.print(
        f"probe {probe.rate:g} req/s: p99 {probe.summary.p99_ms:.2f} ms, "
        f"errors {probe.summary.error_share:.1%} -> {verdict}",
        highlight=False,
    )


def _print_capacity(capacity: Capacity, as_json: bool) -> None:
    from keel.cli.output import console, print_json, print_table

    probes = [{"rate": p.rate, "passed": p.passed, **_figures(p.summary)} for p in capacity.probes]
    if as_json:
        print_json(
            {
                "capacity_rps": capacity.rate,
                "slo_p99_ms": capacity.slo_p99_ms,
                "stopped": capacity.stopped,
                "probes": probes,
            }
        )
        return
    columns = ["rate", "achieved", "p50 ms", "p99 ms", "max ms", "errors", "late", "SLO"]
    rows = [
        [
            f"{p['rate']:g}",
            p["achieved_rps"],
            p["p50_ms"],
            p["p99_ms"],
            p["max_ms"],
            sum(p["errors"].values()),
            p["late_starts"],
            "pass" if p["passed"] else "fail",
        ]
        for p in probes
    ]
    print_table(f"capacity search (p99 <= {capacity.slo_p99_ms:g} ms)", columns, rows)
    note = {"max_rps": " (the ceiling --max-rps passed)", "max_probes": " (probe limit reached)"}
    console.print(
        f"capacity: {capacity.rate:g} requests/s{note.get(capacity.stopped, '')}",
        highlight=False,
    )
