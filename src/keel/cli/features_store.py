"""`keel features materialize | materialize-incremental | get-online`: the feature store's
online side from the command line (registered on the `keel features` group)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from keel.cli.context import JSON_OPTION, project_session
from keel.errors import InvalidInputError

if TYPE_CHECKING:
    from keel.features.materialize import MaterializeResult, ProgressHook

VIEWS = typer.Option(None, "--view", "-v", help="Only this view (repeatable).")
END = typer.Option(None, "--end", help="Event-time end, ISO 8601 (default: now, UTC).")


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"{option} {value!r} is not an ISO 8601 time; use e.g. 2026-03-01T00:00:00+00:00"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@contextmanager
def _progress() -> Iterator[ProgressHook]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn

    from keel.cli.output import err_console

    tasks: dict[str, TaskID] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:

        def hook(view: str, done: int, total: int) -> None:
            if view not in tasks:
                tasks[view] = bar.add_task(f"materialize {view}", total=total)
            bar.update(tasks[view], completed=done, total=total)

        yield hook


def _report(results: list[MaterializeResult], as_json: bool) -> None:
    from keel.cli.output import print_json, print_table

    if as_json:
        print_json(results)
        return
    rows = [
        (
            r.view,
            r.version[:12],
            r.mode,
            "" if r.start is None else r.start.isoformat(),
            r.end.isoformat(),
            r.rows_read,
            r.rows_written,
            f"{r.seconds:.2f}",
        )
        for r in results
    ]
    headers = ["view", "version", "mode", "start", "end", "rows read", "rows written", "s"]
    print_table("Materialized", headers, rows)


def materialize(
    start: str | None = typer.Option(
        None, "--start", help="Event-time start (default: end - ttl)."
    ),
    end: str | None = END,
    views: list[str] | None = VIEWS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Load the newest feature values in [START, END] into the online store."""
    from keel.features.store import FeatureStore

    with project_session() as project, FeatureStore(project) as store, _progress() as hook:
        results = store.materialize(
            _time(start, "--start"), _time(end, "--end"), views=views, progress=hook
        )
    _report(results, as_json)


def materialize_incremental(
    end: str | None = END,
    views: list[str] | None = VIEWS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Load what is new since each view's last materialization (late rows included)."""
    from keel.features.store import FeatureStore

    with project_session() as project, FeatureStore(project) as store, _progress() as hook:
        results = store.materialize_incremental(_time(end, "--end"), views=views, progress=hook)
    _report(results, as_json)


def get_online(
    features: list[str] = typer.Argument(None, help="Features as view:feature (or a view)."),
    entity: list[str] = typer.Option(
        ..., "--entity", "-e", help="An entity row as key=value[,key=value] (repeatable)."
    ),
    service: str | None = typer.Option(None, "--service", "-s", help="A feature service."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Look features up in the online store, with each value's version and age."""
    from keel.cli.output import print_json, print_table
    from keel.features.store import FeatureStore

    rows = [_entity_row(text) for text in entity]
    with project_session() as project, FeatureStore(project) as store:
        result = store.get_online_features(features or None, rows, service=service)
    if as_json:
        print_json(result.rows())
        return
    table = []
    for i in range(len(rows)):
        for name in result.sources:
            age = result.age(name, i)
            table.append(
                (
                    str(i),
                    name,
                    repr(result.columns[name][i]),
                    (result.version(name, i) or "default")[:12],
                    "" if age is None else str(age),
                )
            )
    print_table("Online features", ["row", "feature", "value", "version", "age"], table)


def _entity_row(text: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--entity {text!r} is not key=value[,key=value]")
        row[key.strip()] = _scalar(value.strip())
    return row


def _scalar(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def register(app: typer.Typer) -> None:
    app.command("materialize")(materialize)
    app.command("materialize-incremental")(materialize_incremental)
    app.command("get-online")(get_online)
