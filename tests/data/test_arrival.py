"""keel.data.arrival: a large download hashed, written into the cache with direct I/O and into
the workspace files waiting for it, as its bytes arrive — named only once verified.

The size threshold and the block size are lowered so that small objects take the path."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keel.data.arrival as arrival_module
import keel.data.cache as cache_module
from keel.data import direct_io
from keel.data.arrival import Arrival
from keel.data.cache import DataCache
from keel.data.remote import Remote
from keel.data.s3_raw import get
from keel.errors import ArtifactCorruptedError
from tests.data.remote_support import (
    fill,
    new_cache,
    overwrite_on_remote,
)

BLOCK = 64 << 10
THRESHOLD = 100_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def small_arrivals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_io, "BLOCK", BLOCK)
    monkeypatch.setattr(cache_module, "DIRECT_BYTES", THRESHOLD)


def opened(cache: DataCache, digest: str, size: int, copies: list[Path]) -> Arrival:
    arrival = Arrival.open(cache, digest, size, lambda _: copies)
    if arrival is None:
        pytest.skip("the cache's filesystem lacks O_DIRECT or unnamed files")
    return arrival


def feed(arrival: Arrival, data: bytes, cuts: list[int]) -> None:
    """Hand ``data`` over in pieces ending at ``cuts`` (each within one buffer)."""
    at = 0
    while at < len(data):
        view = arrival.buffer()
        end = min(len(data), at + len(view), *(c for c in cuts if c > at))
        view[: end - at] = data[at:end]
        arrival.take(view[: end - at])
        at = end


def leftovers(*folders: Path) -> list[str]:
    return [name for folder in folders for name in os.listdir(folder) if "keel-tmp" in name]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(min_value=THRESHOLD, max_value=5 * BLOCK + 4097),
    cuts=st.lists(st.integers(min_value=1, max_value=5 * BLOCK + 4097), max_size=5),
    copies=st.integers(min_value=0, max_value=2),
    restart=st.booleans(),
)
def test_an_arrival_stores_the_object_and_its_copies_byte_for_byte(
    tmp_path_factory: pytest.TempPathFactory, size: int, cuts: list[int], copies: int, restart: bool
) -> None:
    root = tmp_path_factory.mktemp("arrival")
    cache = new_cache(root / "cache")
    data = os.urandom(size)
    paths = [root / "work" / f"sub{i}" / "file.bin" for i in range(copies)]
    arrival = opened(cache, sha(data), size, paths)
    if restart:  # a failed attempt's bytes are forgotten
        feed(arrival, os.urandom(size // 2), cuts)
        arrival.restart()
    feed(arrival, data, cuts)
    assert arrival.size == size
    for path in paths:
        assert not path.exists()  # nothing named before the object is verified
    arrival.finish()
    assert cache.read_bytes(sha(data)) == data
    assert os.stat(cache.path_of(sha(data))).st_mode & 0o777 == 0o444
    for path in paths:
        assert path.read_bytes() == data
    assert os.listdir(cache.root / "tmp") == []
    assert not leftovers(*(p.parent for p in paths))


def test_bytes_that_hash_wrong_are_refused_and_nothing_is_named(tmp_path: Path) -> None:
    cache = new_cache(tmp_path / "cache")
    data = os.urandom(THRESHOLD + 5000)
    path = tmp_path / "work" / "file.bin"
    arrival = opened(cache, sha(data), len(data), [path])
    feed(arrival, data[:-1] + bytes([data[-1] ^ 1]), [])
    with pytest.raises(ArtifactCorruptedError, match=sha(data)):
        arrival.finish()
    assert not cache.has(sha(data))
    assert not path.exists()
    assert os.listdir(path.parent) == []
    assert os.listdir(cache.root / "tmp") == []


def test_a_workspace_file_that_appeared_meanwhile_is_replaced(tmp_path: Path) -> None:
    cache = new_cache(tmp_path / "cache")
    data = os.urandom(THRESHOLD)
    path = tmp_path / "work" / "file.bin"
    arrival = opened(cache, sha(data), len(data), [path])
    feed(arrival, data, [])
    path.write_bytes(b"written by someone else meanwhile")
    arrival.finish()
    assert path.read_bytes() == data
    assert os.listdir(path.parent) == ["file.bin"]


class _NoUnnamedFiles:
    """The os module as keel.data.arrival sees it on a filesystem without O_TMPFILE."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def open(path: object, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "unnamed files are not supported here")
        return os.open(path, flags, mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("intact", [True, False])
def test_without_unnamed_files_copies_wait_under_a_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, intact: bool
) -> None:
    monkeypatch.setattr(arrival_module, "os", _NoUnnamedFiles())
    cache = new_cache(tmp_path / "cache")
    data = os.urandom(THRESHOLD + 3000)
    path = tmp_path / "work" / "file.bin"
    arrival = opened(cache, sha(data), len(data), [path])
    feed(arrival, data if intact else data[:-1] + bytes([data[-1] ^ 1]), [])
    assert not path.exists()
    assert len(leftovers(path.parent)) == 1  # the copy, under its temporary name
    if intact:
        arrival.finish()
        assert path.read_bytes() == data
    else:
        with pytest.raises(ArtifactCorruptedError, match=sha(data)):
            arrival.finish()
        assert not path.exists()
    assert os.listdir(path.parent) == (["file.bin"] if intact else [])


def test_small_objects_and_linking_caches_take_the_usual_path(tmp_path: Path) -> None:
    cache = new_cache(tmp_path / "cache")
    assert Arrival.open(cache, "0" * 64, THRESHOLD - 1, None) is None
    asked: list[str] = []
    linking = DataCache(tmp_path / "linking", ["hardlink", "copy"])
    arrival = Arrival.open(linking, "1" * 64, THRESHOLD, lambda s: asked.append(s) or [])
    if arrival is not None:
        arrival.discard()
    assert asked == []  # workspace files there are hard links to the object, made later


# -- through the remotes ---------------------------------------------------------------------


def test_a_pull_writes_claimed_workspace_files_before_telling_of_the_object(
    remote: Remote, tmp_path: Path
) -> None:
    source = new_cache(tmp_path / "a")
    objects = fill(source, [THRESHOLD + 1, 3 * BLOCK + 17, 1000])
    remote.push(source, objects)
    target = new_cache(tmp_path / "b")
    work = tmp_path / "work"
    claimed: dict[str, Path] = {}

    def copies(digest: str) -> list[Path]:
        claimed[digest] = work / digest[:8]
        return [claimed[digest]]

    told: list[str] = []

    def stored(digest: str) -> None:
        told.append(digest)
        if digest in claimed:  # named before `stored`, whole
            assert claimed[digest].read_bytes() == objects[digest]

    sizes = {digest: len(data) for digest, data in objects.items()}
    report = remote.pull(target, list(objects), sizes=sizes, stored=stored, copies=copies)
    assert report.transferred == 3
    assert sorted(told) == sorted(objects)
    for digest, data in objects.items():
        assert target.read_bytes(digest) == data
    large = {digest for digest, data in objects.items() if len(data) >= THRESHOLD}
    if remote.protocol != "memory" and remote.options.get("config_kwargs") is None:
        assert set(claimed) == large  # local folders and the lean S3 client receive directly
    else:
        assert claimed == {}  # fsspec and botocore write whole files: copied later instead


def test_a_tampered_large_object_leaves_neither_cache_object_nor_workspace_file(
    remote: Remote, tmp_path: Path
) -> None:
    source = new_cache(tmp_path / "a")
    objects = fill(source, [THRESHOLD + 4096])
    [digest] = objects
    remote.push(source, objects)
    good = objects[digest]
    overwrite_on_remote(remote, digest, good[:-1] + bytes([good[-1] ^ 1]))
    target = new_cache(tmp_path / "b")
    work = tmp_path / "work"
    work.mkdir()
    told: list[str] = []
    with pytest.raises(ArtifactCorruptedError, match=digest):
        remote.pull(
            target,
            [digest],
            sizes={digest: len(good)},
            stored=told.append,
            copies=lambda d: [work / "file.bin"],
        )
    assert told == []
    assert not target.has(digest)
    assert os.listdir(work) == []
    assert os.listdir(target.root / "tmp") == []


def test_checkout_of_a_fresh_clone_writes_large_files_as_they_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from keel.data import add, checkout, status
    from keel.data.cache import cache_for
    from keel.data.remote import remote_for
    from keel.project import Project, init_project
    from tests.data.gitrepo import git_env, init_repo
    from tests.data.helpers import write

    git_env(monkeypatch, tmp_path)
    root = tmp_path / "repo"
    init_project(root)
    init_repo(root)
    remotes = {"data.remotes": {"r": {"url": str(tmp_path / "remote")}}}
    project = Project(root, overrides=remotes, environ={})
    files = {"big.bin": os.urandom(THRESHOLD + 3), "sub/small.bin": os.urandom(500)}
    for name, data in files.items():
        write(root / "data" / name, data)
    add(project, ["data"])
    cache = cache_for(project)
    remote_for(project).push(cache, set(cache.objects()))
    for digest in set(cache.objects()):
        cache.remove(digest)
    shutil.rmtree(root / "data")  # a fresh clone: pointers, no data

    linked: list[str] = []
    real_link_to = DataCache.link_to

    def link_to(self: DataCache, digest: str, dest: Path) -> str:
        linked.append(dest.name)
        return real_link_to(self, digest, dest)

    monkeypatch.setattr(DataCache, "link_to", link_to)
    try:
        report = checkout(project)
        assert (report.fetched, report.written) == (3, 2)  # the manifest and both files
        assert {name: (root / "data" / name).read_bytes() for name in files} == files
        assert linked == ["small.bin"]  # the large file came straight from its download
        assert status(project).clean
    finally:
        project.close()


# -- the raw GET -----------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Collect:
    """A Receiver keeping what it is given, with small buffers."""

    def __init__(self, size: int) -> None:
        self._buffers = [bytearray(size), bytearray(size)]
        self._turn = 0
        self.data = bytearray()

    def buffer(self) -> memoryview:
        self._turn ^= 1
        return memoryview(self._buffers[self._turn])

    def take(self, view: memoryview) -> None:
        self.data += view


def _get(answer: Callable[[bytes], bytes], receiver: Collect) -> tuple[int, bytes, bytes]:
    """Run get() against a server sending ``answer(request head)``, in pieces."""

    async def main() -> tuple[int, bytes, bytes]:
        requests: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            requests.append(head)
            raw = answer(head)
            for start in range(0, len(raw), 7777):
                writer.write(raw[start : start + 7777])
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            got = await get("127.0.0.1", port, "/b/k", {"Host": "x"}, receiver, lambda n: None)
        finally:
            server.close()
        return got.status, got.body, requests[0]

    return asyncio.run(main())


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=100_000),
    buffer=st.integers(min_value=1, max_value=40_000),
    framing=st.sampled_from(["length", "chunked"]),
)
def test_a_get_delivers_the_body_in_order_whatever_the_framing(
    size: int, buffer: int, framing: str
) -> None:
    body = os.urandom(size)

    def answer(head: bytes) -> bytes:
        if framing == "length":
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body
        chunked = b"%x\r\n%s\r\n" % (size, body) if size else b""
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n"

    receiver = Collect(buffer)
    status, answer_body, request = _get(answer, receiver)
    assert (status, answer_body) == (200, b"")
    assert bytes(receiver.data) == body
    assert request.startswith(b"GET /b/k HTTP/1.1\r\n")
    assert b"Connection: close" in request


def test_a_get_returns_an_error_answer_whole_and_delivers_nothing() -> None:
    error = b"<Error><Code>NoSuchKey</Code></Error>"
    receiver = Collect(1000)
    status, body, _ = _get(
        lambda _: b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(error) + error,
        receiver,
    )
    assert (status, body) == (404, error)
    assert receiver.data == b""


def test_a_get_cut_off_mid_body_is_a_connection_error() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 9000\r\n\r\n" + bytes(5000)
    with pytest.raises(ConnectionError, match="after 5000 of 9000"):
        _get(lambda _: cut, Collect(64))
