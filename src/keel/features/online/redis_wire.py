"""The Redis protocol (RESP2/RESP3 subset) on the hot paths, without per-argument Python work.

redis-py packs each argument through its encoder and parses each reply through several layers.
Here commands are built as bytes in a few joins and replies parsed from one buffer, on
connections redis-py opened (so TLS, AUTH and database selection stay its job).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from keel.features.online.codec import Packed, Scratch

# A command: its bytes, or consecutive parts of them (buffers, such as views of a NumPy table,
# sent without being joined first).
Command = bytes | tuple[Any, ...]


class ReplyError(Exception):
    """Redis answered a command with an error reply."""


class Link:
    """One connection owned by a store: redis-py opens it (TLS, AUTH, SELECT); the store then
    writes commands to its socket and parses the replies itself, a few µs faster per call."""

    __slots__ = ("_buffer", "_poller", "_position", "_socket", "conn")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._socket: Any = None
        self._poller: Any = None
        self._buffer = b""
        self._position = 0

    def roundtrip(self, commands: Iterable[Command], spin_ns: int = 0) -> list[Any]:
        """Send ``commands`` pipelined and read one reply each (errors raise ReplyError)."""
        sock = self._connected()
        sent = 0
        for packed in commands:
            if type(packed) is tuple:
                for part in packed:
                    sock.sendall(part)
            else:
                sock.sendall(packed)
            sent += 1
        if spin_ns:
            self._spin(spin_ns)
        return [self._reply() for _ in range(sent)]

    def disconnect(self) -> None:
        self.conn.disconnect()

    def _connected(self) -> Any:
        if self.conn._sock is None:
            self.conn.connect()
        if self.conn._sock is not self._socket:  # a new connection: nothing is buffered yet
            self._socket = self.conn._sock
            self._poller = select.poll()
            self._poller.register(self._socket, select.POLLIN)
            self._buffer, self._position = b"", 0
        return self._socket

    def _spin(self, budget_ns: int) -> None:
        # A thread blocked in recv is woken some 20-40 µs after the data arrives on virtual
        # machines, more than a whole local round trip: poll first, yielding the core on each
        # idle turn so that a Redis server waiting for this core runs at once.
        deadline = time.perf_counter_ns() + budget_ns
        while not self._poller.poll(0) and time.perf_counter_ns() < deadline:
            os.sched_yield()

    def _reply(self) -> Any:
        line = self._line()
        tag, rest = line[:1], line[1:]
        if tag == b"$":
            size = int(rest)
            return None if size < 0 else self._take(size)
        if tag == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        if tag == b":":
            return int(rest)
        if tag == b"_":  # RESP3 null (redis-py opens connections with RESP3 when it can)
            return None
        if tag == b">":  # an out-of-band RESP3 push, not a reply: skip it
            for _ in range(int(rest)):
                self._reply()
            return self._reply()
        if tag == b"+":
            return rest
        if tag == b"-":
            raise ReplyError(rest.decode(errors="replace"))
        raise ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")

    def _line(self) -> bytes:
        end = self._buffer.find(b"\r\n", self._position)
        while end < 0:
            self._fill(len(self._buffer) - self._position + 1)
            end = self._buffer.find(b"\r\n", self._position)
        line = self._buffer[self._position : end]
        self._position = end + 2
        return line

    def _take(self, size: int) -> bytes:
        if len(self._buffer) - self._position < size + 2:
            self._fill(size + 2)
        start = self._position
        self._position = start + size + 2
        return self._buffer[start : start + size]

    def _fill(self, need: int) -> None:
        """Read until at least ``need`` unread bytes are buffered."""
        parts = [self._buffer[self._position :]]
        have = len(parts[0])
        while have < need:
            chunk = self._socket.recv(max(65536, need - have))
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            parts.append(chunk)
            have += len(chunk)
        self._buffer, self._position = b"".join(parts), 0


def command(*args: bytes) -> bytes:
    """One command in the Redis protocol (RESP), built without per-argument encoders."""
    return b"*%d\r\n%b" % (len(args), bulk(args))


def bulk(items: Sequence[bytes]) -> bytes:
    """``items`` as RESP bulk strings; one C-level join when they all have the same length."""
    sizes = set(map(len, items))
    if len(sizes) == 1:
        head = b"$%d\r\n" % sizes.pop()
        return head + (b"\r\n" + head).join(items) + b"\r\n"
    return b"".join([b"$%d\r\n%b\r\n" % (len(item), item) for item in items])


class RowFrames:
    """Packed rows framed as RESP bulk strings (rows ``offset``... of a batch). Fixed-width rows
    (no str/bytes features) are framed in one vectorized copy, so a 100k-row batch creates no
    per-row objects."""

    def __init__(self, packed: Packed, offset: int = 0) -> None:
        self.offset = offset
        self._rows: list[bytes] | None = None
        self._framed: Any = None
        if packed.var_columns:
            self._rows = packed.rows()
        else:
            self._framed = side_by_side([[_row_table(packed)]], len(packed))

    def frame(self, start: int, end: int) -> bytes:
        if self._rows is not None:
            return bulk(self._rows[start:end])
        return bytes(self._framed[start:end].data)


class PairFrames:
    """``prefix + keys[i]`` then row i, as two RESP bulk strings per row: the arguments of
    MSET and MSETNX (rows ``offset``... of a batch). ``keys`` is a list of bytes or a uint8
    table with a key per row. Vectorized like :class:`RowFrames` when the keys have one width
    and the rows are fixed-width (integer keys, no str/bytes features)."""

    def __init__(
        self,
        prefix: bytes,
        keys: Any,
        packed: Packed,
        offset: int = 0,
        scratch: Scratch | None = None,
    ) -> None:
        self.offset = offset
        self._pairs: list[bytes] | None = None
        self._framed: Any = None
        table = keys if isinstance(keys, np.ndarray) else _key_table(keys)
        if packed.var_columns or table is None:
            if isinstance(keys, np.ndarray):
                keys = [row.tobytes() for row in keys]
            self._pairs = [
                b"$%d\r\n%b%b\r\n$%d\r\n%b\r\n"
                % (len(prefix) + len(key), prefix, key, len(row), row)
                for key, row in zip(keys, packed.rows(), strict=True)
            ]
        else:
            arguments = [[prefix, table], [_row_table(packed)]]
            self._framed = side_by_side(arguments, len(packed), scratch)

    def frame(self, start: int, end: int) -> Any:
        """The arguments of rows ``start:end``: bytes, or a view of the frames (no copy; with
        a scratch, valid until its next use)."""
        if self._pairs is not None:
            return b"".join(self._pairs[start:end])
        return self._framed[start:end].data


def side_by_side(
    arguments: Sequence[Sequence[Any]], rows: int, scratch: Scratch | None = None
) -> Any:
    """``rows`` rows of RESP bulk strings: each argument is made of pieces, bytes (the same in
    every row) or uint8 tables (rows x width, a value per row). Built as a NumPy record per
    row, one strided copy per piece; in the memory of ``scratch`` when given."""
    fields: list[tuple[str, Any]] = []
    values: list[Any] = []
    for argument in arguments:
        size = sum(len(p) if isinstance(p, bytes) else p.shape[1] for p in argument)
        for piece in (b"$%d\r\n" % size, *argument, b"\r\n"):
            if isinstance(piece, bytes):
                fields.append((f"f{len(fields)}", f"V{len(piece)}"))
                values.append(np.void(piece))
            else:
                width = piece.shape[1]
                fields.append((f"f{len(fields)}", f"V{width}"))
                values.append(np.ascontiguousarray(piece).view(f"V{width}").reshape(rows))
    dtype = np.dtype(fields)
    framed = np.empty(rows, dtype) if scratch is None else scratch.array("frames", rows, dtype)
    for (name, _), value in zip(fields, values, strict=True):
        framed[name] = value
    return framed


def _key_table(keys: Sequence[bytes]) -> Any:
    """``keys`` as a uint8 table when they all have the same length, else None."""
    widths = set(map(len, keys))
    if len(widths) != 1:
        return None
    return np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), widths.pop())


def _row_table(packed: Packed) -> Any:
    """The fixed-width packed rows as a uint8 table, one row per entity (no copy)."""
    table = packed.table
    return table.view(np.uint8).reshape(len(table), table.dtype.itemsize)
