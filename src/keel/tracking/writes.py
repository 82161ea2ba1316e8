"""Validated writes into the tracking tables.

The check_* functions validate user input before anything is stored; the write_* functions take
a connection inside a write transaction (``project.metadata.write()``), so one user call is one
transaction and bad input leaves nothing half-written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from sqlalchemy import Connection, and_, insert, null, or_, select, update

from keel.core.timeutil import now_ms
from keel.errors import InvalidInputError
from keel.metadata.schema import (
    experiments,
    latest_metrics,
    metrics,
    params,
    run_artifacts,
    run_inputs,
    runs,
    tags,
)
from keel.metadata.sql import insert_ignore, upsert
from keel.tracking.records import ArtifactRecord

MAX_KEY_LENGTH = 256
MAX_PATH_LENGTH = 1024
INPUT_KINDS = ("dataset", "feature_view", "training_set")
# (key, value, step, timestamp in epoch ms), as buffered by keel.tracking.metric_buffer.
Point = tuple[str, float, int, int]


def check_key(kind: str, key: object) -> str:
    """A param, tag, metric or seed key: a non-empty string of at most 256 characters with no
    leading or trailing spaces."""
    if not isinstance(key, str):
        raise InvalidInputError(f"{kind} key {key!r} is a {type(key).__name__}; use a string")
    if not key or key != key.strip() or len(key) > MAX_KEY_LENGTH:
        raise InvalidInputError(
            f"{kind} key {key!r} is invalid; use a non-empty name of at most {MAX_KEY_LENGTH} "
            "characters without leading or trailing spaces"
        )
    return key


def check_name(kind: str, value: object, *, limit: int = MAX_KEY_LENGTH) -> str:
    """An experiment or run name: a non-empty string of at most ``limit`` characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInputError(
            f"{kind} {value!r} is invalid; use a non-empty string of at most {limit} characters"
        )
    return value


def check_notes(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"notes must be a str, got {type(text).__name__}")
    return text


def check_seeds(seeds: Mapping[str, int] | None) -> dict[str, int]:
    """Seeds by name; each an int in NumPy's seed range."""
    out: dict[str, int] = {}
    for name, seed in (seeds or {}).items():
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise InvalidInputError(
                f"seed {name!r} is {seed!r}; use an int from 0 to 2**32 - 1 (NumPy's range)"
            )
        out[check_key("seed", name)] = seed
    return out


def text_values(kind: str, values: Mapping[str, Any] | None) -> dict[str, str]:
    """Validate keys and render values as text (params and tags are stored as strings)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInputError(f"{kind}s must be a dict of name to value, got {values!r}")
    return {check_key(kind, key): str(value) for key, value in values.items()}


def check_artifact_path(path: object) -> str:
    """A relative POSIX path inside the run's artifacts: no '..', no leading '/'."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        raise InvalidInputError(
            f"artifact path {path!r} is invalid; use a relative path such as 'plots/roc.png' "
            f"of at most {MAX_PATH_LENGTH} characters"
        )
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or str(pure) in ("", "."):
        raise InvalidInputError(
            f"artifact path {path!r} must be relative and stay inside the run "
            "(no leading '/', no '..'); e.g. 'plots/roc.png'"
        )
    return str(pure)


def collect_files(source: Path, path: str | None) -> list[tuple[Path, str]]:
    """(local file, artifact path) pairs: a file goes to ``path`` (default: its name), a
    folder's files under ``path`` (default: the folder's name), in a stable order."""
    if source.is_file():
        return [(source, check_artifact_path(path or source.name))]
    if not source.is_dir():
        raise InvalidInputError(f"{source} is not a file or a folder; check the path")
    base = check_artifact_path(path or source.resolve().name)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    return [(file, f"{base}/{file.relative_to(source).as_posix()}") for file in files]


def serialize(obj: object, path: str) -> bytes:
    """``obj`` as JSON or YAML bytes, chosen by the extension of ``path``."""
    suffix = PurePosixPath(path).suffix.lower() if isinstance(path, str) else ""
    try:
        if suffix == ".json":
            return json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8")
        if suffix in (".yaml", ".yml"):
            return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True).encode("utf-8")
    except (TypeError, ValueError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"cannot write {path!r}: object not serializable: {exc}") from None
    raise InvalidInputError(
        f"artifact path {path!r} has no .json, .yaml or .yml extension; add one to pick the format"
    )


def ensure_experiment(conn: Connection, name: str) -> int:
    """The id of experiment ``name``, created on first use (race-free: insert-ignore, select)."""
    row = {"name": name, "description": None, "created_at": now_ms()}
    insert_ignore(conn, experiments, [row], keys=["name"])
    query = select(experiments.c.id).where(experiments.c.name == name)
    return int(conn.execute(query).scalar_one())


def insert_run(conn: Connection, row: Mapping[str, Any]) -> None:
    conn.execute(insert(runs), [dict(row)])


def lock_run(conn: Connection, run_id: str) -> None:
    """Serialize writers of one run on PostgreSQL (SQLite's BEGIN IMMEDIATE already does)."""
    conn.execute(select(runs.c.id).where(runs.c.id == run_id).with_for_update())


def update_run(conn: Connection, run_id: str, **values: Any) -> None:
    conn.execute(update(runs).where(runs.c.id == run_id).values(**values))


def write_params(conn: Connection, run_id: str, values: Mapping[str, str]) -> None:
    """Insert params; logging a key again with the same value is a no-op, with another value
    an InvalidInputError (params describe what the run was, so they never change)."""
    if not values:
        return
    lock_run(conn, run_id)
    query = select(params.c.key, params.c.value).where(
        params.c.run_id == run_id, params.c.key.in_(list(values))
    )
    stored: dict[str, str] = {row.key: row.value for row in conn.execute(query)}
    for key, value in values.items():
        if key in stored and stored[key] != value:
            raise InvalidInputError(
                f"param {key!r} of run {run_id} is already {stored[key]!r}; cannot change it to "
                f"{value!r} (params are immutable: log the new value under another key, or "
                "start a new run)"
            )
    rows = [
        {"run_id": run_id, "key": key, "value": value}
        for key, value in values.items()
        if key not in stored
    ]
    insert_ignore(conn, params, rows, keys=["run_id", "key"])


def write_tags(conn: Connection, run_id: str, values: Mapping[str, str]) -> None:
    """Set tags; unlike params they may be overwritten."""
    rows = [{"run_id": run_id, "key": key, "value": value} for key, value in values.items()]
    upsert(conn, tags, rows, keys=["run_id", "key"], update=["value"])


def write_metrics(conn: Connection, run_id: str, points: Sequence[Point]) -> None:
    """Append every point to ``metrics`` and move ``latest_metrics`` forward.

    A stored latest point is replaced only by one with a greater (step, timestamp); on a tie
    the point logged last wins, within a batch as across batches.
    """
    if not points:
        return
    conn.execute(
        insert(metrics),
        [
            {"run_id": run_id, "key": key, "value": value, "step": step, "timestamp": ts}
            for key, value, step, ts in points
        ],
    )
    # One row per key: PostgreSQL refuses to upsert the same row twice in one statement.
    newest: dict[str, Point] = {}
    for point in points:
        held = newest.get(point[0])
        if held is None or (point[2], point[3]) >= (held[2], held[3]):
            newest[point[0]] = point
    rows = [
        {"run_id": run_id, "key": key, "value": value, "step": step, "timestamp": ts}
        for key, value, step, ts in newest.values()
    ]
    upsert(
        conn,
        latest_metrics,
        rows,
        keys=["run_id", "key"],
        update=["value", "step", "timestamp"],
        where=_newer,
    )


def _newer(table: Any, excluded: Any) -> Any:
    return or_(
        excluded.step > table.c.step,
        and_(excluded.step == table.c.step, excluded.timestamp >= table.c.timestamp),
    )


def write_artifacts(conn: Connection, run_id: str, records: Iterable[ArtifactRecord]) -> None:
    """Record artifacts of a run; logging a path again points it at the new content."""
    at = now_ms()
    rows = [
        {"run_id": run_id, "path": r.path, "sha256": r.sha256, "size": r.size, "created_at": at}
        for r in records
    ]
    upsert(conn, run_artifacts, rows, keys=["run_id", "path"], update=["sha256", "size"])


def check_input(kind: object, ref: object, name: object, details: object) -> dict[str, Any]:
    """Validate a lineage input and return its row (without run_id)."""
    if kind not in INPUT_KINDS:
        raise InvalidInputError(
            f"input kind {kind!r} is unknown; use one of {', '.join(map(repr, INPUT_KINDS))}"
        )
    ref = check_name("input ref", ref, limit=512)
    if name is not None:
        name = check_name("input name", name, limit=MAX_PATH_LENGTH)
    if details is not None:
        if not isinstance(details, Mapping):
            raise InvalidInputError(f"input details must be a dict, got {details!r}")
        try:
            details = json.loads(json.dumps(dict(details)))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"input details are not JSON-serializable: {exc}") from None
    # null(): SQL NULL, not the JSON value 'null', when there are no details.
    stored = null() if details is None else details
    return {"kind": kind, "ref": ref, "name": name, "details": stored, "created_at": now_ms()}


def write_input(conn: Connection, run_id: str, row: Mapping[str, Any]) -> None:
    upsert(
        conn,
        run_inputs,
        [{"run_id": run_id, **row}],
        keys=["run_id", "kind", "ref"],
        update=["name", "details"],
    )
