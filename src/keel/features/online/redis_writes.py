"""Row writes of the Redis online store: the newest row of each key wins, whoever writes.

A chunk of keys is stored in one of two ways, both safe against concurrent writers:

- ``MSETNX`` when none of its keys exists: the server stores the whole chunk only if that
  still holds when it runs the command, so it never replaces a row. This is the common case
  of a first materialization or of new entities, and Redis does it in about a quarter of
  the time the script takes (no copies into Lua and back, no comparisons).
- The upsert script otherwise: it compares order prefixes server-side and keeps the greatest.

A write of more than one chunk first asks whether a sample of its keys exists (one EXISTS, in
the same round trip as the catalog). If none does, every chunk of distinct keys goes as MSETNX;
the chunks it refuses (a key existed after all: written meanwhile, or earlier in the same
batch) and the chunks that repeat a key then go through the script. Otherwise, and for writes
of one chunk or whose keys expire (MSETNX sets no expiry), every chunk goes through the script,
in the same round trip as the catalog. Either way no older row replaces a newer one.
Commands are produced while earlier ones are being sent, so the client packs chunk n+1 while
the server stores chunk n.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from itertools import chain
from typing import Any

import numpy as np

from keel.features.online.batch import PreparedBatch
from keel.features.online.codec import Packed, Scratch
from keel.features.online.redis_wire import Command, PairFrames, RowFrames, bulk, command

Roundtrip = Callable[[Iterable[Command]], list[Any]]  # commands sent pipelined -> one reply each
Span = tuple[int, int]  # rows [start, end) of a batch
Frames = RowFrames | PairFrames

WRITE_CHUNK = 512  # keys per command: bounds how long one call blocks the server (~1 ms)
# (and keeps MSET's arguments well under Lua's C-stack limit of 8000)
PACK_BLOCK = 4 * WRITE_CHUNK  # rows packed at a time, while the server stores the last
# (2048 rows of 50 features are ~1 MB: packing column by column stays in the CPU cache)
PROBE_KEYS = 64  # keys of a batch sampled to choose between MSETNX and the script
# Upsert keeping the greatest order prefix: one MGET, then one MSET (or a SET PXAT per key when
# expiring) for the rows that win — two server calls per chunk rather than two per key. ``best``
# carries the winner so far of a key that repeats within the chunk. Lua compares strings with
# strcoll (locale-dependent), so prefixes are compared as four exact 32-bit numbers instead.
UPSERT_LUA = b"""
local order = struct.unpack
local count = #KEYS
local expiring = #ARGV > count
local stored = redis.call('MGET', unpack(KEYS))
local best, expiry, applied = {}, {}, 0
for i = 1, count do
  local key, row = KEYS[i], ARGV[i]
  local cur = best[key] or stored[i]
  local newer = true
  if cur then
    local c1, c2, c3, c4 = order('>I4>I4>I4>I4', cur)
    local r1, r2, r3, r4 = order('>I4>I4>I4>I4', row)
    if r1 ~= c1 then newer = r1 > c1
    elseif r2 ~= c2 then newer = r2 > c2
    elseif r3 ~= c3 then newer = r3 > c3
    else newer = r4 >= c4 end
  end
  if newer then
    best[key] = row
    expiry[key] = ARGV[count + i]
    applied = applied + 1
  end
end
if expiring then
  for key, row in pairs(best) do redis.call('SET', key, row, 'PXAT', expiry[key]) end
elseif applied > 0 then
  local args = {}
  for key, row in pairs(best) do
    args[#args + 1] = key
    args[#args + 1] = row
  end
  redis.call('MSET', unpack(args))
end
return applied
"""


def write_rows(
    send: Roundtrip, row_prefix: bytes, batch: PreparedBatch, catalog: list[bytes]
) -> int:
    """Store ``batch`` under ``row_prefix`` after the ``catalog`` commands; returns the rows
    applied (a row older than the stored one is not)."""
    names = KeyNames(row_prefix, batch)
    expiry = None if batch.expires_us is None else pxat(batch.expires_us)
    size = len(batch)
    spans = [(at, min(at + WRITE_CHUNK, size)) for at in range(0, size, WRITE_CHUNK)]
    if expiry is not None or size <= WRITE_CHUNK:
        # One round trip for a small write (a push): probing first would add a second.
        replies = send(chain(catalog, _upserts(batch, names, spans, expiry)))
        return sum(replies[len(catalog) :])
    if send([*catalog, command(b"EXISTS", *names.sample(PROBE_KEYS))])[-1]:
        return sum(send(_upserts(batch, names, spans, None)))
    distinct = [span for span in spans if names.distinct(span)]
    left = [span for span in spans if not names.distinct(span)]
    applied = 0
    for span, stored in zip(distinct, send(_inserts(batch, names, distinct)), strict=True):
        if stored:
            applied += span[1] - span[0]
        else:
            left.append(span)
    if left:
        applied += sum(send(_upserts(batch, names, sorted(left), None)))
    return applied


class KeyNames:
    """The Redis keys of a batch's rows, ``prefix`` + encoded entity key; with integer entity
    keys, kept as the batch's key table until a bytes object per key is needed."""

    def __init__(self, prefix: bytes, batch: PreparedBatch) -> None:
        self.prefix = prefix
        self._batch = batch
        self._table: Any = batch.key_table

    def __len__(self) -> int:
        return len(self._batch)

    @cached_property
    def names(self) -> list[bytes]:
        prefix = self.prefix
        return [prefix + key for key in self._batch.keys]

    def entity_keys(self, start: int, end: int) -> Any:
        """Entity keys ``start:end`` (without the prefix): rows of the table, or bytes."""
        if self._table is not None:
            return self._table[start:end]
        return self._batch.keys[start:end]

    def sample(self, count: int) -> list[bytes]:
        """At most ``count`` keys spread evenly over the batch (non-empty)."""
        step = -(-len(self) // count)
        if self._table is not None:
            return [self.prefix + row.tobytes() for row in self._table[::step]]
        return self.names[::step]

    def distinct(self, span: Span) -> bool:
        """Whether no key repeats within ``span``."""
        # MSETNX stores repeated keys in argument order, so only the script may see a key twice.
        if self._all_distinct:
            return True
        start, end = span
        return len(set(self.names[start:end])) == end - start

    @cached_property
    def _all_distinct(self) -> bool:
        table = self._table
        if table is not None and table.shape[1] == 9:  # one integer part: b"i" + 8 bytes
            # Sorted ints are distinct when no two neighbours are equal (np.unique is slower).
            ints = np.ascontiguousarray(table[:, 1:]).view(">i8").ravel()
            values = np.sort(ints.astype(np.int64))
            return bool((values[1:] != values[:-1]).all())
        return len(set(self.names)) == len(self)


def pxat(expires_us: Any) -> list[bytes]:
    """PXAT arguments (epoch ms) of int64 expiry times in µs."""
    # PXAT needs a positive time; a time in the past simply drops the key at once.
    millis = (expires_us + 999) // 1000
    return [b"%d" % max(ms, 1) for ms in millis.tolist()]


def _inserts(batch: PreparedBatch, names: KeyNames, spans: list[Span]) -> Iterator[Command]:
    """One MSETNX per span: key and row as alternating arguments."""

    frames_scratch = Scratch()  # each block's frames are sent before the next is made

    def frames_of(block: int, packed: Packed) -> PairFrames:
        keys = names.entity_keys(block, block + len(packed))
        return PairFrames(names.prefix, keys, packed, block, frames_scratch)

    for start, end, frames in _framed(batch, spans, frames_of):
        yield b"*%d\r\n$6\r\nMSETNX\r\n" % (1 + 2 * (end - start)), frames.frame(start, end)


def _upserts(
    batch: PreparedBatch, names: KeyNames, spans: list[Span], expiry: list[bytes] | None
) -> Iterator[bytes]:
    """One call of the upsert script per span: KEYS the keys, ARGV the rows (then the PXATs)."""
    keys = names.names

    def frames_of(block: int, packed: Packed) -> RowFrames:
        return RowFrames(packed, block)  # the keys go apart from the rows

    for start, end, frames in _framed(batch, spans, frames_of):
        at = start + frames.offset
        body = [bulk(keys[at : at + end - start]), frames.frame(start, end)]
        if expiry is not None:
            body.append(bulk(expiry[at : at + end - start]))
        head = bulk([b"EVAL", UPSERT_LUA, b"%d" % (end - start)])
        yield b"*%d\r\n%b%b" % (3 + (end - start) * len(body), head, b"".join(body))


def _framed(
    batch: PreparedBatch,
    spans: list[Span],
    frames_of: Callable[[int, Packed], Frames],
) -> Iterator[tuple[int, int, Frames]]:
    """Each span (ascending, within one block each) as rows of its block, packed on demand:
    (start, end) relative to the block, and the block's frames."""
    frames: Frames | None = None
    rows = Scratch()  # a block's packed rows are framed (copied) before the next is packed
    for start, end in spans:
        block = start - start % PACK_BLOCK
        if frames is None or frames.offset != block:
            packed = batch.pack(block, block + PACK_BLOCK, order_prefix=True, scratch=rows)
            frames = frames_of(block, packed)
        yield start - block, end - block, frames
