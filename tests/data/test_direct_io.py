"""Large files added are written into the cache with direct I/O while they are hashed: the
object holds exactly the bytes hashed, appears only under its name once complete, and nothing
is left behind when hashing fails."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.data import cache as cache_module
from keel.data import direct_io
from keel.data.cache import DataCache, cache_for
from keel.data.direct_io import DirectWriter
from keel.data.hashing import hash_file, hash_files
from keel.data.links import Linker
from keel.data.workspace import add
from keel.errors import StoreError
from keel.project import Project

from .helpers import write

SMALL_BLOCK = 2 * direct_io.ALIGN  # many blocks (and their hand-offs) in a small file


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_io, "BLOCK", SMALL_BLOCK)


def writer_in(folder: Path) -> DirectWriter:
    folder.mkdir(parents=True, exist_ok=True)
    writer = DirectWriter.open(folder)
    if writer is None:
        pytest.skip(f"no O_TMPFILE with O_DIRECT on the filesystem of {folder}")
    return writer


def source_and_writer(tmp_path: Path, data: bytes) -> tuple[Path, DirectWriter]:
    """A file holding ``data`` and a writer in ``tmp_path/tmp`` to hash it into."""
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    return src, writer_in(tmp_path / "tmp")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(0, 6 * SMALL_BLOCK + 100), seed=st.integers(0, 2**32 - 1))
def test_the_object_holds_exactly_the_bytes_hashed(tmp_path: Path, size: int, seed: int) -> None:
    data = (seed.to_bytes(4, "little") * (size // 4 + 1))[:size]
    src, writer = source_and_writer(tmp_path, data)
    assert hash_file(src, None, writer) == (sha(data), size)
    target = tmp_path / "objects" / f"{size}-{seed}"
    target.parent.mkdir(exist_ok=True)
    stored = writer.publish(target)
    assert stored is not None
    assert stored.st_size == size
    assert target.read_bytes() == data
    assert os.listdir(tmp_path / "tmp") == []  # the file was unnamed until published


def test_a_failed_hash_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, writer = source_and_writer(tmp_path, os.urandom(5 * SMALL_BLOCK))
    calls = 0
    real_wrote = writer.wrote

    def fail_on_third(n: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.EIO, "read error")
        real_wrote(n)

    monkeypatch.setattr(writer, "wrote", fail_on_third)
    with pytest.raises(OSError, match="read error"):
        hash_file(src, None, writer)
    assert writer._fd == -1  # discarded: the unnamed file is gone with its descriptor
    assert os.listdir(tmp_path / "tmp") == []


def test_publishing_onto_an_existing_object_keeps_it(tmp_path: Path) -> None:
    src, writer = source_and_writer(tmp_path, b"new bytes")
    target = tmp_path / "object"
    target.write_bytes(b"old bytes")
    hash_file(src, None, writer)
    assert writer.publish(target) is None
    assert target.read_bytes() == b"old bytes"


def test_a_device_refusing_direct_writes_gets_plain_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL from an O_DIRECT write (an alignment the device does not accept) finishes the
    file with ordinary writes: the object is still whole."""
    data = os.urandom(4 * SMALL_BLOCK + 7)
    src, writer = source_and_writer(tmp_path, data)
    real_pwrite = os.pwrite
    refused = []

    def pwrite(fd: int, view: memoryview, offset: int) -> int:
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and offset >= SMALL_BLOCK:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, view, offset)

    monkeypatch.setattr(direct_io.os, "pwrite", pwrite)
    assert hash_file(src, None, writer)[0] == sha(data)
    target = tmp_path / "object"
    assert writer.publish(target) is not None
    assert target.read_bytes() == data
    assert refused == [SMALL_BLOCK]  # refused once, then written plainly


def test_a_full_disk_is_a_clear_error_naming_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, writer = source_and_writer(tmp_path, os.urandom(3 * SMALL_BLOCK))

    def pwrite(fd: int, view: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_io.os, "pwrite", pwrite)
    with pytest.raises(StoreError, match=r"cannot write into the data cache at .*No space left"):
        hash_file(src, None, writer)
    assert os.listdir(tmp_path / "tmp") == []


def test_only_a_cache_that_would_copy_writes_directly(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100)
    folder = tmp_path / "cache"
    folder.mkdir()
    assert Linker(["copy"]).copies(src, folder)
    assert not Linker(["hardlink", "copy"]).copies(src, folder)
    reflink = Linker(["reflink"])
    assert not reflink.copies(src, folder)  # a reflink or nothing: never a copy
    cache = DataCache(tmp_path / "c", ["hardlink", "copy"])
    assert cache.direct_writer(src, 1 << 30) is None


def test_add_writes_large_files_directly_and_the_objects_are_right(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "DIRECT_BYTES", 1 << 20)
    opened: list[Path] = []
    real_open = DirectWriter.open.__func__  # type: ignore[attr-defined]

    def spy(cls: type[DirectWriter], folder: Path) -> DirectWriter | None:
        writer = real_open(cls, folder)
        if writer is not None:
            opened.append(folder)
        return writer

    monkeypatch.setattr(DirectWriter, "open", classmethod(spy))
    root = sqlite_project.root
    large = {f"big{i}.bin": os.urandom((1 << 20) + 1000 * i + 3) for i in range(3)}
    small = {"small.bin": os.urandom(1000), "under.bin": os.urandom((1 << 20) - 1)}
    for name, data in {**large, **small}.items():
        write(root / "data" / "set" / name, data)
    write(root / "data" / "set" / "same.bin", large["big1.bin"])  # one object for two files
    [pointer] = add(sqlite_project, ["data/set"])
    cache = cache_for(sqlite_project)
    if not opened:
        pytest.skip("the cache's filesystem clones files (reflink) or lacks O_DIRECT")
    assert len(opened) == 4  # each large file, none of the small ones
    for data in [*large.values(), *small.values()]:
        assert cache.read_bytes(sha(data)) == data
        assert os.stat(cache.path_of(sha(data))).st_mode & 0o777 == 0o444
    assert os.listdir(cache.root / "tmp") == []
    assert pointer.files == 6


def test_hash_files_hands_sinks_only_to_files_it_reads_in_blocks(tmp_path: Path) -> None:
    paths = []
    for i, size in enumerate([10, 3 << 20, 2000]):
        paths.append(tmp_path / f"f{i}")
        paths[-1].write_bytes(os.urandom(size))
    asked: list[int] = []

    def sink_for(i: int) -> None:
        asked.append(i)

    results = hash_files(paths, jobs=2, sink_for=sink_for)
    assert asked == [1]
    assert results == [(sha(p.read_bytes()), p.stat().st_size) for p in paths]
