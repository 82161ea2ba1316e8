"""Packs of small objects on a remote: how they are planned and read (properties), and that
they round-trip, stay invisible until complete, and refuse damaged bytes on every kind of
remote."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keel.data.packs as packs
from keel.data.inventory import contents, delete_objects
from keel.data.packs import PackIndex
from keel.data.remote import Remote
from keel.errors import ArtifactCorruptedError, StoreError
from tests.data.remote_support import Recorder, fill, make_remote, new_cache


def _sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@st.composite
def layouts(draw: st.DrawFn) -> tuple[dict[str, PackIndex], set[str]]:
    """Packs of objects laid end to end (sizes up to 3 MiB, so gaps and the read limit
    matter), and a wanted set: some packed objects, some in no pack."""
    count = draw(st.integers(1, 60))
    sizes = draw(st.lists(st.integers(0, 3 << 20), min_size=count, max_size=count))
    cuts = sorted(set(draw(st.lists(st.integers(1, count), max_size=4))) | {count})
    held: dict[str, PackIndex] = {}
    start = 0
    for number, end in enumerate(cuts):
        offset, objects = 0, {}
        for n in range(start, end):
            objects[_sha(n)] = (offset, sizes[n])
            offset += sizes[n]
        held[_sha(-1 - number)] = PackIndex(_sha(-1 - number), offset, objects)
        start = end
    chosen = draw(st.sets(st.integers(0, count - 1)))
    absent = draw(st.sets(st.integers(count, count + 5)))
    return held, {_sha(n) for n in chosen | absent}


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_spans_read_every_wanted_packed_object_once_within_the_limits(
    layout: tuple[dict[str, PackIndex], set[str]],
) -> None:
    held, wanted = layout
    reads, loose = packs.spans(wanted, held)
    packed = {sha for index in held.values() for sha in index.objects}
    assert loose == wanted - packed
    members = [sha for span in reads for sha, _, _ in span.members]
    assert sorted(members) == sorted(wanted & packed)  # each exactly once
    for span in reads:
        index = held[span.pack]
        for sha, offset, size in span.members:
            assert index.objects[sha] == (offset, size)
            assert span.start <= offset
            assert offset + size <= span.end
        ordered = sorted(span.members, key=lambda member: member[1])
        assert span.start == ordered[0][1]
        assert span.end == max(offset + size for _, offset, size in ordered)
        for (_, offset, size), (_, following, _) in itertools.pairwise(ordered):
            assert following - (offset + size) <= packs.READ_GAP
        assert len(span.members) == 1 or span.end - span.start <= packs.READ_BYTES


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2 << 20), max_size=120, unique_by=lambda n: n))
def test_plan_packs_each_small_object_once_in_hash_order(sizes_list: list[int]) -> None:
    sizes = {_sha(n): size for n, size in enumerate(sizes_list)}
    groups = packs.plan(sizes, sizes)
    small = sorted(sha for sha, size in sizes.items() if size <= packs.PACK_OBJECT_LIMIT)
    if len(small) < packs.PACK_MIN_OBJECTS:
        assert groups == []
        return
    assert [sha for group in groups for sha in group] == small
    for group in groups:
        assert sum(sizes[sha] for sha in group[:-1]) < packs.PACK_BYTES


def test_a_damaged_index_is_one_clear_error() -> None:
    good = PackIndex(_sha(0), 10, {_sha(1): (0, 4), _sha(2): (4, 6)})
    assert PackIndex.decode(_sha(0), good.encode()) == good
    for damaged in (b"{not json", b'{"format": "other"}', good.encode().replace(b"10", b"7")):
        with pytest.raises(StoreError, match=f"pack index {_sha(0)}.idx is damaged"):
            PackIndex.decode(_sha(0), damaged)


@settings(max_examples=40, deadline=None)
@given(
    first=st.lists(st.integers(0, 3000), min_size=1, max_size=12),
    second=st.lists(st.integers(0, 3000), min_size=1, max_size=12),
    room=st.integers(0, 20_000),
)
def test_packs_built_one_after_another_in_one_buffer_hold_their_own_bytes(
    tmp_path_factory: pytest.TempPathFactory, first: list[int], second: list[int], room: int
) -> None:
    cache = new_cache(tmp_path_factory.mktemp("cache"))
    buffer = bytearray(room)  # may be too small: such a pack gets a buffer of its own
    for sizes_list in (first, second):
        objects = fill(cache, sizes_list)
        members = list(objects)
        sizes = {sha: len(data) for sha, data in objects.items()}
        body, index = packs.build(cache, members, sizes, buffer)
        expected = b"".join(objects[sha] for sha in members)
        assert bytes(body) == expected
        assert (index.sha256, index.size) == (hashlib.sha256(expected).hexdigest(), len(expected))
        for sha in members:
            offset, size = index.objects[sha]
            assert expected[offset : offset + size] == objects[sha]


def test_a_new_buffer_is_zeroed_and_holds_packs_built_one_after_another(tmp_path: Path) -> None:
    """The anonymous memory transfers lend (push builds packs in it): zeroed, BUFFER_BYTES
    long, written through by the reads that fill it, reusable from pack to pack."""
    buffer = packs.new_buffer()
    assert len(buffer) == packs.BUFFER_BYTES
    assert buffer[:4096] == bytes(4096)
    assert buffer[-4096:] == bytes(4096)
    cache = new_cache(tmp_path / "cache")
    for sizes_list in ([5000, 1, 70_000], [3, 200_000]):
        objects = fill(cache, sizes_list)
        sizes = {sha: len(data) for sha, data in objects.items()}
        body, index = packs.build(cache, list(objects), sizes, buffer)
        expected = b"".join(objects.values())
        assert bytes(body) == expected == buffer[: len(expected)]
        assert index.sha256 == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("damage", ["changed", "truncated"])
def test_a_damaged_member_stops_its_pack(tmp_path: Path, damage: str) -> None:
    cache = new_cache(tmp_path / "cache")
    objects = fill(cache, [100, 2000, 300])
    members = list(objects)
    victim = cache.path_of(members[1])
    victim.chmod(0o644)
    data = objects[members[1]]
    victim.write_bytes(bytes([data[0] ^ 1]) + data[1:] if damage == "changed" else data[:-1])
    sizes = {sha: len(data) for sha, data in objects.items()}
    with pytest.raises(ArtifactCorruptedError, match=f"data cache object {members[1]}"):
        packs.build(cache, members, sizes, bytearray(packs.BUFFER_BYTES))


@pytest.mark.s3
def test_packs_over_a_megabyte_go_to_s3_straight_from_one_reused_buffer(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packs larger than a streamed chunk take keel.data.s3_raw's in-memory path, all
    read into the one buffer the pool lends (so each must be fully sent before the next is
    read), and come back whole."""
    import keel.data.s3_raw as direct
    import keel.data.transfer as transfer

    monkeypatch.setattr(packs, "PACK_BYTES", 1_500_000)
    monkeypatch.setattr(transfer, "PACK_BUFFERS", 1)
    sent: list[int] = []
    original = direct.put

    async def counted(*args: Any) -> Any:
        body = args[4]
        if not isinstance(body, Path):
            sent.append(len(body))
        return await original(*args)

    monkeypatch.setattr(direct, "put", counted)
    remote = make_remote("s3", request, tmp_path)
    source = new_cache(tmp_path / "a")
    objects = fill(source, [300_000 + n for n in range(40)])
    assert remote.push(source, objects).transferred == len(objects)
    held = contents(remote)
    assert len(held.packs) >= 3
    assert sorted(sent) == sorted(index.size for index in held.packs.values())

    target = new_cache(tmp_path / "b")
    assert remote.pull(target, objects).transferred == len(objects)
    for sha, data in objects.items():
        assert target.read_bytes(sha) == data


def test_small_objects_travel_packed_and_come_back_byte_for_byte(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packs, "PACK_BYTES", 50_000)  # several packs
    source = new_cache(tmp_path / "a")
    objects = fill(source, [0, 1, *range(1000, 41_000, 1000), 2 << 20])
    big = max(objects, key=lambda sha: len(objects[sha]))
    keep_loose = next(sha for sha in objects if len(objects[sha]) == 1)
    pushed = Recorder()
    report = remote.push(source, objects, progress=pushed, loose={keep_loose})
    total = sum(len(data) for data in objects.values())
    assert (report.transferred, report.bytes) == (len(objects), total)
    assert (pushed.objects, pushed.nbytes) == (len(objects), total)

    held = contents(remote)
    assert set(held.loose) == {big, keep_loose}
    assert len(held.packs) > 1
    assert held.objects() == {sha: len(data) for sha, data in objects.items()}
    assert remote.missing(objects) == set()

    target = new_cache(tmp_path / "b")
    pulled = Recorder()
    report = remote.pull(target, objects, progress=pulled)
    assert (report.transferred, report.bytes) == (len(objects), total)
    assert (pulled.objects, pulled.nbytes) == (len(objects), total)
    for sha, data in objects.items():
        assert target.read_bytes(sha) == data
    # The indexes were kept: the next question about the remote reads none of them again.
    assert {p.name for p in target.pack_indexes.iterdir()} == {f"{p}.idx" for p in held.packs}


def test_a_damaged_local_copy_of_an_index_is_read_again_from_the_remote(
    remote: Remote, tmp_path: Path
) -> None:
    source = new_cache(tmp_path / "a")
    objects = fill(source, [1000] * 40)
    remote.push(source, objects)
    target = new_cache(tmp_path / "b")
    remote.pull(target, objects)
    [kept] = target.pack_indexes.iterdir()
    good = kept.read_bytes()
    kept.chmod(0o644)
    kept.write_bytes(b"{not json")
    lost = next(iter(objects))
    target.remove(lost)
    assert remote.pull(target, objects).transferred == 1
    assert target.read_bytes(lost) == objects[lost]
    assert kept.read_bytes() == good


def test_a_pull_of_a_few_packed_objects_reads_only_their_ranges(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packs, "READ_GAP", 0)  # every object not adjacent to another: a read
    source = new_cache(tmp_path / "a")
    objects = sorted(fill(source, [10_000] * 40))
    remote.push(source, objects)
    reads: list[tuple[str, int, int | None]] = []
    original = packs.spans

    def spy(wanted: Any, held: Any) -> Any:
        found = original(wanted, held)
        reads.extend((span.pack, span.start, span.end) for span in found[0])
        return found

    monkeypatch.setattr(packs, "spans", spy)
    target = new_cache(tmp_path / "b")
    wanted = [objects[3], objects[4], objects[20]]  # two neighbours, one alone
    assert remote.pull(target, wanted).transferred == 3
    assert sorted(end - start for _, start, end in reads) == [10_000, 20_000]
    assert set(target.objects()) == set(wanted)


def test_a_damaged_packed_object_is_refused_and_the_others_arrive(
    remote: Remote, tmp_path: Path
) -> None:
    objects, pack, index = one_pushed_pack(remote, tmp_path)
    victim, (offset, _size) = sorted(index.objects.items(), key=lambda item: item[1])[5]
    rewrite_pack(remote, pack, lambda body: flip_byte(body, offset))

    target = new_cache(tmp_path / "b")
    with pytest.raises(ArtifactCorruptedError, match=f"first: {victim}"):
        remote.pull(target, objects)
    assert set(target.objects()) == set(objects) - {victim}
    for sha in target.objects():
        assert target.read_bytes(sha) == objects[sha]


def test_ranges_read_one_after_another_into_one_buffer_hold_their_own_bytes(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel.data.transfer as transfer

    monkeypatch.setattr(transfer, "PACK_BUFFERS", 1)  # every range reuses the same buffer
    monkeypatch.setattr(packs, "READ_GAP", 0)
    source = new_cache(tmp_path / "a")
    objects = sorted(fill(source, [5000 + i for i in range(60)]))
    remote.push(source, objects)
    target = new_cache(tmp_path / "b")
    wanted = objects[::3]  # twenty separate ranges of different lengths
    assert remote.pull(target, wanted).transferred == len(wanted)
    for sha in wanted:
        assert target.read_bytes(sha) == (source.read_bytes(sha))


def test_a_truncated_pack_is_one_clear_error_and_stores_nothing_of_it(
    remote: Remote, tmp_path: Path
) -> None:
    objects, pack, _index = one_pushed_pack(remote, tmp_path)
    rewrite_pack(remote, pack, lambda body: body[: len(body) // 2])
    target = new_cache(tmp_path / "b")
    with pytest.raises(StoreError, match=pack):
        remote.pull(target, objects)
    assert set(target.objects()) == set()


def test_a_pack_without_its_index_is_invisible_and_a_rerun_sends_again(
    remote: Remote, tmp_path: Path
) -> None:
    source = new_cache(tmp_path / "a")
    objects = fill(source, [2000] * 40)
    remote.push(source, objects)
    (pack,) = contents(remote).packs
    delete_blob(remote, packs.index_name(pack))  # as if the push died between the two PUTs
    fresh = Remote(remote.name, remote.url, remote.options, remote.jobs)
    assert fresh.missing(objects) == set(objects)
    assert fresh.push(source, objects).transferred == len(objects)
    assert list(contents(fresh).packs) == [pack]  # the same objects make the same pack

    # Deleting ignores what is absent (an index-less pack has no index to delete).
    delete_blob(fresh, packs.index_name(pack))
    delete_objects(fresh, [hashlib.sha256(b"never pushed").hexdigest()], whole_packs=[pack])
    assert contents(fresh).objects() == {}


def one_pushed_pack(remote: Remote, tmp_path: Path) -> tuple[dict[str, bytes], str, PackIndex]:
    """Forty small objects pushed from a new cache: they make one pack. Returns the objects
    (sha256 -> bytes), the pack's name and its index."""
    source = new_cache(tmp_path / "a")
    objects = fill(source, [3000] * 40)
    remote.push(source, objects)
    [(pack, index)] = contents(remote).packs.items()
    return objects, pack, index


def rewrite_pack(remote: Remote, pack: str, change: Callable[[bytes], bytes]) -> None:
    """Replace the pack's blob on the remote with ``change`` of its bytes (its index stays)."""
    replace_blob(remote, packs.pack_name(pack), change(packs_bytes(remote, pack)))


def flip_byte(data: bytes, offset: int) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 0xFF
    return bytes(changed)


def packs_bytes(remote: Remote, pack: str) -> bytes:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(f"{remote.url}/{packs.pack_name(pack)}", **dict(remote.options))
    data: bytes = fs.cat_file(path)
    return data


def replace_blob(remote: Remote, name: str, data: bytes) -> None:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(f"{remote.url}/{name}", **dict(remote.options))
    fs.pipe_file(path, data)


def delete_blob(remote: Remote, name: str) -> None:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(f"{remote.url}/{name}", **dict(remote.options))
    fs.rm_file(path)
