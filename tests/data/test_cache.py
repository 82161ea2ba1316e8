"""The local content-addressed cache: atomic, read-only, verified objects; workspace files made
by reflink, hardlink or copy; parallel hashing."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.data import hashing
from keel.data import links as links_module
from keel.data.cache import DataCache
from keel.data.hashing import hash_file, hash_files
from keel.errors import ArtifactCorruptedError, InvalidInputError, NotFoundError, StoreError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> DataCache:
    return DataCache(tmp_path / "cache", ["reflink", "copy"])


def source(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_copy_is_written_from_the_bytes_hashed_without_reading_the_file_again(
    cache: DataCache, tmp_path: Path
) -> None:
    hashed = os.urandom(5000)
    src = source(tmp_path, bytes(5000))  # rewritten since it was hashed, the same size
    stored = cache.add_file(src, sha(hashed), len(hashed), hashed)
    assert stored is not None
    assert stored.st_size == len(hashed)
    assert cache.path_of(sha(hashed)).read_bytes() == hashed  # the name's bytes, not the file's
    assert cache.path_of(sha(hashed)).stat().st_mode & 0o777 == 0o444


def test_a_hard_linking_cache_links_the_file_even_given_its_bytes(tmp_path: Path) -> None:
    cache = DataCache(tmp_path / "cache", ["hardlink", "copy"])
    data = os.urandom(3000)
    src = source(tmp_path, data)
    cache.add_file(src, sha(data), len(data), data)
    assert cache.path_of(sha(data)).stat().st_ino == src.stat().st_ino


def test_add_file_stores_a_read_only_object_once(cache: DataCache, tmp_path: Path) -> None:
    data = b"hello" * 1000
    src = source(tmp_path, data)
    stored = cache.add_file(src, sha(data), len(data))
    assert stored is not None
    assert stored.st_size == len(data)
    path = cache.path_of(sha(data))
    assert path == cache.root / "objects" / sha(data)[:2] / sha(data)[2:]
    assert path.read_bytes() == data
    assert path.stat().st_mode & 0o777 == 0o444
    assert path.stat().st_ino != src.stat().st_ino  # a copy, not the workspace file
    assert cache.add_file(src, sha(data), len(data)) is None  # already there
    assert list(cache.objects()) == [sha(data)]
    assert not list((cache.root / "tmp").glob("*"))  # no temporary file left (if any made)


def test_a_failed_copy_leaves_no_object_and_no_temp_file(
    cache: DataCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(4096)
    src = source(tmp_path, data)

    def broken(src_fd: int, dst_fd: int, size: int) -> None:
        os.write(dst_fd, b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(links_module, "copy_fds", broken)
    with pytest.raises(StoreError, match="No space left"):
        cache.add_file(src, sha(data), len(data))
    assert not cache.has(sha(data))
    assert not list((cache.root / "tmp").glob("*"))  # no temporary file left (if any made)


def test_a_file_that_changed_size_since_hashing_is_refused(
    cache: DataCache, tmp_path: Path
) -> None:
    src = source(tmp_path, b"now longer than hashed")
    with pytest.raises(StoreError, match="changed while it was being added"):
        cache.add_file(src, sha(b"short"), 5)
    assert not cache.has(sha(b"short"))


def test_copy_and_reflink_links_give_the_workspace_its_own_bytes(
    cache: DataCache, tmp_path: Path
) -> None:
    data = b"versioned bytes"
    cache.add_file(source(tmp_path, data), sha(data), len(data))
    dest = tmp_path / "work" / "file.bin"
    how = cache.link_to(sha(data), dest)
    assert how in ("reflink", "copy")
    assert dest.stat().st_mode & 0o200  # writable: it is the user's file
    with open(dest, "r+b") as f:  # an in-place edit, the dangerous kind
        f.write(b"EDITED")
    assert cache.read_bytes(sha(data)) == data
    assert cache.verify(sha(data))


def test_hardlink_shares_the_inode_and_is_read_only(tmp_path: Path) -> None:
    cache = DataCache(tmp_path / "cache", ["hardlink", "copy"])
    data = b"big data"
    src = source(tmp_path, data)
    cache.add_file(src, sha(data), len(data))
    assert src.stat().st_ino == cache.path_of(sha(data)).stat().st_ino
    assert src.stat().st_mode & 0o777 == 0o444
    dest = tmp_path / "other.bin"
    assert cache.link_to(sha(data), dest) == "hardlink"
    assert dest.stat().st_ino == src.stat().st_ino


def test_a_link_type_that_fails_falls_back_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DataCache(tmp_path / "cache", ["hardlink", "copy"])
    data = b"x"
    cache.add_file(source(tmp_path, data), sha(data), 1)

    def cross_device(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    assert cache.link_to(sha(data), tmp_path / "w.bin") == "copy"
    only_hardlink = DataCache(tmp_path / "cache", ["hardlink"])
    with pytest.raises(StoreError, match=r"add 'copy' to data\.link"):
        only_hardlink.link_to(sha(data), tmp_path / "w2.bin")


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "temporary-name"])
def test_new_files_are_complete_when_named_with_or_without_unnamed_files(
    unnamed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not unnamed:
        monkeypatch.delattr(os, "O_TMPFILE")  # a platform without it
    cache = DataCache(tmp_path / "cache", ["reflink", "copy"])
    data = os.urandom(3 << 20)
    cache.put_bytes_verified(memoryview(data), sha(data))
    assert cache.read_bytes(sha(data)) == data
    assert cache.path_of(sha(data)).stat().st_mode & 0o777 == 0o444
    with pytest.raises(ArtifactCorruptedError, match="hashes to"):
        cache.put_bytes_verified(b"not it", sha(b"something else"))
    assert not cache.has(sha(b"something else"))
    added = os.urandom(5000)
    stored = cache.add_file(source(tmp_path, added, "added.bin"), sha(added), len(added))
    assert stored is not None
    assert stored.st_size == len(added)
    assert cache.read_bytes(sha(added)) == added
    assert cache.path_of(sha(added)).stat().st_mode & 0o777 == 0o444

    dest = tmp_path / "work" / "file.bin"
    assert cache.link_to(sha(data), dest) in ("reflink", "copy")
    assert dest.read_bytes() == data
    assert dest.stat().st_mode & 0o200  # the user's own, writable copy
    assert cache.linker._tmpfile_works is unnamed
    leftovers = [p.name for p in (tmp_path / "work").iterdir()]
    leftovers += [p.name for p in (cache.root / "tmp").glob("*")]
    assert leftovers == ["file.bin"]  # no temporary file stays behind


def test_link_to_replaces_the_destination_atomically(cache: DataCache, tmp_path: Path) -> None:
    data = b"new"
    cache.add_file(source(tmp_path, data), sha(data), 3)
    dest = source(tmp_path, b"old contents", "dest.bin")
    cache.link_to(sha(data), dest)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "dest.bin", "src.bin"]


def test_corrupt_objects_are_refused(cache: DataCache, tmp_path: Path) -> None:
    data = b"original"
    cache.add_file(source(tmp_path, data), sha(data), len(data))
    path = cache.path_of(sha(data))
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    assert not cache.verify(sha(data))
    with pytest.raises(ArtifactCorruptedError, match=sha(data)):
        cache.read_bytes(sha(data))


def test_put_verified_refuses_a_bad_download(cache: DataCache, tmp_path: Path) -> None:
    good = b"payload"
    temp = cache.new_temp()
    temp.write_bytes(b"truncated")
    with pytest.raises(ArtifactCorruptedError, match="refused"):
        cache.put_verified(temp, sha(good))
    assert not temp.exists()
    assert not cache.has(sha(good))
    temp = cache.new_temp()
    temp.write_bytes(good)
    cache.put_verified(temp, sha(good))
    assert cache.read_bytes(sha(good)) == good


def test_missing_objects_and_bad_names(cache: DataCache, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="keel data pull"):
        cache.read_bytes("ab" * 32)
    with pytest.raises(NotFoundError):
        cache.link_to("ab" * 32, tmp_path / "x")
    for bad in ("../../etc/passwd", "AB" * 32, "ab" * 31):
        with pytest.raises(InvalidInputError, match="not a sha256"):
            cache.path_of(bad)
        with pytest.raises(InvalidInputError, match="not a sha256"):
            cache.file_of(bad)
        with pytest.raises(InvalidInputError, match="not a sha256"):
            cache.add_file(tmp_path / "x", bad, 0)
    assert cache.file_of("ab" * 32) == str(cache.path_of("ab" * 32))
    with pytest.raises(InvalidInputError, match=r"data\.link"):
        DataCache(tmp_path, ["symlink"])


def test_present_answers_by_stat_or_by_listing(cache: DataCache, tmp_path: Path) -> None:
    stored = {cache.add_bytes(str(i).encode()) for i in range(40)}
    absent = {sha(f"absent {i}".encode()) for i in range(600)}
    assert cache.present(stored | {next(iter(absent))}) == stored  # few: stat each
    assert cache.present(stored | absent) == stored  # many: list the folders


def test_fingerprint_changes_when_an_object_goes(cache: DataCache, tmp_path: Path) -> None:
    names = [cache.add_bytes(str(i).encode()) for i in range(5)]
    past = os.stat(cache.root).st_mtime_ns - 10**9
    for folder in (cache.root / "objects").iterdir():
        os.utime(folder, ns=(past, past))
    before = cache.fingerprint()
    assert before is not None
    assert cache.fingerprint() == before
    cache.remove(names[0])
    assert cache.fingerprint() != before


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=12), st.integers(1, 4))
def test_parallel_hashing_matches_hashlib(blobs: list[bytes], jobs: int) -> None:
    import tempfile

    # Files of 1,500 bytes or more count as large here (read in chunks, on the large files'
    # threads): both kinds in one call.
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashing, "CHUNK", 1500)
        paths = []
        for i, blob in enumerate(blobs):
            paths.append(Path(folder, str(i)))
            paths[-1].write_bytes(blob)
        seen: list[int] = []
        told: dict[int, tuple[str, int, bytes | None]] = {}

        def then(index: int, digest: str, size: int, data: bytes | None) -> None:
            told[index] = (digest, size, data)

        got = hash_files(paths, jobs=jobs, progress=seen.append, then=then)
        assert got == [(sha(b), len(b)) for b in blobs]
        assert sum(seen) == sum(map(len, blobs))
        whole = {i: (sha(b), len(b), b if len(b) < 1500 else None) for i, b in enumerate(blobs)}
        assert told == whole  # the bytes of each file read whole, none of the others


@given(st.lists(st.tuples(st.binary(max_size=3000), st.sampled_from([0, 0, -1, 1, 700]))))
def test_a_small_file_of_the_size_expected_is_read_once_any_other_to_its_end(
    changes: list[tuple[bytes, int]],
) -> None:
    import tempfile

    # Each file's size as a stat made earlier saw it: the same, or since changed by a few bytes.
    files = [(blob, max(0, len(blob) - change)) for blob, change in changes]
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        paths = [Path(folder, str(i)) for i in range(len(files))]
        for path, (blob, _) in zip(paths, files, strict=True):
            path.write_bytes(blob)
        reads: list[int] = []
        real_read = os.read

        def read(fd: int, n: int) -> bytes:
            reads.append(fd)
            return real_read(fd, n)

        patch.setattr(os, "read", read)
        got = hash_files(paths, [expected for _, expected in files], jobs=1)
        patch.undo()
        assert got == [(sha(blob), len(blob)) for blob, _ in files]
        # One read asking for a byte more than expected; when it brings another count, reads
        # to the end (the rest, if any, then an empty read).
        want = sum(
            1 if len(blob) == expected else 2 if len(blob) <= expected + 1 else 3
            for blob, expected in files
        )
        assert len(reads) == want


def test_small_files_are_hashed_on_one_thread_beside_the_large_files_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "CHUNK", 4096)
    monkeypatch.setattr(hashing, "BATCH_FILES", 2)  # many small batches
    sizes = [9000] * 4 + [100] * 40
    paths = [source(tmp_path, os.urandom(size), f"f{i}") for i, size in enumerate(sizes)]
    threads: dict[int, str] = {}

    def then(index: int, digest: str, size: int, data: bytes | None) -> None:
        threads[index] = threading.current_thread().name

    hash_files(paths, jobs=2, then=then)
    small = {threads[i] for i, size in enumerate(sizes) if size < 4096}
    large = {threads[i] for i, size in enumerate(sizes) if size >= 4096}
    assert len(small) == 1
    assert small.isdisjoint(large)
    assert 1 <= len(large) <= 2


def test_large_files_are_hashed_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    path = source(tmp_path, data)
    chunks: list[int] = []
    assert hash_file(path, chunks.append) == (sha(data), len(data))
    assert len(chunks) == 4


def test_sizes_name_the_held_objects_and_leave_out_the_rest(cache: DataCache) -> None:
    held = {cache.add_bytes(os.urandom(size)): size for size in (0, 1, 5000)}
    absent = hashlib.sha256(b"never added").hexdigest()
    assert cache.sizes([*held, absent]) == held
    with pytest.raises(InvalidInputError, match="not a sha256"):
        cache.sizes(["../../etc/passwd"])
