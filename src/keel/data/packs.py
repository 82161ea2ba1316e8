"""Packs: many small objects stored on a remote as one.

An object store spends about as long on a 40 KB object as on a 4 MB one (SeaweedFS here is
CPU-bound at a few hundred small PUTs per second), so a push of ten thousand small files is
bound by the count of requests, not by the bytes. A push therefore packs the small objects it
sends — under PACK_OBJECT_LIMIT, when there are at least PACK_MIN_OBJECTS of them — into packs
of about PACK_BYTES:

    packs/<sha256 of the pack>        the objects' bytes, one after the other
    packs/<sha256 of the pack>.idx    {"format": "keel-pack/1", "size": N,
                                       "objects": [[sha256, offset, size], ...]}

The pack is uploaded and verified like any object (its name is its hash), its index only
after that: a pack without an index is invisible. So an interrupted push never leaves an
object that looks complete, a rerun packs what is still missing, and ``keel data gc`` removes
index-less packs once they are a day old (a younger one may belong to a push still running).
A pull reads the indexes (kept under the data cache's ``packs/`` after the first read — a
pack never changes), fetches each pack's wanted objects with ranged reads that take
neighbours together, and hashes every object before it enters the cache.

Objects a pointer names itself (a tracked file, a folder's manifest) stay loose, so
DatasetVersion.uri addresses them directly.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keel.core.hashing import is_sha256, sha256_bytes
from keel.data.backends import corrupted_source
from keel.errors import ArtifactCorruptedError, StoreError

if TYPE_CHECKING:
    from keel.data.cache import DataCache
    from keel.data.remote import Backend

FORMAT = "keel-pack/1"
FOLDER = "packs"
INDEX_SUFFIX = ".idx"
PACK_OBJECT_LIMIT = 1 << 20  # objects up to this size are packed
PACK_MIN_OBJECTS = 32  # fewer small objects than this go loose: a pack would save little
PACK_BYTES = 32 << 20  # a pack closes once it holds this much
BUFFER_BYTES = PACK_BYTES + PACK_OBJECT_LIMIT  # holds any pack `plan` makes
READ_GAP = 1 << 20  # wanted objects this close together in a pack are read in one request
READ_BYTES = 64 << 20  # the most one ranged read asks for

Buffer = bytearray | mmap.mmap  # what a pack is built in or a range of one read into


def new_buffer() -> mmap.mmap:
    """A zeroed buffer of BUFFER_BYTES, from anonymous memory: the kernel fills its pages
    in as they are first written (by the read that fills them, off the event loop), where
    bytearray(BUFFER_BYTES) would write all 33 MB on the spot, holding the GIL."""
    return mmap.mmap(-1, BUFFER_BYTES)


@dataclass(frozen=True)
class PackIndex:
    """Where each object of pack ``sha256`` (``size`` bytes) lies: sha256 -> (offset, size)."""

    sha256: str
    size: int
    objects: Mapping[str, tuple[int, int]]

    def encode(self) -> bytes:
        rows = [[sha, offset, size] for sha, (offset, size) in self.objects.items()]
        return json.dumps({"format": FORMAT, "size": self.size, "objects": rows}).encode()

    @classmethod
    def decode(cls, sha256: str, data: bytes) -> PackIndex:
        """Parse an index, refusing one that is not Keel's or points outside its pack."""
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
            size = int(doc["size"])
            objects: dict[str, tuple[int, int]] = {}
            for sha, offset, length in doc["objects"]:
                if not is_sha256(sha) or offset < 0 or length < 0 or offset + length > size:
                    raise ValueError(f"entry {sha!r} at {offset}+{length} of {size} bytes")
                objects[sha] = (int(offset), int(length))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(
                f"pack index {sha256}{INDEX_SUFFIX} is damaged ({exc}); delete it from the "
                "remote and push again from a clone whose cache holds the data"
            ) from None
        return cls(sha256, size, objects)


@dataclass(frozen=True)
class Span:
    """One ranged read: bytes [start, end) of pack ``pack`` holding ``members``
    (sha256, offset in the pack, size)."""

    pack: str
    start: int
    end: int
    members: tuple[tuple[str, int, int], ...]


def pack_name(sha256: str) -> str:
    return f"{FOLDER}/{sha256}"


def index_name(sha256: str) -> str:
    return f"{FOLDER}/{sha256}{INDEX_SUFFIX}"


def plan(candidates: Iterable[str], sizes: Mapping[str, int]) -> list[list[str]]:
    """Group the small objects among ``candidates`` into packs of about PACK_BYTES, in hash
    order (the same objects always make the same packs). Empty when too few are small."""
    small = sorted(sha for sha in set(candidates) if sizes[sha] <= PACK_OBJECT_LIMIT)
    if len(small) < PACK_MIN_OBJECTS:
        return []
    groups: list[list[str]] = [[]]
    filled = 0
    for sha in small:
        if filled >= PACK_BYTES:
            groups.append([])
            filled = 0
        groups[-1].append(sha)
        filled += sizes[sha]
    return groups


def build(
    cache: DataCache, members: list[str], sizes: Mapping[str, int], buffer: Buffer
) -> tuple[memoryview, PackIndex]:
    """The bytes and index of a pack of ``members``, each read from the cache into ``buffer``
    (a new_buffer, reused from pack to pack: a fresh one costs a page fault per 4 KB) and
    checked against its name on the way, so a damaged cache object is never pushed. A larger
    pack than ``buffer`` holds gets a buffer of its own."""
    total = sum(sizes[sha] for sha in members)
    view = memoryview(buffer if total <= len(buffer) else bytearray(total))
    digest = hashlib.sha256()
    objects: dict[str, tuple[int, int]] = {}
    offset = 0
    for sha in members:
        path = cache.file_of(sha)
        part = view[offset : offset + sizes[sha]]
        if _read_into(path, part) != len(part) or hashlib.sha256(part).hexdigest() != sha:
            raise corrupted_source(sha, path)
        digest.update(part)
        objects[sha] = (offset, len(part))
        offset += len(part)
    return view[:offset], PackIndex(digest.hexdigest(), offset, objects)


def _read_into(path: str, part: memoryview) -> int:
    """Fill ``part`` from the start of file ``path``; the bytes read (fewer at its end)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        got = 0
        while got < len(part) and (count := os.readv(fd, [part[got:]])):
            got += count
        return got
    finally:
        os.close(fd)


async def upload(backend: Backend, body: bytes | memoryview, index: PackIndex) -> None:
    """Upload a pack, then — once the pack is verified — its index, which makes it visible."""
    await backend.put_blob(pack_name(index.sha256), body, index.sha256)
    encoded = index.encode()
    await backend.put_blob(index_name(index.sha256), encoded, sha256_bytes(encoded))


async def load(
    backend: Backend,
    keep_in: Path | None,
    jobs: int,
    listing: Mapping[str, tuple[int, float | None]] | None = None,
) -> dict[str, PackIndex]:
    """The indexes of every complete pack on the remote (pack sha256 -> index), read from
    ``keep_in`` when kept there before, else fetched (and kept). ``listing``: the remote's
    ``packs/`` folder when already listed."""
    from keel.data.inventory import gather_limited

    if listing is None:
        listing = await backend.list_blobs(FOLDER)
    stems = [name.rpartition("/")[2] for name in listing]
    packs = sorted(
        stem[: -len(INDEX_SUFFIX)]
        for stem in stems
        if stem.endswith(INDEX_SUFFIX) and is_sha256(stem[: -len(INDEX_SUFFIX)])
    )

    async def one(sha: str) -> PackIndex:
        kept = keep_in / f"{sha}{INDEX_SUFFIX}" if keep_in is not None else None
        if kept is not None and kept.is_file():
            try:
                return PackIndex.decode(sha, kept.read_bytes())
            except StoreError:
                kept.unlink(missing_ok=True)  # a damaged local copy: the remote's is read again
        data = await backend.get_blob(index_name(sha))
        index = PackIndex.decode(sha, data)
        if kept is not None:
            _write_atomically(kept, data)
        return index

    return {index.sha256: index for index in await gather_limited([one(s) for s in packs], jobs)}


def unindexed(
    listing: Mapping[str, tuple[int, float | None]],
) -> dict[str, tuple[int, float | None]]:
    """The packs of a ``packs/`` listing whose index never arrived (their push was
    interrupted): pack sha256 -> (size, modified)."""
    stems = {name.rpartition("/")[2]: info for name, info in listing.items()}
    return {
        stem: info
        for stem, info in stems.items()
        if is_sha256(stem) and f"{stem}{INDEX_SUFFIX}" not in stems
    }


def forget_indexes(folder: Path, dead: Iterable[str]) -> None:
    """Drop the kept indexes of packs deleted from a remote."""
    for sha in dead:
        (folder / f"{sha}{INDEX_SUFFIX}").unlink(missing_ok=True)


def keep_index(folder: Path, index: PackIndex) -> None:
    """Keep ``index`` in ``folder`` (as ``load`` would after reading it from the remote)."""
    _write_atomically(folder / f"{index.sha256}{INDEX_SUFFIX}", index.encode())


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def packed_sizes(packs: Mapping[str, PackIndex]) -> dict[str, int]:
    """sha256 -> size of every object held in ``packs``."""
    return {sha: size for index in packs.values() for sha, (_, size) in index.objects.items()}


def spans(wanted: Iterable[str], packs: Mapping[str, PackIndex]) -> tuple[list[Span], set[str]]:
    """The ranged reads that fetch the packed objects among ``wanted``, and the wanted
    objects no pack holds. Objects less than READ_GAP apart share a read of at most
    READ_BYTES."""
    holder: dict[str, str] = {}  # sha256 -> the first pack, in sorted order, that holds it
    for pack in sorted(packs, reverse=True):
        holder.update(dict.fromkeys(packs[pack].objects, pack))
    where: dict[str, list[tuple[str, int, int]]] = {}
    loose: set[str] = set()
    for sha in set(wanted):
        holding = holder.get(sha)
        if holding is None:
            loose.add(sha)
        else:
            where.setdefault(holding, []).append((sha, *packs[holding].objects[sha]))
    reads: list[Span] = []
    for pack, members in sorted(where.items()):
        members.sort(key=lambda member: member[1])
        run: list[tuple[str, int, int]] = []
        for member in members:
            if run and (
                member[1] - (run[-1][1] + run[-1][2]) > READ_GAP
                or member[1] + member[2] - run[0][1] > READ_BYTES
            ):
                reads.append(_span(pack, run))
                run = []
            run.append(member)
        reads.append(_span(pack, run))
    return reads, loose


def _span(pack: str, run: list[tuple[str, int, int]]) -> Span:
    return Span(pack, run[0][1], max(offset + size for _, offset, size in run), tuple(run))


def store(
    cache: DataCache,
    span: Span,
    data: bytes | memoryview,
    stored: Callable[[str], None] | None = None,
) -> list[str]:
    """Put each member of ``span`` (read as ``data``) into the cache after checking its hash,
    telling ``stored`` of each; returns the members that hashed wrong (not stored)."""
    if len(data) != span.end - span.start:
        raise StoreError(
            f"pack {span.pack} answered {len(data)} bytes for a read of "
            f"{span.end - span.start}; the pack is damaged or truncated — push again"
        )
    view = memoryview(data)
    bad: list[str] = []
    for sha, offset, size in span.members:
        try:
            cache.put_bytes_verified(view[offset - span.start : offset - span.start + size], sha)
        except ArtifactCorruptedError:
            bad.append(sha)
        else:
            if stored is not None:
                stored(sha)
    return bad
