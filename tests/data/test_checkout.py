"""`keel.data.checkout`: the workspace follows the pointer files across git commits, through
the hooks too; every refusal happens before a single workspace file is touched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.data import add, checkout, install_hooks, status
from keel.data.cache import cache_for
from keel.data.manifest import parse_manifest
from keel.errors import ArtifactCorruptedError, InvalidInputError, NotFoundError, StateError
from keel.project import Project, init_project
from tests.data.gitrepo import commit_all, git, git_env, init_repo
from tests.data.helpers import settle, write

V1 = {
    "data/train.csv": b"id,label\n1,0\n2,1\n",
    "data/images/cats/a.png": b"cat a v1",
    "data/images/cats/b.png": b"cat b",
    "data/images/dogs/c.png": b"dog c",
}
V2 = {
    "data/train.csv": b"id,label\n1,0\n2,1\n3,1\n",
    "data/images/cats/a.png": b"cat a v2 (relabelled)",
    "data/images/cats/b.png": b"cat b",
    "data/images/birds/new.png": b"a new folder in v2",  # dogs/ is gone in v2
}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    git_env(monkeypatch, tmp_path)
    root = tmp_path / "repo"
    init_project(root)
    init_repo(root)
    project = Project(root, environ={})
    yield project
    project.close()


def put(project: Project, files: dict[str, bytes]) -> None:
    for rel in ("data/images", "data/train.csv"):
        target = project.root / rel
        if target.is_dir():
            import shutil

            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for rel, data in files.items():
        write(project.root / rel, data)


def data_files(project: Project) -> dict[str, bytes]:
    root = project.root / "data"
    return {
        p.relative_to(project.root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".keel") and p.name != ".gitignore"
    }


@pytest.fixture
def two_commits(repo: Project) -> tuple[str, str]:
    put(repo, V1)
    add(repo, ["data/train.csv", "data/images"])
    first = commit_all(repo.root, "v1")
    put(repo, V2)
    add(repo, ["data/train.csv", "data/images"])
    second = commit_all(repo.root, "v2")
    return first, second


def test_checkout_at_a_revision_restores_the_bytes_of_that_commit(
    repo: Project, two_commits: tuple[str, str]
) -> None:
    first, second = two_commits
    report = checkout(repo, rev=first)
    assert data_files(repo) == V1
    assert sorted(report.restored) == ["data/images", "data/train.csv"]
    assert not (repo.root / "data" / "images" / "birds").exists()  # emptied folders go too
    assert git(repo.root, "status", "--porcelain").splitlines() == [
        " M data/images.keel",
        " M data/train.csv.keel",
    ]  # the pointer files are those of the revision too
    assert status(repo).clean

    checkout(repo, rev=second)
    assert data_files(repo) == V2
    assert git(repo.root, "status", "--porcelain") == ""
    again = checkout(repo, rev=second)
    assert again.restored == []
    assert again.written == 0


def test_checkout_follows_a_plain_git_checkout(repo: Project, two_commits: tuple[str, str]) -> None:
    first, _ = two_commits
    git(repo.root, "checkout", "-q", first)
    assert data_files(repo) == V2  # git moved the pointers, not the ignored data
    report = checkout(repo)
    assert data_files(repo) == V1
    assert report.deleted == 1
    assert report.written == 3


def test_hooks_make_git_checkout_restore_data(repo: Project, two_commits: tuple[str, str]) -> None:
    first, _ = two_commits
    hooks = repo.root / ".git" / "hooks"
    (hooks / "post-checkout").write_text('#!/bin/sh\necho earlier hook >> "$0.log"\n')
    os.chmod(hooks / "post-checkout", 0o755)
    written = install_hooks(repo)
    assert [p.name for p in written] == ["post-checkout", "post-merge"]
    assert install_hooks(repo) == []  # idempotent
    git(repo.root, "checkout", "-q", first)
    assert data_files(repo) == V1
    git(repo.root, "checkout", "-q", "main")
    assert data_files(repo) == V2
    git(repo.root, "checkout", "-q", "-b", "old", first)
    assert data_files(repo) == V1
    git(repo.root, "merge", "-q", "--ff-only", "main")  # what `git pull` does: post-merge
    assert data_files(repo) == V2
    assert (hooks / "post-checkout.pre-keel").is_file()  # the earlier hook is kept and runs
    assert (hooks / "post-checkout.pre-keel.log").read_text().count("earlier hook") == 3


def test_a_project_in_a_subfolder_of_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git_env(monkeypatch, tmp_path)
    top = tmp_path / "mono"
    top.mkdir()
    init_repo(top)
    init_project(top / "ml")
    project = Project(top / "ml", environ={})
    write(project.root / "d.bin", b"one")
    add(project, ["d.bin"])
    first = commit_all(top, "one")
    write(project.root / "d.bin", b"two")
    add(project, ["d.bin"])
    commit_all(top, "two")
    checkout(project, rev=first)
    assert (project.root / "d.bin").read_bytes() == b"one"


def test_files_can_become_folders_and_back(repo: Project) -> None:
    write(repo.root / "thing", b"a file")
    add(repo, ["thing"])
    first = commit_all(repo.root, "file")
    (repo.root / "thing").unlink()
    write(repo.root / "thing" / "inner.txt", b"now a folder")
    add(repo, ["thing"])
    second = commit_all(repo.root, "folder")
    checkout(repo, rev=first)
    assert (repo.root / "thing").read_bytes() == b"a file"
    checkout(repo, rev=second)
    assert (repo.root / "thing" / "inner.txt").read_bytes() == b"now a folder"


def snapshot(project: Project) -> dict[str, tuple[bytes, int]]:
    out = {}
    for p in sorted(project.root.rglob("*")):
        rel = p.relative_to(project.root).as_posix()
        if p.is_file() and not rel.startswith((".git/", ".keel/")):
            out[rel] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def test_unsaved_changes_are_not_overwritten_without_force(
    repo: Project, two_commits: tuple[str, str]
) -> None:
    first, _ = two_commits
    write(repo.root / "data" / "images" / "cats" / "b.png", b"edited, never added")
    before = snapshot(repo)
    with pytest.raises(StateError, match=r"data/images/cats/b\.png.*--force"):
        checkout(repo, rev=first)
    assert snapshot(repo) == before
    checkout(repo, rev=first, force=True)
    assert data_files(repo) == V1


def test_a_missing_object_without_a_remote_changes_nothing(
    repo: Project, two_commits: tuple[str, str]
) -> None:
    first, _ = two_commits
    cache_for(repo).remove(sha_of(V1["data/images/cats/a.png"]))
    before = snapshot(repo)
    with pytest.raises(NotFoundError, match="no data remote is configured"):
        checkout(repo, rev=first)
    assert snapshot(repo) == before


def test_a_corrupt_cache_object_is_refused_before_anything_is_written(
    repo: Project, two_commits: tuple[str, str]
) -> None:
    first, _ = two_commits
    target = cache_for(repo).path_of(sha_of(V1["data/train.csv"]))
    target.chmod(0o644)
    target.write_bytes(b"id,label\n9,9\n2,1\n")  # same size, other bytes
    settle(target)
    before = snapshot(repo)
    with pytest.raises(ArtifactCorruptedError, match="corrupted"):
        checkout(repo, rev=first)
    assert snapshot(repo) == before


def test_a_hand_edited_pointer_or_a_bad_revision_changes_nothing(
    repo: Project, two_commits: tuple[str, str]
) -> None:
    pointer = repo.root / "data" / "train.csv.keel"
    pointer.write_text(pointer.read_text().replace("kind: file", "kind: folder"))
    before = snapshot(repo)
    with pytest.raises(InvalidInputError, match=r"train\.csv\.keel.*kind"):
        checkout(repo)
    with pytest.raises(InvalidInputError, match="git revision 'no-such-tag' not found"):
        checkout(repo, rev="no-such-tag")
    assert snapshot(repo) == before


def test_missing_objects_are_fetched_from_the_remote(
    tmp_path: Path, repo: Project, two_commits: tuple[str, str]
) -> None:
    from keel.data.remote import remote_for

    first, _ = two_commits
    project = Project(
        repo.root, overrides={"data.remotes": {"r": {"url": str(tmp_path / "remote")}}}, environ={}
    )
    cache = cache_for(project)
    objects = set(cache.objects())
    remote_for(project).push(cache, objects)
    for sha in objects:
        cache.remove(sha)
    report = checkout(project, rev=first)
    assert data_files(project) == V1
    # Only what must be written: train.csv v1, the v1 manifest, cats/a v1 and dogs/c
    # (cats/b.png is the same in both versions and stays as it is).
    assert report.fetched == 4
    manifest = parse_manifest(cache.read_bytes(git_pointer_sha(project, "data/images")))
    assert {e.path for e in manifest} == {"cats/a.png", "cats/b.png", "dogs/c.png"}


def sha_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def git_pointer_sha(project: Project, rel: str) -> str:
    from keel.data.pointer import read_pointer

    return read_pointer(project.root / f"{rel}.keel", project.root).sha256


def test_a_fresh_path_fills_while_objects_arrive_and_an_existing_one_waits(
    tmp_path: Path, repo: Project, two_commits: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """data/images is absent (a fresh clone's state): its files are written as their objects
    arrive. data/train.csv exists at v2: it changes only once everything is fetched — and
    when an object is missing everywhere, it does not change at all."""
    import shutil

    import keel.data.restore as restore
    import keel.data.transfer as transfer
    from keel.data.remote import remote_for

    first, _ = two_commits
    project = Project(
        repo.root, overrides={"data.remotes": {"r": {"url": str(tmp_path / "remote")}}}, environ={}
    )
    cache = cache_for(project)
    remote_for(project).push(cache, set(cache.objects()))
    for sha in set(cache.objects()):
        cache.remove(sha)
    shutil.rmtree(project.root / "data" / "images")

    events: list[str] = []
    real_submit, real_pull = restore._Writers.submit, transfer.pull

    # Writes are recorded when handed to the writer threads (which may run them a moment
    # later): that hand-off is what happens while objects still arrive, or only after.
    def submit_spy(
        self: restore._Writers, size: int, cache: object, root: Path, rel: str, sha: str
    ) -> object:
        events.append(f"write {rel}")
        return real_submit(self, size, cache, root, rel, sha)  # type: ignore[arg-type]

    def pull_spy(*args: object, **kwargs: object) -> object:
        report = real_pull(*args, **kwargs)  # type: ignore[arg-type]
        events.append("pull done")
        return report

    monkeypatch.setattr(restore._Writers, "submit", submit_spy)
    monkeypatch.setattr(transfer, "pull", pull_spy)
    checkout(project, rev=first)
    assert data_files(project) == V1
    last_pull = max(i for i, event in enumerate(events) if event == "pull done")
    before_end = {event for event in events[:last_pull] if event.startswith("write")}
    assert "write data/images/cats/a.png" in before_end  # written while fetching
    assert "write data/train.csv" not in before_end  # existing: only after everything
    assert status(project).clean

    # Now v2 of train.csv is needed and its object is nowhere: the existing file stays.
    (tmp_path / "remote").rename(tmp_path / "gone")
    shutil.rmtree(project.root / "data" / "images")
    for sha in set(cache.objects()):
        cache.remove(sha)
    train = (project.root / "data" / "train.csv").read_bytes()
    with pytest.raises(NotFoundError):
        checkout(project)
    assert (project.root / "data" / "train.csv").read_bytes() == train


def test_a_full_disk_while_writing_the_workspace_is_one_clear_error(
    repo: Project, two_commits: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from keel.data.cache import DataCache
    from keel.errors import StoreError

    first, _ = two_commits

    def full(self: DataCache, sha256: str, dest: Path) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DataCache, "link_to", full)
    with pytest.raises(StoreError, match=r"cannot write .*data.* from the data cache: .*No space"):
        checkout(repo, rev=first)
