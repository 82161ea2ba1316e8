"""`keel deploy tick | watch | report`: drive canaries from the gates and read how variants do.

The controller commands are thin wrappers over ``keel.deploy.controller``; ``report`` renders
``keel.deploy.report``. ``register(app)`` adds them to the `deploy` command group.
"""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import typer

from keel.cli.context import JSON_OPTION, project_session
from keel.errors import InvalidInputError

if TYPE_CHECKING:
    from keel.deploy.controller import TickResult
    from keel.deploy.gates import GateConfig
    from keel.deploy.report import DeployReport

ENDPOINT = typer.Argument(..., help="Endpoint name.")
PERFORMANCE = typer.Option(
    True,
    "--performance/--no-performance",
    help="Gate on model performance once labels arrive (off: never wait for labels).",
)


def register(app: typer.Typer) -> None:
    """Add `tick`, `watch` and `report` to the `deploy` group ``app``."""
    app.command("tick")(tick_cmd)
    app.command("watch")(watch_cmd)
    app.command("report")(report_cmd)


def tick_cmd(
    endpoint: str = ENDPOINT, performance: bool = PERFORMANCE, as_json: bool = JSON_OPTION
) -> None:
    """Analyse ENDPOINT's running canary once: advance, roll back, or say what it waits for."""
    from keel.deploy.controller import tick

    with project_session() as project:
        result = tick(project, endpoint, config=_gates(performance))
    _print_tick(result, as_json)


def watch_cmd(
    endpoints: list[str] = typer.Argument(None, help="Endpoints (default: every running canary)."),
    interval: str = typer.Option("30s", "--interval", help="Time between analyses: 30s, 5m."),
    rounds: int | None = typer.Option(None, "--rounds", help="Stop after this many rounds."),
    performance: bool = PERFORMANCE,
    as_json: bool = JSON_OPTION,
) -> None:
    """Tick canaries every --interval until stopped (Ctrl-C or SIGTERM)."""
    from keel.cli.deploy import parse_duration
    from keel.deploy.controller import watch

    seconds = parse_duration(interval)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with project_session() as project:
            watch(
                project,
                endpoints or [],
                seconds,
                stop,
                config=_gates(performance),
                on_result=lambda result: _print_tick(result, as_json),
                max_rounds=rounds,
            )
    except KeyboardInterrupt:
        pass  # Ctrl-C is the ordinary way to stop watching
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_cmd(
    endpoint: str = ENDPOINT,
    since: str | None = typer.Option(
        None, "--since", help="From this ISO time (with zone) or this long ago (1h, 2d)."
    ),
    strategy: str | None = typer.Option(
        None, "--strategy", help="shadow, canary or ab (default: the endpoint's)."
    ),
    metric: str = typer.Option("label", "--metric", help="A/B metric: label or outcome."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Report how ENDPOINT's variants compare: shadow agreement, canary gates or A/B effects."""
    from keel.cli.output import print_json
    from keel.deploy.report import report

    start = None if since is None else parse_since(since)
    with project_session() as project:
        result = report(project, endpoint, since=start, strategy=strategy, metric=metric)
    if as_json:
        print_json(result.to_dict())
    else:
        print_report(result)


def parse_since(text: str) -> datetime:
    """An aware datetime from ISO 8601 with a zone, or from a duration meaning "that long ago"."""
    from keel.cli.deploy import parse_duration

    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except InvalidInputError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InvalidInputError(
            f"--since {text!r} is neither an ISO time with a zone nor a duration; "
            "use e.g. 2026-11-26T06:00:00Z or 24h"
        )
    return when


def _gates(performance: bool) -> GateConfig | None:
    from keel.deploy.gates import GateConfig

    # None lets the controller size the label requirement from the canary's min_sample.
    return None if performance else GateConfig(performance_metric="off")


def _print_tick(result: TickResult, as_json: bool) -> None:
    from keel.cli.output import print_json

    if as_json:
        print_json(result.to_dict())
        return
    where = "" if result.percent is None else f" at {result.percent:g} %"
    print(f"{result.endpoint}: {result.action}{where}: {result.message}", flush=True)


def print_report(result: DeployReport) -> None:
    """The tables `keel deploy report ENDPOINT` prints."""
    from keel.cli.output import print_fields, print_table

    since = (
        "all logged traffic" if result.since is None else f"since {result.since:%Y-%m-%d %H:%M:%S}"
    )
    title = f"{result.strategy} report of {result.endpoint} ({result.rows} rows, {since})"
    columns = ["variant", "rows", "errors", "error rate", "p50 ms", "p99 ms"]
    rows = [
        (v.variant, v.rows, v.errors, _pct(v.error_rate), v.latency_p50_ms, v.latency_p99_ms)
        for v in result.variants
    ]
    print_table(title, columns, rows)
    if result.shadow is not None:
        s = result.shadow
        print_fields(
            "Shadow vs primary",
            [
                ("requests compared", s.pairs),
                ("without shadow answer", s.unmatched),
                ("identical outputs", _pct(s.agreement)),
                (f"within {s.tolerance:g}", _pct(s.within_tolerance)),
                ("mean |difference|", s.mean_abs_diff),
                ("prediction PSI", s.psi),
            ],
        )
    if result.canary is not None:
        gates = [(g.name, g.status, g.value, g.threshold, g.detail) for g in result.canary.gates]
        print_table(
            f"Canary gates: {result.canary.decision}",
            ["gate", "status", "value", "limit", "detail"],
            gates,
        )
    if result.ab is not None:
        _print_ab(result)
    if result.note is not None:
        print(result.note)


def _print_ab(result: DeployReport) -> None:
    from keel.cli.output import print_table

    ab = result.ab
    if ab is None:
        return
    arms = [(a.variant, a.assigned, a.n, a.mean, a.std) for a in ab.arms]
    by = "by unit" if ab.unit else "by request"
    headers = ["arm", "assigned", "with metric", "mean", "std"]
    print_table(f"A/B arms on {ab.metric} ({by})", headers, arms)
    if ab.mixed_units:
        print(f"{ab.mixed_units} unit(s) seen in several arms (a changed split) are left out")
    effects: list[tuple[Any, ...]] = [
        (
            arm,
            e.control_mean,
            e.treatment_mean,
            e.difference,
            f"[{e.ci_low:.4g}, {e.ci_high:.4g}]",
            e.p_value,
            "yes" if e.significant else "no",
        )
        for arm, e in ab.effects.items()
    ]
    columns = [
        "arm",
        f"{ab.control} mean",
        "arm mean",
        "difference",
        "CI",
        "p-value",
        "significant",
    ]
    print_table(f"Effects vs {ab.control} ({ab.kind}, alpha {ab.alpha:g})", columns, effects)
    flag = "MISMATCH: assignment or logging is broken" if ab.srm.mismatch else "ok"
    print(f"sample ratio: chi2 {ab.srm.chi2:.3g}, p-value {ab.srm.p_value:.3g} ({flag})")


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"
