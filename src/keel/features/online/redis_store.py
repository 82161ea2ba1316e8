"""The production online store: Redis, one string per (view, entity key).

Keys: ``{prefix}:r:{view}:{encoded entity key}`` hold a 16-byte order prefix (event, created
µs, offset-binary big-endian) followed by the packed row (codec.py); ``{prefix}:views`` and
``{prefix}:layouts`` are hashes of the catalog. A write stores chunks of keys with MSETNX where
none exists yet, else with a Lua script comparing order prefixes server-side (atomic either
way: concurrent writers cannot lose the newest row), see redis_writes.py. A lookup is one
GET or MGET round trip on a connection of the store's own (redis_wire.Link). The event log of
windowed aggregations is a sorted set per (view, entity key), see redis_events.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from keel.errors import InvalidInputError, StoreError
from keel.features.online import redis_events, redis_writes
from keel.features.online.base import (
    ClosingMixin,
    EventRows,
    OnlineRows,
    OnlineStore,
    RowBatch,
    check_view_name,
    chunks,
)
from keel.features.online.batch import prepare_batch
from keel.features.online.catalog import Catalog, entry_version, view_entry
from keel.features.online.events import check_range, gather, prepare_events
from keel.features.online.keys import encode_keys
from keel.features.online.redis_wire import Command, Link, ReplyError, command

_READ_CHUNK = 1000
_SIGN = 1 << 63


class RedisOnlineStore(ClosingMixin):
    """Online store on a Redis server; every key starts with ``prefix`` (default ``keel``).

    A lookup polls for its reply for up to ``spin_us`` µs before blocking, which halves local
    round trips on virtual machines at the cost of that much CPU; 0 turns polling off (a
    remote server farther than ~0.2 ms gains nothing from it).

        store = RedisOnlineStore("redis://127.0.0.1:6379/0", prefix="shop")
        store.read("user_stats", [(1,), (2,)], ["spend_7d"]).values
    """

    def __init__(self, url: str, *, prefix: str = "keel", spin_us: int = 200) -> None:
        if not prefix or any(c in prefix for c in "*?[]\\"):
            raise InvalidInputError(f"Redis key prefix {prefix!r} must be non-empty, no glob chars")
        try:
            self._client = redis.Redis.from_url(url)
        except ValueError as exc:
            raise InvalidInputError(f"online store URL is invalid: {exc}") from exc
        split = urlsplit(url)
        host = split.hostname or split.path or "localhost"
        self.url = urlunsplit((split.scheme, f"{host}:{split.port or 6379}", split.path, "", ""))
        self.prefix = prefix
        # How long a lookup polls for its reply before blocking (0: block at once).
        self.spin_ns = max(0, spin_us) * 1000
        self._views_key = f"{prefix}:views".encode()
        self._layouts_key = f"{prefix}:layouts".encode()
        self._row_prefixes: dict[str, bytes] = {}
        self._catalog = Catalog(self._fetch_layout, self._fetch_view)
        self._idle: list[Link] = []
        self._opened: list[Link] = []
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, root: Path | None = None) -> RedisOnlineStore:
        """``redis://HOST:PORT/DB[?prefix=NAME&spin_us=N]``; other query options (such as
        ``socket_timeout``) go to redis-py."""
        del root  # a server URL does not depend on the project directory
        split = urlsplit(url)
        query = parse_qsl(split.query)
        ours = dict(query)
        rest = urlencode([(k, v) for k, v in query if k not in ("prefix", "spin_us")])
        try:
            spin_us = int(ours.get("spin_us", "200"))
        except ValueError:
            raise InvalidInputError(
                f"spin_us={ours['spin_us']!r} in {url!r} must be an int"
            ) from None
        bare = urlunsplit((*split[:3], rest, split.fragment))
        return cls(bare, prefix=ours.get("prefix", "keel"), spin_us=spin_us)

    # -- writing -------------------------------------------------------------------------------

    def write_batch(
        self, view: str, version: str, rows: RowBatch, *, expire_after: timedelta | None = None
    ) -> int:
        batch = prepare_batch(view, version, rows, expire_after=expire_after)
        layout = batch.layout
        # The catalog goes first, so no reader meets an unknown layout.
        catalog = [
            command(b"HSET", self._views_key, view.encode(), _entry(version, layout.names)),
            command(b"HSET", self._layouts_key, b"%d" % layout.id, layout.spec().encode()),
        ]
        send = partial(self._roundtrip, retry=False, spin=False)
        applied = redis_writes.write_rows(send, self._row_prefix(view), batch, catalog)
        self._catalog.remember(layout)
        return applied

    def append_events(self, view: str, version: str, rows: RowBatch, *, retain: timedelta) -> int:
        events = prepare_events(view, version, rows, retain=retain)
        if len(events):
            # Not retried: a rerun would store the events twice.
            send = partial(self._roundtrip, retry=False, spin=False)
            entry = (self._views_key, _entry(version, []))
            redis_events.append(send, self.prefix, self._layouts_key, view, events, entry)
            self._catalog.remember(events.layout)
        return len(events)

    def delete_view(self, view: str) -> None:
        check_view_name(view)
        events = redis_events.event_prefix(self.prefix, view)
        patterns = [self._row_prefix(view) + b"*", events + b"*"]
        with _translated(self.url):
            self._client.hdel(self._views_key, view.encode())
            self._client.delete(redis_events.seq_key(self.prefix, view))
            for pattern in patterns:
                for batch in _scan_batches(self._client, pattern):
                    self._client.unlink(*batch)
            layouts = self._client.hgetall(self._layouts_key)
            dead = [k for k, spec in layouts.items() if _layout_view(spec) == view]
            if dead:
                self._client.hdel(self._layouts_key, *dead)
        self._catalog.forget(view)

    # -- reading -------------------------------------------------------------------------------

    def read(
        self, view: str, keys: Sequence[tuple[Any, ...]], features: Sequence[str]
    ) -> OnlineRows:
        wanted = tuple(features)
        row_prefix = self._row_prefix(view)
        self._catalog.check(view, wanted)
        names = [row_prefix + key for key in encode_keys(keys)]
        if len(names) == 1:
            blobs: list[bytes | None] = self._roundtrip([command(b"GET", names[0])])
        elif names:
            commands = [command(b"MGET", *part) for part in chunks(names, _READ_CHUNK)]
            blobs = [blob for reply in self._roundtrip(commands) for blob in reply]
        else:
            blobs = []
        values: list[tuple[Any, ...] | None] = []
        events: list[int | None] = []
        versions: list[str | None] = []
        decode = self._catalog.decoder(wanted)
        for blob in blobs:
            row = None if blob is None else decode(blob, 16)
            if blob is None or row is None:
                values.append(None)
                events.append(None)
                versions.append(None)
            else:
                values.append(row[0])
                events.append(int.from_bytes(blob[:8], "big") - _SIGN)
                versions.append(row[1])
        return OnlineRows(wanted, values, events, versions)

    def read_events(
        self,
        view: str,
        keys: Sequence[tuple[Any, ...]],
        columns: Sequence[str],
        since_us: int,
        until_us: int,
    ) -> EventRows:
        wanted = tuple(columns)
        check_range(since_us, until_us)
        encoded = encode_keys(keys)
        names = redis_events.event_prefix(self.prefix, check_view_name(view))
        found = redis_events.read(self._roundtrip, names, encoded, int(since_us), int(until_us))
        decode = self._catalog.decoder(wanted)
        return gather(wanted, encoded, found, decode, redis_events.PREFIX_BYTES)

    def views(self) -> dict[str, str]:
        with _translated(self.url):
            entries = self._client.hgetall(self._views_key)
        return {_text(name): entry_version(entry) for name, entry in sorted(entries.items())}

    def close(self) -> None:
        with self._lock:
            for conn in self._opened:
                conn.disconnect()
            self._opened.clear()
            self._idle.clear()
        self._client.close()

    # -- internals -----------------------------------------------------------------------------

    def _row_prefix(self, view: str) -> bytes:
        found = self._row_prefixes.get(view)
        if found is None:
            found = self._row_prefixes[view] = f"{self.prefix}:r:{check_view_name(view)}:".encode()
        return found

    def _fetch_layout(self, layout_id: int) -> bytes | None:
        found: bytes | None = self._roundtrip(
            [command(b"HGET", self._layouts_key, b"%d" % layout_id)]
        )[0]
        return found

    def _fetch_view(self, view: str) -> bytes | None:
        found: bytes | None = self._roundtrip([command(b"HGET", self._views_key, view.encode())])[0]
        return found

    def _roundtrip(
        self, commands: Iterable[Command], *, retry: bool = True, spin: bool = True
    ) -> list[Any]:
        """Send ``commands`` pipelined on one connection; one reply each, in order.

        Connection failures are retried once on a fresh connection when ``retry`` is set
        (``commands`` must then be a list)."""
        for attempt in (1, 2):
            link = self._checkout()
            try:
                replies = link.roundtrip(commands, self.spin_ns if spin else 0)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                link.disconnect()
                self._idle.append(link)
                if attempt == 2 or not retry:
                    raise StoreError(_unreachable(self.url, exc)) from exc
                continue
            except ReplyError as exc:
                link.disconnect()  # later replies of the pipeline are still unread
                self._idle.append(link)
                raise StoreError(f"Redis at {self.url} refused a command: {exc}") from exc
            self._idle.append(link)
            return replies
        raise AssertionError("unreachable")  # the loop returns or raises

    def _checkout(self) -> Link:
        try:
            return self._idle.pop()  # list.pop is atomic: safe across threads
        except IndexError:
            pass
        pool = self._client.connection_pool
        link = Link(pool.connection_class(**pool.connection_kwargs))
        with self._lock:
            self._opened.append(link)
        return link


def _entry(version: str, names: Sequence[str]) -> bytes:
    return view_entry(version, list(names)).encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _layout_view(spec: bytes | str) -> str:
    import json

    view: str = json.loads(spec)["view"]
    return view


def _scan_batches(client: Any, pattern: bytes) -> Any:
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            yield batch
            batch = []
    if batch:
        yield batch


@contextmanager
def _translated(url: str) -> Iterator[None]:
    """Turn redis-py errors into StoreError naming the server (httpx-style boundary)."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreError(_unreachable(url, exc)) from exc


def _unreachable(url: str, exc: BaseException) -> str:
    return f"Redis at {url} failed: {exc}; check that it runs and that online_store.url is right"


if TYPE_CHECKING:  # mypy checks that the class honours the OnlineStore protocol
    _conforms: type[OnlineStore] = RedisOnlineStore
