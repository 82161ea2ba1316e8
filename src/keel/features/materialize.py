"""Materialization: the newest feature values of each entity, from a view's source into the
online store, recorded in the metadata store so the next incremental run knows where to start.

A full run reads the event-time range ``[start, end]`` (``start`` defaults to ``end - ttl``: an
older value would be expired at serving time anyway). An incremental run reads only rows that
are new since the last run of the same view version: rows in files that did not exist then
(late data lands in new files), rows whose event time is past the last run's end, and rows
ingested (created timestamp) after the newest ingestion time the last run saw. The online store
keeps the newest row per key whatever order rows arrive in, so a late row older than the stored
one changes nothing and a late row newer than it is applied. A table source (PostgreSQL) has no
files: the database returns only the rows of the run's range — in an incremental run, those past
the last run's end or ingested after the newest ingestion time it saw.

Views with windowed aggregations also feed the online event log (every row inside the longest
window before ``end``), from which aggregations are computed at request time. Events are
appended exactly once: a full run rebuilds the view (its rows are briefly absent online while
it runs), an incremental run appends only rows in new files or past the last run's end, and a
rewritten source file makes the next run a full one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from keel.core.timeutil import now_ms
from keel.errors import InvalidInputError
from keel.features import source_files
from keel.features.online.base import from_us

if TYPE_CHECKING:
    from keel.features.definitions import FeatureView
    from keel.features.offline.duckdb_scan import Scan, ScanRange
    from keel.features.offline.spec import ViewInput
    from keel.features.online.base import OnlineStore
    from keel.project import Project

# progress(view, rows_done, rows_total)
ProgressHook = Callable[[str, int, int], None]
_WRITE_ROWS = 100_000  # rows per online write (each sorted by key before it is written)


@dataclass(frozen=True)
class MaterializeResult:
    """One view's materialization: rows read from the source (the newest per key) and row
    writes the online store applied (older rows than the stored ones are skipped)."""

    view: str
    version: str
    mode: str  # full | incremental
    start: datetime | None
    end: datetime
    rows_read: int
    rows_written: int
    seconds: float


def us_of(value: datetime) -> int:
    """Epoch microseconds of an aware datetime (a naive one is refused)."""
    if value.tzinfo is None:
        raise InvalidInputError(
            f"time {value.isoformat()} has no time zone; pass an aware datetime such as "
            "datetime(2026, 1, 1, tzinfo=UTC)"
        )
    return (value - datetime(1970, 1, 1, tzinfo=value.tzinfo)) // timedelta(microseconds=1)


def last_run(project: Project, view: str) -> dict[str, Any] | None:
    """The newest recorded materialization of ``view`` (any version), or None."""
    from sqlalchemy import select

    from keel.metadata.schema import feature_materializations as fm

    with project.metadata.read() as conn:
        row = (
            conn.execute(
                select(fm)
                .where(fm.c.view == view)
                .order_by(fm.c.finished_at.desc(), fm.c.id.desc())
            )
            .mappings()
            .first()
        )
    return None if row is None else dict(row)


def materialize_view(
    project: Project,
    online: OnlineStore,
    view: FeatureView,
    version: str,
    *,
    start: datetime | None,
    end: datetime,
    incremental: bool,
    progress: ProgressHook | None = None,
    memory_limit: str | None = None,
) -> MaterializeResult:
    """Write the newest values of ``view`` into ``online`` (see the module docstring)."""
    from keel.features.offline.duckdb_engine import DuckDBEngine
    from keel.features.offline.duckdb_scan import ScanRange, SourceScanner
    from keel.features.registry import to_view_input
    from keel.features.sources import PostgresSource

    began = time.perf_counter()
    end_us = us_of(end)
    # A table source is read below, once its range is known; it has no file inventory.
    view_input = None if isinstance(view.source, PostgresSource) else to_view_input(view, project)
    files = [] if view_input is None else source_files.list_files(str(view_input.source), view.name)
    files_now = source_files.inventory(files)
    previous = last_run(project, view.name) if incremental else None
    if previous is not None and previous["version"] != version:
        previous = None  # a new version is materialized in full
    start_us = _start_us(view, start, end_us)
    scan_range = ScanRange(start_us, end_us)
    created_max = None
    changed: list[str] = []
    if previous is not None:
        mark = previous["watermark"]
        new, changed = source_files.changes(mark.get("files", {}), files_now)
    if previous is not None and changed and view.aggregation_list:
        previous = None  # a rewritten file: its events cannot be told apart, so rebuild
    if previous is not None:
        index = {f: i for i, f in enumerate(files)}
        created_max = mark.get("created_max_us")
        scan_range = ScanRange(
            start_us,
            end_us,
            new_files=tuple(index[f] for f in [*new, *changed]),
            after_us=int(previous["end_us"]),
            created_after_us=created_max if view.source.created_timestamp else None,
        )
    view_input = view_input or _table_input(project, view, scan_range, end_us)
    features = [f.name for f in view.fields]
    written = read = 0
    engine = DuckDBEngine(memory_limit=memory_limit)
    with SourceScanner(view_input, files, engine) as scanner:
        if view.aggregation_list:
            # A full run rebuilds the view: events appended earlier would be counted twice.
            if previous is None:
                online.delete_view(view.name)
            events = scanner.rows(_event_columns(view), _events_range(view, end_us, scan_range))
            read += _append_events(online, view, version, events)
        if features:
            scan = scanner.latest(features, scan_range)
            read += scan.rows
            written, newest = _write(online, view, version, scan, features, progress)
            if newest is not None:
                created_max = newest if created_max is None else max(created_max, newest)
    mode = "incremental" if previous is not None else "full"
    _record(project, view.name, version, mode, scan_range, files_now, created_max, read, written)
    return MaterializeResult(
        view.name,
        version,
        mode,
        None if start_us is None else from_us(start_us),
        end,
        read,
        written,
        time.perf_counter() - began,
    )


def _event_columns(view: FeatureView) -> list[str]:
    return sorted({a.column for a in view.aggregation_list})


def _events_range(view: FeatureView, end_us: int, points: ScanRange) -> ScanRange:
    """The rows whose events windows can still need at ``end``; in an incremental run, only
    rows in new files or past the last run's end (never an ingestion-time filter: a row read
    before would be appended twice)."""
    from keel.features.offline.duckdb_scan import ScanRange
    from keel.features.online.windows import longest_window

    since = end_us - longest_window(view.aggregation_list) // timedelta(microseconds=1)
    if points.new_files is None:
        return ScanRange(since, end_us)
    return ScanRange(since, end_us, new_files=points.new_files, after_us=points.after_us)


def _table_input(project: Project, view: FeatureView, points: ScanRange, end_us: int) -> ViewInput:
    """A table source read for this run: the rows of every scan below (features, and the events
    of aggregations), filtered in the database. A file source is returned as is."""
    from keel.features.postgres_source import RowFilter
    from keel.features.registry import to_view_input
    from keel.features.sources import PostgresSource, source_columns

    if not isinstance(view.source, PostgresSource):
        return to_view_input(view, project)
    ranges = [points] if view.fields else []
    ranges += [_events_range(view, end_us, points)] if view.aggregation_list else []
    rows = RowFilter.covering(ranges, end_us)
    where = f"the source of feature view {view.name!r}"
    table = view.source.read(project, columns=source_columns(view), rows=rows, where=where)
    return to_view_input(view, project, source=table)


def _append_events(online: OnlineStore, view: FeatureView, version: str, scan: Scan) -> int:
    """Append every scanned row, oldest first, so the store's sequence follows ingestion."""
    from keel.features.online.base import RowBatch
    from keel.features.online.keys import KeyColumns
    from keel.features.online.windows import longest_window

    retain = longest_window(view.aggregation_list)
    key_count = len(view.entity.key_names)
    columns = _event_columns(view)
    for batch in scan.batches(_WRITE_ROWS):
        keys = KeyColumns([batch.column(i) for i in range(key_count)])
        rows = RowBatch(
            keys=keys,
            features={name: batch.column(name) for name in columns},
            event_ts=batch.column("__ev"),
            created_ts=batch.column("__cr"),
        )
        online.append_events(view.name, version, rows, retain=retain)
    return scan.rows


def _start_us(view: FeatureView, start: datetime | None, end_us: int) -> int | None:
    if start is not None:
        start_us = us_of(start)
        if start_us > end_us:
            raise InvalidInputError(
                f"materialization start {start.isoformat()} is after its end; swap them"
            )
        return start_us
    ttl = view.ttl_delta
    return None if ttl is None else end_us - ttl // timedelta(microseconds=1)


def _write(
    online: OnlineStore,
    view: FeatureView,
    version: str,
    scan: Scan,
    features: list[str],
    progress: ProgressHook | None,
) -> tuple[int, int | None]:
    from keel.features.online.base import RowBatch
    from keel.features.online.keys import KeyColumns

    key_count = len(view.entity.key_names)
    written = done = 0
    newest: int | None = None
    if progress is not None:
        progress(view.name, 0, scan.rows)
    for batch in scan.batches(_WRITE_ROWS):
        keys = KeyColumns([batch.column(i) for i in range(key_count)])
        created = batch.column("__cr")
        rows = RowBatch(
            keys=keys,
            features={name: batch.column(name) for name in features},
            event_ts=batch.column("__ev"),
            created_ts=created,
        )
        # No expiry hint: the ttl is applied at request time, which may lie in the past.
        written += online.write_batch(view.name, version, rows)
        top = pc.max(created).as_py()
        if top is not None:
            newest = top if newest is None else max(newest, top)
        done += batch.num_rows
        if progress is not None:
            progress(view.name, done, scan.rows)
    return written, newest


def _record(
    project: Project,
    view: str,
    version: str,
    mode: str,
    scan_range: Any,
    files: source_files.Inventory,
    created_max: int | None,
    read: int,
    written: int,
) -> None:
    from sqlalchemy import insert

    from keel.metadata.schema import feature_materializations as fm

    now = now_ms()
    watermark = {"files": files, "created_max_us": created_max, "end_us": scan_range.end_us}
    with project.metadata.write() as conn:
        conn.execute(
            insert(fm).values(
                view=view,
                version=version,
                mode=mode,
                start_us=scan_range.start_us,
                end_us=scan_range.end_us,
                watermark=watermark,
                rows_read=read,
                rows_written=written,
                started_at=now,
                finished_at=now,
                author=project.user,
            )
        )
