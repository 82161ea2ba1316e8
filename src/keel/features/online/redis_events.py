"""The event log of the Redis online store: one sorted set per (view, entity key).

``{prefix}:e:{view}:{encoded key}`` holds a key's events as members with score 0, each member
``[event µs][created µs][seq]`` (8 bytes each, offset-binary big-endian) followed by the packed
values (codec.py). Members of equal score sort bytewise, so the set is ordered by
``(event, created, seq)`` and a time range is a lexicographic range (ZRANGEBYLEX) — exact for
every int64 time, where a float score would round times beyond 2**53 µs. ``{prefix}:q:{view}``
is the view's sequence counter, advanced by INCRBY once per append.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keel.features.online.base import chunks
from keel.features.online.codec import order_bytes
from keel.features.online.events import INT64_MAX, INT64_MIN, PreparedEvents
from keel.features.online.redis_wire import bulk, command

_ZADD_CHUNK = 1000  # members per ZADD
Roundtrip = Callable[[list[bytes]], list[Any]]  # commands sent pipelined -> one reply each
_SIGN = 1 << 63
PREFIX_BYTES = 24  # event, created, seq


def event_prefix(prefix: str, view: str) -> bytes:
    return f"{prefix}:e:{view}:".encode()


def seq_key(prefix: str, view: str) -> bytes:
    return f"{prefix}:q:{view}".encode()


def append(
    roundtrip: Roundtrip,
    prefix: str,
    layouts_key: bytes,
    view: str,
    events: PreparedEvents,
    entry: tuple[bytes, bytes],
) -> None:
    """Store ``events``: the layout and the sequence first (so no reader meets an event it
    cannot decode), then the members and pruning, pipelined. ``entry`` (views key, entry)
    registers the view's version unless its row writes already did."""
    head = [
        command(b"HSET", layouts_key, b"%d" % events.layout.id, events.layout.spec().encode()),
        command(b"INCRBY", seq_key(prefix, view), b"%d" % len(events)),
        command(b"HSETNX", entry[0], view.encode(), entry[1]),
    ]
    last_seq = roundtrip(head)[1]
    roundtrip(append_commands(event_prefix(prefix, view), events, last_seq))


def read(
    roundtrip: Roundtrip, names: bytes, keys: list[bytes], since_us: int, until_us: int
) -> dict[bytes, list[tuple[int, int, int, bytes]]]:
    """The events of ``keys`` (sets named ``names + key``) in ``(since_us, until_us]``."""
    found: dict[bytes, list[tuple[int, int, int, bytes]]] = {}
    if not keys or empty_range(since_us, until_us):
        return found
    unique = list(dict.fromkeys(keys))
    commands = [range_command(names + key, since_us, until_us) for key in unique]
    for key, members in zip(unique, roundtrip(commands), strict=True):
        if members:
            found[key] = parse_members(members)
    return found


def append_commands(names: bytes, events: PreparedEvents, last_seq: int) -> list[bytes]:
    """ZADD every event to its key's set, then prune each key of the batch; ``last_seq`` is
    the counter after INCRBY advanced it by ``len(events)``."""
    count = len(events)
    seq = np.arange(last_seq - count + 1, last_seq + 1, dtype=np.int64)
    by_key: dict[bytes, list[bytes]] = {}
    for key, member in zip(events.keys, events.pack(seq).rows(), strict=True):
        group = by_key.get(key)
        if group is None:
            group = by_key[key] = []
        group.append(member)
    commands = []
    for key, members in by_key.items():
        name = names + key
        for part in chunks(members, _ZADD_CHUNK):
            body = b"".join([b"$1\r\n0\r\n$%d\r\n%b\r\n" % (len(m), m) for m in part])
            commands.append(b"*%d\r\n%b%b" % (2 + 2 * len(part), bulk([b"ZADD", name]), body))
        # Lexicographic range: members below the cutoff's 8 bytes have an older event time.
        below = b"(" + order_bytes(events.cutoffs[key])
        commands.append(command(b"ZREMRANGEBYLEX", name, b"-", below))
    return commands


def range_command(name: bytes, since_us: int, until_us: int) -> bytes:
    """ZRANGEBYLEX of the events with ``since_us < event_us <= until_us``."""
    low = b"-" if since_us < INT64_MIN else b"[" + order_bytes(since_us + 1)
    high = b"+" if until_us >= INT64_MAX else b"(" + order_bytes(until_us + 1)
    return command(b"ZRANGEBYLEX", name, low, high)


def empty_range(since_us: int, until_us: int) -> bool:
    return until_us <= since_us or since_us >= INT64_MAX or until_us < INT64_MIN


def parse_members(members: Sequence[bytes]) -> list[tuple[int, int, int, bytes]]:
    """(event µs, created µs, seq, member) of each member; values start at PREFIX_BYTES."""
    found: list[tuple[int, int, int, bytes]] = []
    unpack = int.from_bytes
    for member in members:
        found.append(
            (
                unpack(member[:8], "big") - _SIGN,
                unpack(member[8:16], "big") - _SIGN,
                unpack(member[16:24], "big") - _SIGN,
                member,
            )
        )
    return found
