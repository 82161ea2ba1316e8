"""`keel.data.add` and `keel.data.status`: files and folders into the cache, pointer files and
.gitignore entries out; unchanged data never rehashed; the cache never corrupted by edits."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keel.data import add, status, tree
from keel.data.cache import cache_for
from keel.data.manifest import parse_manifest
from keel.data.pointer import read_pointer
from keel.errors import InvalidInputError, NotFoundError, StoreError
from keel.project import Project
from tests.data.helpers import HashCounter, settle, write


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> HashCounter:
    count = HashCounter()
    monkeypatch.setattr(tree, "hash_files", count)
    return count


@pytest.fixture
def images(sqlite_project: Project) -> dict[str, bytes]:
    files = {f"{d}/{i}.png": os.urandom(100 + i) for d in ("cats", "dogs") for i in range(5)}
    for name, data in files.items():
        write(sqlite_project.root / "data" / "images" / name, data)
    return files


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".keel/" not in p.relative_to(root).as_posix() + "/"
    }


def test_add_a_file(sqlite_project: Project) -> None:
    root = sqlite_project.root
    data = os.urandom(5000)
    write(root / "data" / "train.csv", data)
    [pointer] = add(sqlite_project, ["data/train.csv"])
    assert (pointer.path, pointer.sha256, pointer.size, pointer.files, pointer.kind) == (
        "data/train.csv",
        sha(data),
        5000,
        1,
        "file",
    )
    assert read_pointer(root / "data" / "train.csv.keel", root) == pointer
    assert cache_for(sqlite_project).read_bytes(sha(data)) == data
    assert (root / "data" / ".gitignore").read_text().splitlines() == ["/train.csv"]
    assert (root / "data" / "train.csv").read_bytes() == data


def test_add_a_folder(sqlite_project: Project, images: dict[str, bytes]) -> None:
    root = sqlite_project.root
    [pointer] = add(sqlite_project, [root / "data" / "images"])  # absolute paths work too
    assert pointer.kind == "dir"
    assert pointer.files == 10
    assert pointer.size == sum(map(len, images.values()))
    cache = cache_for(sqlite_project)
    entries = parse_manifest(cache.read_bytes(pointer.sha256))
    assert {e.path: cache.read_bytes(e.sha256) for e in entries} == images
    assert (root / "data" / ".gitignore").read_text().splitlines() == ["/images"]
    add(sqlite_project, ["data/images"])
    assert (root / "data" / ".gitignore").read_text().splitlines() == ["/images"]  # once


def test_the_same_folder_content_gives_the_same_hash(
    sqlite_project: Project, images: dict[str, bytes]
) -> None:
    [first] = add(sqlite_project, ["data/images"])
    copy = sqlite_project.root / "copy"
    for name, data in images.items():
        write(copy / name, data, age=50)  # other mtimes, other inodes
    [second] = add(sqlite_project, ["copy"])
    assert second.sha256 == first.sha256


def test_unchanged_data_is_not_hashed_again(
    sqlite_project: Project, images: dict[str, bytes], counter: HashCounter
) -> None:
    write(sqlite_project.root / "data" / "train.csv", b"a,b\n1,2\n")
    add(sqlite_project, ["data/images", "data/train.csv"])
    assert counter.files == 11
    add(sqlite_project, ["data/images", "data/train.csv"])
    report = status(sqlite_project)
    assert counter.files == 11  # re-add and status: every hash from the stat cache
    assert report.clean
    assert [p.state for p in report.paths] == ["ok", "ok"]

    write(sqlite_project.root / "data" / "images" / "cats" / "0.png", b"a new cat")
    report = status(sqlite_project)
    assert counter.files == 12  # only the changed file
    assert report.modified == ["data/images"]
    assert report.paths[0].detail == "1 changed"


def test_a_just_modified_file_is_hashed_again_until_it_settles(
    sqlite_project: Project, counter: HashCounter
) -> None:
    file = sqlite_project.root / "fresh.bin"
    file.write_bytes(b"written this instant")  # inside the racy window
    add(sqlite_project, ["fresh.bin"])
    add(sqlite_project, ["fresh.bin"])
    assert counter.files == 2
    settle(file)
    add(sqlite_project, ["fresh.bin"])
    add(sqlite_project, ["fresh.bin"])
    assert counter.files == 3


def test_status_reports_each_kind_of_difference(
    sqlite_project: Project, images: dict[str, bytes]
) -> None:
    root = sqlite_project.root
    write(root / "a.bin", b"a")
    write(root / "b.bin", b"b")
    add(sqlite_project, ["a.bin", "b.bin", "data/images"])
    (root / "a.bin").unlink()
    cache = cache_for(sqlite_project)
    cache.remove(sha(b"b"))
    (root / "data" / "images" / "dogs" / "1.png").unlink()
    write(root / "data" / "images" / "dogs" / "new.png", b"new")
    write(root / "data" / "images" / "cats" / "2.png", b"changed")
    report = status(sqlite_project)
    by_path = {p.path: p for p in report.paths}
    assert by_path["a.bin"].state == "missing"
    assert by_path["b.bin"].state == "ok"
    assert by_path["b.bin"].not_in_cache == 1
    assert by_path["data/images"].state == "modified"
    assert by_path["data/images"].detail == "1 changed, 1 added, 1 deleted"
    assert report.missing == ["a.bin"]
    assert report.not_in_cache == ["b.bin"]
    assert all(p.not_pushed is None for p in report.paths)
    assert report.remote is None
    assert not report.clean


def test_status_counts_objects_not_pushed_to_the_remote(tmp_path: Path, project_dir: Path) -> None:
    from keel.data.remote import remote_for

    remote_dir = tmp_path / "remote"
    project = Project(
        project_dir,
        overrides={"data.remotes": {"shared": {"url": str(remote_dir)}}},
        environ={},
    )
    for i in range(3):
        write(project.root / "set" / f"{i}.txt", f"row {i}".encode())
    [pointer] = add(project, ["set"])
    report = status(project)
    assert report.remote == "shared"
    assert report.paths[0].not_pushed == 4
    cache = cache_for(project)
    hashes = {pointer.sha256, *(e.sha256 for e in parse_manifest(cache.read_bytes(pointer.sha256)))}
    remote_for(project).push(cache, hashes)
    report = status(project, "shared")
    assert report.paths[0].not_pushed == 0
    assert report.clean


def test_editing_a_workspace_file_never_changes_the_cache(sqlite_project: Project) -> None:
    """Default links (reflink, else copy): the workspace has its own bytes."""
    root = sqlite_project.root
    data = os.urandom(2000)
    write(root / "model-input.bin", data)
    [pointer] = add(sqlite_project, ["model-input.bin"])
    with open(root / "model-input.bin", "r+b") as f:  # edit in place: the dangerous case
        f.write(b"overwritten")
    cache = cache_for(sqlite_project)
    assert cache.verify(pointer.sha256)
    assert cache.read_bytes(pointer.sha256) == data
    assert status(sqlite_project).modified == ["model-input.bin"]


@pytest.fixture
def hardlink_project(project_dir: Path) -> Iterator[Project]:
    project = Project(project_dir, overrides={"data.link": ["hardlink", "copy"]}, environ={})
    yield project
    project.close()


def test_with_hardlinks_an_edit_through_the_link_evicts_the_object(
    hardlink_project: Project,
) -> None:
    """Hardlinks share the object's inode. What protects the cache: the object (and so the
    workspace file) is read-only; a scan that finds the shared file changed removes the object
    (it can be pulled again), so the edited bytes are never served under the old hash."""
    root = hardlink_project.root
    data = b"original rows\n" * 100
    write(root / "rows.txt", data)
    [pointer] = add(hardlink_project, ["rows.txt"])
    cache = cache_for(hardlink_project)
    object_path = cache.path_of(pointer.sha256)
    assert (root / "rows.txt").stat().st_ino == object_path.stat().st_ino
    assert (root / "rows.txt").stat().st_mode & 0o777 == 0o444
    if os.geteuid() != 0:
        with pytest.raises(PermissionError):
            open(root / "rows.txt", "r+b")  # noqa: SIM115 - the open itself must fail
    os.chmod(root / "rows.txt", 0o644)  # root (or a determined user) edits anyway
    with open(root / "rows.txt", "r+b") as f:
        f.write(b"EDITED")
    report = status(hardlink_project)
    assert report.modified == ["rows.txt"]
    assert not cache.has(pointer.sha256)  # evicted: it no longer held its named bytes
    import keel.data

    with pytest.raises(NotFoundError):
        keel.data.open("rows.txt", project=hardlink_project)


def test_add_reports_hashing_progress(sqlite_project: Project, images: dict[str, bytes]) -> None:
    seen: list[tuple[int, int]] = []
    add(sqlite_project, ["data/images"], progress=lambda done, total: seen.append((done, total)))
    total = sum(map(len, images.values()))
    assert seen[0] == (0, total)
    assert seen[-1] == (total, total)


@pytest.mark.parametrize(
    ("make", "argument", "message"),
    [
        (None, "/etc/hostname", "outside the project"),
        (None, "../elsewhere.csv", "outside the project"),
        (None, "missing.csv", "does not exist"),
        (None, ".", "project root"),
        (None, ".keel/keel.db", "inside .keel/"),
        ("data/images.keel", "data/images.keel", "is a pointer file"),
        ("data/images.keel", "data/images/cats", "inside the tracked folder data/images"),
        ("data/images/cats.keel", "data/images", "holds tracked data"),
    ],
)
def test_bad_paths_are_refused_and_nothing_is_written(
    sqlite_project: Project,
    images: dict[str, bytes],
    make: str | None,
    argument: str,
    message: str,
) -> None:
    root = sqlite_project.root
    if make:
        (root / make).write_text("kind: dir\n")
    before = snapshot(root)
    with pytest.raises(InvalidInputError, match=message):
        add(sqlite_project, ["data/images/dogs/0.png", argument])
    assert snapshot(root) == before
    assert not (root / ".keel" / "cache").exists()


def test_the_same_path_twice_is_refused(sqlite_project: Project, images: dict[str, bytes]) -> None:
    with pytest.raises(InvalidInputError, match="twice"):
        add(sqlite_project, ["data/images", sqlite_project.root / "data" / "images"])


def test_a_hand_edited_pointer_stops_status_with_the_fix(sqlite_project: Project) -> None:
    write(sqlite_project.root / "x.bin", b"x")
    add(sqlite_project, ["x.bin"])
    pointer = sqlite_project.root / "x.bin.keel"
    pointer.write_text(pointer.read_text().replace("size: 1", "size: one"))
    with pytest.raises(
        InvalidInputError, match=r"x\.bin\.keel.*size.*git checkout -- x\.bin\.keel"
    ):
        status(sqlite_project)


def test_status_without_pointers_is_empty(sqlite_project: Project) -> None:
    report = status(sqlite_project)
    assert report.paths == []
    assert report.clean


def test_tracked_folders_may_not_hold_special_files(sqlite_project: Project) -> None:
    folder = sqlite_project.root / "odd"
    write(folder / "a.txt", b"a")
    os.mkfifo(folder / "pipe")
    with pytest.raises(InvalidInputError, match="not a regular file"):
        add(sqlite_project, ["odd"])


def _replace_keeping_size_and_mtime(file: Path, data: bytes) -> None:
    """New bytes of the same length under a new inode, dated like the old file."""
    old = file.stat()
    fresh = file.with_name(file.name + ".new")
    fresh.write_bytes(data)
    os.utime(fresh, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(fresh, file)


def _rewrite_keeping_inode_and_mtime(file: Path, data: bytes) -> None:
    """Other bytes (another length) in the same inode, dated like the old file."""
    old = file.stat()
    file.write_bytes(data)
    os.utime(file, ns=(old.st_atime_ns, old.st_mtime_ns))


@pytest.mark.parametrize(
    ("edit", "new_bytes"),
    [(_replace_keeping_size_and_mtime, b"cat-1"), (_rewrite_keeping_inode_and_mtime, b"longer")],
)
def test_a_file_is_rehashed_when_any_of_inode_size_and_mtime_differs(
    sqlite_project: Project,
    counter: HashCounter,
    edit: Callable[[Path, bytes], None],
    new_bytes: bytes,
) -> None:
    root = sqlite_project.root
    for i in range(3):
        write(root / "set" / f"{i}.txt", f"cat-{i + 2}".encode())
    add(sqlite_project, ["set"])
    assert counter.files == 3
    edit(root / "set" / "1.txt", new_bytes)
    report = status(sqlite_project)
    assert counter.files == 4  # the edited file only
    assert report.modified == ["set"]
    assert report.paths[0].detail == "1 changed"
    [pointer] = add(sqlite_project, ["set"])
    assert pointer.size == len(b"cat-2cat-4") + len(new_bytes)
    assert counter.files == 4  # its new stat was remembered


def test_status_without_a_remote_leaves_the_remote_modules_unimported(
    sqlite_project: Project,
) -> None:
    """No remote configured and none named: status has nothing to ask a remote, so it does
    not pay for importing keel.data.remote (a fresh interpreter shows what was imported)."""
    write(sqlite_project.root / "a.bin", b"a")
    add(sqlite_project, ["a.bin"])
    code = (
        "import sys\n"
        "from keel.data import status\n"
        "from keel.project import Project\n"
        f"report = status(Project({str(sqlite_project.root)!r}, environ={{}}))\n"
        "print(report.remote, report.clean, 'keel.data.remote' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "True", "False"]


def test_a_file_changed_after_hashing_is_refused_and_its_object_dropped(
    sqlite_project: Project, images: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are copied into the cache as they are hashed; one rewritten (same size, later
    mtime) after its copy must not leave an object whose bytes its name does not promise."""
    from keel.data.cache import DataCache

    root = sqlite_project.root
    victim = root / "data" / "images" / "cats" / "3.png"
    real_add_file = DataCache.add_file

    def add_then_rewrite(
        self: DataCache, src: str | Path, sha: str, size: int, data: bytes | None = None
    ) -> object:
        stored = real_add_file(self, src, sha, size, data)
        if Path(src) == victim:
            victim.write_bytes(bytes(len(images["cats/3.png"])))  # other bytes, same size
            stamp = victim.stat().st_mtime + 5
            os.utime(victim, (stamp, stamp))
        return stored

    monkeypatch.setattr(DataCache, "add_file", add_then_rewrite)
    with pytest.raises(StoreError, match=r"3\.png changed while it was being added"):
        add(sqlite_project, ["data/images"])
    cache = cache_for(sqlite_project)
    assert not cache.has(hashlib.sha256(images["cats/3.png"]).hexdigest())
    assert not (root / "data" / "images.keel").exists()
