"""`keel deploy ...`: change what serves an endpoint (single, shadow, canary, A/B) and read the
history of those changes. Every change is recorded with the project user as author.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from keel.cli.context import JSON_OPTION, project_session
from keel.errors import InvalidInputError

if TYPE_CHECKING:
    from keel.deploy.history import DeploymentEvent
    from keel.deploy.spec import DeploymentSpec
    from keel.deploy.state import Deployment

app = typer.Typer(no_args_is_help=True)

ENDPOINT = typer.Argument(..., help="Endpoint name.")
MODEL = typer.Argument(..., help="MODEL@VERSION or MODEL@ALIAS (resolved to a version now).")
REASON = typer.Option(None, "--reason", help="Why: kept in the deployment history.")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def register(root: typer.Typer) -> None:
    """Add the `deploy` command group to the root app."""
    root.add_typer(
        app,
        name="deploy",
        help="Deployments: set, shadow, canary, A/B, advance, promote, rollback, history.",
    )


@app.command("set")
def set_cmd(
    endpoint: str = ENDPOINT,
    model: str = MODEL,
    reason: str | None = REASON,
    as_json: bool = JSON_OPTION,
) -> None:
    """Serve ENDPOINT with one model version only."""
    from keel.deploy.state import deploy

    _change(lambda p: deploy(p, endpoint, model, reason=reason), as_json)


@app.command("shadow")
def shadow_cmd(
    endpoint: str = ENDPOINT,
    model: str = MODEL,
    reason: str | None = REASON,
    as_json: bool = JSON_OPTION,
) -> None:
    """Send a copy of ENDPOINT's traffic to MODEL; its answers are logged, never returned."""
    from keel.deploy.state import start_shadow

    _change(lambda p: start_shadow(p, endpoint, model, reason=reason), as_json)


@app.command("canary")
def canary_cmd(
    endpoint: str = ENDPOINT,
    model: str = MODEL,
    plan: str = typer.Option("1,5,10,25,50,100", "--plan", help="Percent of units per step."),
    hold: str = typer.Option("24h", "--hold", help="Hold of each step: 30s, 10m, 24h, 2d."),
    min_sample: int = typer.Option(500, "--min-sample", help="Requests needed per step."),
    reason: str | None = REASON,
    as_json: bool = JSON_OPTION,
) -> None:
    """Ramp MODEL up on ENDPOINT through the plan, each step gated and held."""
    from keel.deploy.state import start_canary

    steps = [_number(part, "--plan") for part in plan.split(",")]
    seconds = parse_duration(hold)
    _change(
        lambda p: start_canary(
            p, endpoint, model, plan=steps, hold=seconds, min_sample=min_sample, reason=reason
        ),
        as_json,
    )


@app.command("ab")
def ab_cmd(
    endpoint: str = ENDPOINT,
    arms: list[str] = typer.Argument(..., help="ARM=MODEL@REF, e.g. control=fraud@3."),
    weights: str | None = typer.Option(None, "--weights", help="Percent per arm, e.g. 50,50."),
    salt: str | None = typer.Option(None, "--salt", help="Hashing salt (default: fresh)."),
    reason: str | None = REASON,
    as_json: bool = JSON_OPTION,
) -> None:
    """Split ENDPOINT's units between arms by weight (sticky per unit)."""
    from keel.deploy.state import start_ab

    parsed = parse_arms(arms)
    shares = None
    if weights is not None:
        values = [_number(part, "--weights") for part in weights.split(",")]
        if len(values) != len(parsed):
            raise InvalidInputError(
                f"--weights {weights!r} gives {len(values)} weights for {len(parsed)} arms; "
                "give one per arm, in the arms' order"
            )
        if abs(sum(values) - 100) > 1e-6:
            raise InvalidInputError(f"--weights {weights!r} must sum to 100 (percent)")
        shares = {arm: value / 100 for arm, value in zip(parsed, values, strict=True)}
    _change(
        lambda p: start_ab(p, endpoint, parsed, weights=shares, salt=salt, reason=reason),
        as_json,
    )


def _simple(name: str, summary: str) -> None:
    def command(
        endpoint: str = ENDPOINT, reason: str | None = REASON, as_json: bool = JSON_OPTION
    ) -> None:
        from keel.deploy import state

        action = getattr(state, name)
        _change(lambda p: action(p, endpoint, reason=reason), as_json)

    command.__doc__ = summary
    app.command(name)(command)


_simple("advance", "Move ENDPOINT's running canary to its next step (100 % promotes).")
_simple("promote", "Make the canary or shadow candidate ENDPOINT's primary.")
_simple("pause", "Hold ENDPOINT's canary at its current share.")
_simple("resume", "Resume ENDPOINT's paused canary.")
_simple("rollback", "Send all of ENDPOINT's traffic back to the primary.")
_simple("stop", "End ENDPOINT's shadow, canary or A/B test; the primary serves alone.")


@app.command("show")
def show_cmd(endpoint: str = ENDPOINT, as_json: bool = JSON_OPTION) -> None:
    """Show what serves ENDPOINT now."""
    from keel.deploy.state import get_deployment

    with project_session() as project:
        deployment = get_deployment(project, endpoint)
    _print_deployment(deployment, as_json)


@app.command("history")
def history_cmd(
    endpoint: str = ENDPOINT,
    at: str | None = typer.Option(
        None, "--at", help="Show what served ENDPOINT at this ISO time (with zone)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show every change of ENDPOINT's deployment, or (--at) what served it at a time."""
    from keel.cli.output import print_json
    from keel.deploy.history import history, served_at

    if at is not None:
        when = parse_time(at)
        with project_session() as project:
            spec = served_at(project, endpoint, when)
        if as_json:
            print_json({"endpoint": endpoint, "at": when, "spec": _spec_json(spec)})
        elif spec is None:
            print(f"nothing served endpoint {endpoint!r} at {when.isoformat()}")
        else:
            _print_spec(f"Endpoint {endpoint} at {when.isoformat()}", spec, [])
        return
    with project_session() as project:
        events = history(project, endpoint)
    if as_json:
        print_json([e.to_dict() for e in events])
        return
    print_history(endpoint, events)


def print_history(endpoint: str, events: list[DeploymentEvent]) -> None:
    """The table `keel deploy history ENDPOINT` prints."""
    from keel.cli.output import print_table

    rows = [(e.version, e.at, e.action, _summary(e.spec), e.author, e.reason) for e in events]
    columns = ["version", "at", "action", "serving", "author", "reason"]
    print_table(f"Deployment history of {endpoint}", columns, rows)


def parse_duration(text: str) -> float:
    """Seconds in '90', '30s', '10m', '24h', '2d' or '500ms'."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise InvalidInputError(f"duration {text!r} is invalid; use e.g. 30s, 10m, 24h or 2d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def parse_time(text: str) -> datetime:
    """An aware datetime from ISO 8601; a time without zone is refused (it is ambiguous)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InvalidInputError(
            f"--at {text!r} is not an ISO time with a zone; use e.g. 2026-11-26T06:00:00Z"
        )
    return when


def parse_arms(items: list[str]) -> dict[str, str]:
    arms: dict[str, str] = {}
    for item in items:
        arm, sep, ref = item.partition("=")
        if not sep or not arm or not ref:
            raise InvalidInputError(f"arm {item!r} is not ARM=MODEL@REF; e.g. control=fraud@3")
        if arm in arms:
            raise InvalidInputError(f"arm {arm!r} is given twice; name each arm once")
        arms[arm] = ref
    return arms


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(
            f"{option} value {text!r} is not a number; use comma-separated numbers"
        ) from None


def _change(action: Any, as_json: bool) -> None:
    with project_session() as project:
        deployment = action(project)
    _print_deployment(deployment, as_json)


def _print_deployment(deployment: Deployment, as_json: bool) -> None:
    from keel.cli.output import print_json

    if as_json:
        print_json(deployment.to_dict())
        return
    extra = [("version", deployment.version), ("updated", deployment.updated_at)]
    _print_spec(f"Endpoint {deployment.endpoint}", deployment.spec, extra)


def _print_spec(title: str, spec: DeploymentSpec, extra: list[tuple[str, Any]]) -> None:
    from keel.cli.output import print_fields

    fields: list[tuple[str, Any]] = [("strategy", spec.strategy), ("primary", spec.primary)]
    if spec.candidate is not None:
        fields.append(("candidate", spec.candidate))
    if spec.canary is not None:
        c = spec.canary
        fields += [
            ("canary share", f"{c.percent:g} % (step {c.step + 1} of {len(c.plan)})"),
            ("canary status", c.status),
            ("plan", ",".join(f"{p:g}" for p in c.plan)),
            ("hold", f"{c.hold_s:g} s"),
            ("min sample", c.min_sample),
        ]
    if spec.ab is not None:
        arms = [f"{a}={ref} ({spec.ab.weights[a] * 100:g} %)" for a, ref in spec.ab.arms.items()]
        fields += [("arms", ", ".join(arms)), ("salt", spec.ab.salt)]
    print_fields(title, [*fields, *extra])


def _summary(spec: DeploymentSpec) -> str:
    if spec.canary is not None:
        share = f"{spec.canary.percent:g} % ({spec.canary.status})"
        return f"{spec.primary} + canary {spec.candidate} at {share}"
    if spec.strategy == "shadow":
        return f"{spec.primary} + shadow {spec.candidate}"
    if spec.ab is not None:
        return ", ".join(
            f"{a}={ref} {spec.ab.weights[a] * 100:g} %" for a, ref in spec.ab.arms.items()
        )
    return spec.primary


def _spec_json(spec: DeploymentSpec | None) -> dict[str, Any] | None:
    return None if spec is None else spec.to_dict()
