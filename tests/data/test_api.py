"""`keel.data.open` / `keel.data.resolve`: versioned bytes at the worktree or a git revision,
verified; a run that reads data through Keel records the dataset version for lineage."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import keel.data
from keel.data import add
from keel.data.cache import cache_for
from keel.errors import ArtifactCorruptedError, InvalidInputError, NotFoundError
from keel.project import Project, init_project
from tests.data.gitrepo import commit_all, git_env, init_repo
from tests.data.helpers import write

V1 = b"id,label\n1,0\n"
V2 = b"id,label\n1,0\n2,1\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Project, str]]:
    """A git repository with train.csv and images/ at two commits; returns the first."""
    git_env(monkeypatch, tmp_path)
    root = tmp_path / "repo"
    init_project(root)
    init_repo(root)
    project = Project(root, environ={})
    write(root / "data" / "train.csv", V1)
    write(root / "data" / "images" / "a.png", b"image a v1")
    write(root / "data" / "images" / "sub" / "b.png", b"image b")
    add(project, ["data/train.csv", "data/images"])
    first = commit_all(root, "v1")
    write(root / "data" / "train.csv", V2)
    write(root / "data" / "images" / "a.png", b"image a v2")
    add(project, ["data/train.csv", "data/images"])
    commit_all(root, "v2")
    yield project, first
    project.close()


def test_open_reads_the_version_at_the_worktree_or_a_revision(repo: tuple[Project, str]) -> None:
    project, first = repo
    with keel.data.open("data/train.csv", project=project) as f:
        assert f.read() == V2
    with keel.data.open("data/train.csv", rev=first, project=project) as f:
        assert f.read() == V1
    with keel.data.open("data/train.csv", rev=first, mode="r", project=project) as f:
        assert f.read() == V1.decode()
    with keel.data.open("data/images/a.png", rev=first, project=project) as f:
        assert f.read() == b"image a v1"  # a file inside a tracked folder
    with keel.data.open(project.root / "data/images/sub/b.png", project=project) as f:
        assert f.read() == b"image b"


def test_open_returns_the_versioned_bytes_not_unsaved_edits(repo: tuple[Project, str]) -> None:
    project, _ = repo
    (project.root / "data" / "train.csv").write_bytes(b"edited, not added")
    with keel.data.open("data/train.csv", project=project) as f:
        assert f.read() == V2  # what the pointer (and a run's lineage) names


def test_resolve_gives_hash_size_files_and_uri(repo: tuple[Project, str], tmp_path: Path) -> None:
    project, first = repo
    version = keel.data.resolve("data/train.csv", rev=first, project=project)
    assert version == keel.data.DatasetVersion(
        "data/train.csv", sha(V1), len(V1), 1, f"keel://{sha(V1)}"
    )
    folder = keel.data.resolve("data/images", project=project)
    assert folder.files == 2
    assert folder.size == len(b"image a v2") + len(b"image b")
    assert cache_for(project).has(folder.sha256)  # the manifest object
    inner = keel.data.resolve("data/images/a.png", rev=first, project=project)
    assert inner.sha256 == sha(b"image a v1")
    with_remote = Project(
        project.root,
        overrides={"data.remotes": {"s": {"url": str(tmp_path / "remote")}}},
        environ={},
    )
    uri = keel.data.resolve("data/train.csv", project=with_remote).uri
    assert uri == f"{tmp_path / 'remote'}/objects/{sha(V2)[:2]}/{sha(V2)[2:]}"
    # A file inside a folder is addressed through the folder's manifest (it may be packed).
    inner_uri = keel.data.resolve("data/images/a.png", project=with_remote).uri
    manifest = keel.data.resolve("data/images", project=with_remote).sha256
    assert inner_uri == f"{tmp_path / 'remote'}/objects/{manifest[:2]}/{manifest[2:]}#a.png"


@pytest.mark.parametrize(
    ("path", "kwargs", "error", "message"),
    [
        ("data/other.csv", {}, NotFoundError, "not versioned data"),
        ("data/images/zzz.png", {}, NotFoundError, "not a file in the tracked folder"),
        ("data/images/sub", {}, NotFoundError, "a sub-folder of the tracked folder"),
        ("data/images", {}, InvalidInputError, "is a folder"),
        ("data/train.csv", {"mode": "w"}, InvalidInputError, "mode 'w'"),
        ("data/train.csv", {"rev": "nope"}, InvalidInputError, "git revision 'nope'"),
        ("/etc/hostname", {}, InvalidInputError, "outside the project"),
    ],
)
def test_bad_requests_are_refused(
    repo: tuple[Project, str],
    path: str,
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    project, _ = repo
    with pytest.raises(error, match=message):
        keel.data.open(path, project=project, **kwargs)


def test_corrupt_or_missing_objects_are_never_read(repo: tuple[Project, str]) -> None:
    project, first = repo
    cache = cache_for(project)
    target = cache.path_of(sha(V1))
    target.chmod(0o644)
    target.write_bytes(b"id,label\n9,9\n")
    with pytest.raises(ArtifactCorruptedError, match="corrupted"):
        keel.data.open("data/train.csv", rev=first, project=project)
    cache.remove(sha(V1))
    with pytest.raises(NotFoundError, match="no data remote is configured"):
        keel.data.open("data/train.csv", rev=first, project=project)


def test_open_fetches_a_missing_object_from_the_remote(
    repo: tuple[Project, str], tmp_path: Path
) -> None:
    from keel.data.remote import remote_for

    project, first = repo
    project = Project(
        project.root,
        overrides={"data.remotes": {"s": {"url": str(tmp_path / "remote")}}},
        environ={},
    )
    cache = cache_for(project)
    remote_for(project).push(cache, {sha(V1)})
    cache.remove(sha(V1))
    with keel.data.open("data/train.csv", rev=first, project=project) as f:
        assert f.read() == V1


def predict(frame: Any) -> Any:
    return [0] * len(frame)


def test_a_run_records_what_it_opens_and_lineage_finds_the_model(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from keel.api import get_run, models_using
    from keel.cli.main import main
    from keel.registry import register_model_version
    from keel.tracking.fluent import start_run

    write(project.root / "train.csv", V2)
    for i in range(3):
        write(project.root / "images" / f"{i}.png", os.urandom(50))
    [_, folder] = add(project, ["train.csv", "images"])
    with start_run(project=project) as run:
        with keel.data.open("train.csv", project=project) as f:
            assert f.read() == V2
        for i in range(3):  # three files of one folder: one dataset version
            with keel.data.open(f"images/{i}.png", project=project):
                pass
        register_model_version(project, predict, "fraud", run_id=run.id, flavor="pyfunc")
    inputs = {(i.kind, i.ref, i.name) for i in get_run(run.id, project=project).inputs}
    assert inputs == {("dataset", sha(V2), "train.csv"), ("dataset", folder.sha256, "images")}
    assert [v.name for v in models_using(dataset=sha(V2), project=project)] == ["fraud"]

    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(project.root))
    monkeypatch.setenv("KEEL_METADATA_URL", project.config.metadata.url)
    capsys.readouterr()
    assert main(["lineage", "--dataset", folder.sha256, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["version"]) for v in found] == [("fraud", 1)]


def test_open_outside_a_run_records_nothing(sqlite_project: Project) -> None:
    write(sqlite_project.root / "x.bin", b"x")
    add(sqlite_project, ["x.bin"])
    with keel.data.open("x.bin", project=sqlite_project) as f:
        assert f.read() == b"x"
