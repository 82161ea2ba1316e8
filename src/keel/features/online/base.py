"""The online store contract: what every backend implements and what callers may rely on.

An online store keeps, per feature view and entity key, the newest row of feature values.
Materialization writes it with :meth:`OnlineStore.write_batch`; serving reads it with
:meth:`OnlineStore.read`. The contract, checked for every backend by
``tests/conformance/test_online_store.py``:

- **Newest row wins.** Rows are ordered by ``(event_ts, created_ts)``; a stored row is replaced
  only by a row whose pair is greater or equal (equal: the later write wins, so a replay or a
  re-materialization under a new version rewrites it). A late row older than the stored one is
  ignored; a late row newer than it is applied. This holds within a batch, across batches, and
  across concurrent writers (processes).
- **Typed keys.** Keys are tuples of int, str, bytes or bool compared by type and value:
  ``(1, 23)`` and ``(12, 3)`` are different entities, and so are ``(1,)`` and ``("1",)``.
- **Typed values.** int, float (NaN included), bool, str, bytes and None read back as written;
  timestamps read back as aware UTC datetimes (microsecond precision).
- **Versions.** Every row remembers the view version it was written under; :meth:`views` maps
  each view to the version of its most recent write.
- **TTL is the caller's.** :meth:`read` returns every stored row with its event time; the caller
  applies the view's ttl. ``expire_after`` only lets the store drop rows physically once
  ``event_ts + expire_after`` has passed (Redis PXAT, SQLite sweep), so they may or may not be
  returned after that.

Next to the newest rows, a store keeps an **event log** for windowed aggregations
(``tests/conformance/test_online_events.py``): :meth:`OnlineStore.append_events` keeps every
row, :meth:`OnlineStore.read_events` returns the events of a time range per key, and
``keel.features.online.windows.aggregate_online`` folds them with the offline semantics.

- **Every row is an event.** Each appended row is stored with a per-store ingestion sequence
  (increasing in write order), so equal rows appended twice are two events: a replayed append
  counts twice. Callers append each source row once.
- **Order.** Events of a key come back ordered by ``(event_ts, created_ts, sequence)``, the
  winner order of the point-in-time join; a missing ``created_ts`` counts as the event time.
- **Pruning.** After an append, events of a key older than the newest event of that key in the
  append minus ``retain`` may be dropped; so every event inside ``(T - retain, T]`` stays for
  any request time ``T`` at or after the key's newest event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, Self, runtime_checkable

from keel.errors import InvalidInputError

_VIEW_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,199}")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_us(micros: int) -> datetime:
    """The aware UTC datetime of epoch microseconds (exact, no float rounding)."""
    return EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class RowBatch:
    """Rows to write, column by column: ``keys[i]`` has ``features[name][i]`` at ``event_ts[i]``.

    Columns may be lists, NumPy arrays or pyarrow arrays. Timestamps are timezone-aware
    datetimes or int epoch microseconds; ``created_ts`` (ingestion time) breaks ties between
    rows with the same ``event_ts`` and defaults to "unknown", older than any known time.

        RowBatch(keys=[(1,), (2,)], features={"spend": [3.5, None]},
                 event_ts=[datetime(2025, 1, 1, tzinfo=UTC)] * 2)
    """

    keys: Sequence[tuple[Any, ...]]
    features: Mapping[str, Any]
    event_ts: Any
    created_ts: Any = None

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class OnlineRows:
    """Rows read for a list of keys, in request order; a key with no stored row has None.

    ``values[i]`` is a tuple in the order of ``features`` (None for a null value or for a
    feature the row's version lacks); ``event_us[i]`` is its event time in epoch microseconds
    (UTC) and ``versions[i]`` the view version it was written under.
    """

    features: tuple[str, ...]
    values: list[tuple[Any, ...] | None]
    event_us: list[int | None]
    versions: list[str | None]

    def __len__(self) -> int:
        return len(self.values)

    @property
    def event_ts(self) -> list[datetime | None]:
        """Event times as aware UTC datetimes (None for missing keys)."""
        return [None if us is None else from_us(us) for us in self.event_us]

    def as_dicts(self) -> list[dict[str, Any] | None]:
        """Each row as ``{feature: value}`` (None for missing keys), e.g. for printing."""
        return [
            None if v is None else dict(zip(self.features, v, strict=True)) for v in self.values
        ]


@dataclass(frozen=True, slots=True)
class EventRows:
    """Events read for a list of keys, in request order (duplicates kept; no events: empty).

    For key ``i``, event ``j`` happened at ``event_us[i][j]`` (epoch µs, UTC), was created at
    ``created_us[i][j]``, got the store sequence ``seq[i][j]`` and holds ``values[i][j]``, a
    tuple in the order of ``columns`` (None for a null value or a column its row lacked).
    Events of a key are ordered by ``(event_us, created_us, seq)``. The lists are shared with
    the caller: treat them as read-only.

        events = store.read_events("user_stats", [(1,)], ["amount"], since_us, until_us)
        [len(per_key) for per_key in events.event_us]  # e.g. [3]
    """

    columns: tuple[str, ...]
    event_us: list[list[int]]
    created_us: list[list[int]]
    seq: list[list[int]]
    values: list[list[tuple[Any, ...]]]

    def __len__(self) -> int:
        return len(self.event_us)


@runtime_checkable
class OnlineStore(Protocol):
    """A backend that stores the newest feature row per (view, entity key); see the module doc.

    Open one with ``keel.features.online.open_online_store(url)``. Stores are safe to share
    between threads and usable as context managers.
    """

    url: str

    def write_batch(
        self, view: str, version: str, rows: RowBatch, *, expire_after: timedelta | None = None
    ) -> int:
        """Upsert ``rows`` into ``view`` as written by ``version``; returns how many row
        writes were applied (a row not newer than the stored one is skipped).

        A bad column, key or timestamp raises InvalidInputError before anything is written.
        SQLite applies a batch in one transaction; Redis applies it in chunks, so a server
        failure mid-batch may leave some chunks applied — rerunning the batch is safe, since
        writes are idempotent. ``expire_after`` is a hint that a row may be dropped once its
        ``event_ts + expire_after`` has passed.
        """
        ...

    def read(
        self, view: str, keys: Sequence[tuple[Any, ...]], features: Sequence[str]
    ) -> OnlineRows:
        """The stored rows of ``keys`` (request order, duplicates kept) restricted to
        ``features``. Raises NotFoundError for a view never written and InvalidInputError for
        a feature the view's current version does not have."""
        ...

    def append_events(self, view: str, version: str, rows: RowBatch, *, retain: timedelta) -> int:
        """Add every row of ``rows`` to the event log of ``view``; returns how many rows were
        appended (skipped rows not counted).

        ``rows.features`` holds the columns aggregations read. Rows that can never fall in a
        window are skipped: a null ``event_ts`` or a null key part. A null ``created_ts``
        counts as the event time. ``retain`` (the view's longest window) bounds what pruning
        may drop (see the module doc). SQLite appends in one transaction; Redis in pipelined
        commands, so a failure mid-append may leave part of it stored, and a rerun stores
        those rows again.
        """
        ...

    def read_events(
        self,
        view: str,
        keys: Sequence[tuple[Any, ...]],
        columns: Sequence[str],
        since_us: int,
        until_us: int,
    ) -> EventRows:
        """The events of ``keys`` (request order) with ``since_us < event_us <= until_us``,
        with the values of ``columns``. A view or key without events has none (no error)."""
        ...

    def delete_view(self, view: str) -> None:
        """Remove every row, event, layout and the version entry of ``view`` (no error if
        absent)."""
        ...

    def views(self) -> dict[str, str]:
        """``{view: version}`` — the version of each view's most recent write."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


class ClosingMixin:
    """``with open_online_store(url) as store: ...`` closes the store on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_view_name(view: str) -> str:
    """Return ``view`` if it is a valid view name, else raise InvalidInputError."""
    if not isinstance(view, str) or not _VIEW_NAME.fullmatch(view):
        raise InvalidInputError(
            f"feature view name {view!r} is invalid; use letters, digits, '_', '.' or '-' "
            "(starting with a letter or '_', at most 200 characters)"
        )
    return view


def check_version(version: str) -> str:
    if not isinstance(version, str) or not version or len(version) > 200:
        raise InvalidInputError(
            f"feature view version {version!r} is invalid; pass the view's version string"
        )
    return version


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` cut into consecutive slices of at most ``size``."""
    return [items[at : at + size] for at in range(0, len(items), size)]
