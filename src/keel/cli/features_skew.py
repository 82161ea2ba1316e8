"""`keel features skew-check | check-model`: is serving computing features the way training
did? (registered on the `keel features` group)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from keel.cli.context import JSON_OPTION, project_session
from keel.errors import InvalidInputError

if TYPE_CHECKING:
    from keel.features.compat import FeatureCheck
    from keel.features.skew import SkewReport


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"{option} {value!r} is not an ISO 8601 time; use e.g. 2026-03-01T00:00:00+00:00"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def skew_check(
    since: str | None = typer.Option(None, "--since", help="Requests from (ISO 8601, UTC)."),
    until: str | None = typer.Option(None, "--until", help="Requests before (ISO 8601, UTC)."),
    features: list[str] | None = typer.Option(
        None, "--feature", "-f", help="Only this feature, as name or view:feature (repeatable)."
    ),
    max_rate: float = typer.Option(
        0.0, "--max-rate", help="Exit 1 when a feature's mismatch rate exceeds this (0 to 1)."
    ),
    examples: int = typer.Option(5, "--examples", help="Example rows kept per feature."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Recompute logged served feature vectors offline and report per-feature mismatches."""
    from keel.cli.output import err_console
    from keel.features.skew import check_skew
    from keel.features.store import FeatureStore

    if not 0.0 <= max_rate <= 1.0:
        raise InvalidInputError(f"--max-rate {max_rate} is not a rate; pass a number in [0, 1]")
    with project_session() as project, FeatureStore(project) as store:
        report = check_skew(
            store,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            features=features or None,
            examples=examples,
        )
    _print_skew(report, as_json)
    if report.rows == 0:
        err_console.print(
            "no served feature vectors are logged in this range; turn on features.log_served "
            "(keel.yaml) or FeatureStore(log_served=True) and serve some requests first"
        )
    over = [f for f in report.features if f.rate > max_rate]
    if over:
        listed = ", ".join(f"{f.feature} {f.rate:.2%}" for f in over)
        err_console.print(f"skew: mismatch rate above {max_rate:.2%} for {listed}")
        raise typer.Exit(1)


def _print_skew(report: SkewReport, as_json: bool) -> None:
    from keel.cli.output import print_json, print_table

    if as_json:
        print_json(
            {
                "rows": report.rows,
                "ok": report.ok,
                "features": [{**asdict(f), "rate": f.rate} for f in report.features],
            }
        )
        return
    print_table(
        f"Skew over {report.rows} served rows",
        ["feature", "view", "rows", "mismatches", "rate"],
        [(f.feature, f.view, f.rows, f.mismatches, f"{f.rate:.2%}") for f in report.features],
    )
    rows = [
        (
            f.feature,
            e.request_time.isoformat(),
            e.entity,
            repr(e.served),
            repr(e.offline),
            (e.version or "default")[:12],
        )
        for f in report.features
        for e in f.examples
    ]
    if rows:
        headers = ["feature", "request time", "entity", "served", "offline", "served version"]
        print_table("Mismatching rows (examples)", headers, rows)


def check_model(
    ref: str = typer.Argument(..., help="The model version, as MODEL@VERSION or MODEL@ALIAS."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Compare a model's trained feature versions with what the online store serves."""
    from keel.cli.output import err_console
    from keel.features.compat import check_model_features
    from keel.features.store import FeatureStore

    with project_session() as project, FeatureStore(project) as store:
        check = check_model_features(store, ref)
    _print_check(check, as_json)
    if not check.ok:
        err_console.print(check.describe())
        raise typer.Exit(1)


def _print_check(check: FeatureCheck, as_json: bool) -> None:
    from keel.cli.output import print_json, print_table

    if as_json:
        out: dict[str, Any] = {"model": check.model, "ok": check.ok}
        out["views"] = [asdict(v) for v in check.views]
        print_json(out)
        return
    print_table(
        f"Feature versions of {check.model}",
        ["view", "kind", "trained", "online", "registered", "status"],
        [
            (
                v.view,
                v.kind,
                v.trained[:12],
                (v.online or "")[:12],
                (v.current or "")[:12],
                v.status,
            )
            for v in check.views
        ],
    )


def _short(version: str | None) -> str:
    return (version or "")[:12]


def register(app: typer.Typer) -> None:
    app.command("skew-check")(skew_check)
    app.command("check-model")(check_model)
