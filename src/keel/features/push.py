"""`FeatureStore.push`: rows that happen now (a stream, a request) written to the online store
at once and appended to the view's offline data, so the next training set sees them too.

The offline copy is a new Parquet file in the source's folder, written under a temporary name
and renamed, so a reader never sees half a file — or, for a PostgreSQL table source, the rows
inserted into the table in one transaction. It is written before the online store, so a value
is never served that training could not see.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keel.errors import InvalidInputError
from keel.features.sources import PostgresSource

if TYPE_CHECKING:
    from keel.features.definitions import FeatureView
    from keel.features.offline.spec import TableLike
    from keel.features.online.base import OnlineStore
    from keel.features.sources import DatasetSource, ParquetSource
    from keel.project import Project


def push_rows(
    project: Project, online: OnlineStore, view: FeatureView, version: str, rows: TableLike
) -> int:
    """Append ``rows`` to ``view``'s offline data and upsert them online; returns how many
    online row writes were applied."""
    from keel.features.offline.frames import as_table, require_column
    from keel.features.online.base import RowBatch
    from keel.features.online.keys import KeyColumns

    owner = f"push to feature view {view.name!r}"
    table = as_table(rows, owner)
    source = view.source
    folder = None if isinstance(source, PostgresSource) else _push_folder(project, view, source)
    schema = None if folder is None else _source_schema(folder, view)
    needed: list[str] = [*view.entity.key_names, source.event_timestamp]
    needed += [f.name for f in view.fields] + [a.column for a in view.aggregation_list]
    if source.created_timestamp is not None:
        needed.append(source.created_timestamp)
    for column in dict.fromkeys(needed):
        require_column(table, column, owner, "column")
    for time_column in (source.event_timestamp, source.created_timestamp):
        if time_column and getattr(table.schema.field(time_column).type, "tz", None) is None:
            raise InvalidInputError(
                f"{owner}: column {time_column!r} has naive timestamps; push timezone-aware times"
            )
    if isinstance(source, PostgresSource):
        source.insert(project, table, owner)
    elif folder is not None and schema is not None:
        _write_file(folder, _conform(table, schema, owner))
    event_us = _micros(table.column(source.event_timestamp))
    created = table.column(source.created_timestamp) if source.created_timestamp else None
    keys = KeyColumns([table.column(k) for k in view.entity.key_names])
    batch = RowBatch(
        keys=keys,
        features={f.name: table.column(f.name) for f in view.fields},
        event_ts=event_us,
        created_ts=None if created is None else _micros(created),
    )
    if view.aggregation_list:
        from keel.features.online.windows import longest_window

        columns = sorted({a.column for a in view.aggregation_list})
        events = RowBatch(
            keys=batch.keys,
            features={name: table.column(name) for name in columns},
            event_ts=batch.event_ts,
            created_ts=batch.created_ts,
        )
        online.append_events(
            view.name, version, events, retain=longest_window(view.aggregation_list)
        )
    if not view.fields:
        return 0
    return online.write_batch(view.name, version, batch)


def _micros(column: Any) -> pa.Array:
    values = pc.cast(column, pa.timestamp("us", "UTC"))
    return pc.cast(values, pa.int64()).combine_chunks()


def _push_folder(
    project: Project, view: FeatureView, source: ParquetSource | DatasetSource
) -> Path:
    from keel.features.sources import is_url

    path = source.path
    if is_url(path):
        raise InvalidInputError(
            f"feature view {view.name!r} reads {path!r}; push appends to local Parquet folders "
            "only — write to that URL with your pipeline and run `keel features "
            "materialize-incremental`"
        )
    local = Path(path)
    if not local.is_absolute():
        local = project.root / local
    if not local.is_dir():
        raise InvalidInputError(
            f"feature view {view.name!r} reads the file {str(local)!r}; push appends a new "
            "file to a source folder — point the view's source at a folder of Parquet files"
        )
    return local


def _source_schema(folder: Path, view: FeatureView) -> pa.Schema:
    files = sorted(folder.rglob("*.parquet"))
    if not files:
        raise InvalidInputError(
            f"the source folder {str(folder)!r} of feature view {view.name!r} has no Parquet "
            "file to take the schema from; write the first file with your pipeline"
        )
    return pq.read_schema(files[0])


def _conform(table: pa.Table, schema: pa.Schema, owner: str) -> pa.Table:
    """``table`` with exactly the source's columns and types (missing columns become NULL)."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            try:
                columns.append(pc.cast(table.column(field.name), field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInputError(
                    f"{owner}: column {field.name!r} cannot be stored as {field.type} ({exc}); "
                    "push values of the source's type"
                ) from exc
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata())


def _write_file(folder: Path, table: pa.Table) -> Path:
    # Named by time, so the file order (the offline ingestion order) is the push order.
    name = f"push-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    temp = folder / f".{name}.tmp"
    pq.write_table(table, temp)
    final = folder / name
    os.replace(temp, final)
    return final
