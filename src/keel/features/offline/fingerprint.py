"""The fingerprint of a training set: what a model's lineage records to name the exact data it
was trained on — the entity frame's content, the join options, and the versions of the features
and datasets behind it. Same inputs, same fingerprint; any change, a new one."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from keel.features.offline.frames import as_table
from keel.features.offline.spec import JoinRequest, ViewInput

_BATCH_ROWS = 65_536  # fixed batching: the hash must not depend on how the input was chunked


class _HashSink:
    """A write-only file that feeds sha256, so the IPC stream is never held in memory."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def table_hash(table: pa.Table) -> str:
    """sha256 of a table's schema and every row, as an Arrow IPC stream in fixed-size batches
    (schema metadata such as pandas' index description is left out).

    >>> table_hash(pa.table({"user_id": [1, 2]}))  # doctest: +SKIP
    '5d1c...'
    """
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
            writer.write_batch(batch)
    return sink.digest.hexdigest()


def _view_identity(view: ViewInput, request: JoinRequest) -> dict[str, Any]:
    source = view.source
    if isinstance(source, str | os.PathLike):
        data = os.fspath(source)
    else:
        data = table_hash(as_table(source, f"the source of view {view.name!r}"))
    return {
        "name": view.name,
        "keys": {key: request.entity_column(key) for key in view.join_keys},
        "features": [f.name for f in view.features],
        "aggregations": [a.name for a in view.aggregations],
        "source": data,
    }


def fingerprint(
    request: JoinRequest,
    feature_versions: Mapping[str, str],
    dataset_versions: Mapping[str, str],
) -> str:
    """sha256 naming a training set: the entity frame's content hash (every row), the join
    options and views, ``feature_versions`` (feature or view name -> definition version) and
    ``dataset_versions`` (source -> dataset version). In-memory sources are hashed too.

    >>> fingerprint(request, {"user_stats": "3f2a"}, {"data/users": "9c1e"})  # doctest: +SKIP
    'a41f...'
    """
    document = {
        "entities": table_hash(as_table(request.entities, "the entity frame")),
        "timestamp_column": request.timestamp_column,
        "as_known_at": request.as_known_at,
        "full_feature_names": request.full_feature_names,
        "views": [_view_identity(view, request) for view in request.views],
        "feature_versions": dict(sorted(feature_versions.items())),
        "dataset_versions": dict(sorted(dataset_versions.items())),
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()
