"""Garbage collection keeps everything a pointer (workspace or branch) or a registered model's
lineage needs — DVC #3476 deleted data a model still needed — and deletes the rest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keel.data.cache import DataCache, cache_for
from keel.data.gc import gc
from keel.data.manifest import parse_manifest
from keel.data.pointer import read_pointer
from keel.data.remote import Remote
from keel.data.restore import checkout
from keel.data.workspace import add
from keel.errors import StateError
from keel.project import Project
from keel.registry import register_model_version
from keel.tracking.fluent import start_run
from tests.data.gitrepo import commit_all, git, git_env, init_repo
from tests.data.helpers import write
from tests.data.remote_support import make_remote


def predict(frame: Any) -> Any:
    return [0] * len(frame)


@dataclass
class History:
    """Dataset folder data/images: version A (a model was trained on it, then the pointer
    moved on to B on every branch), B (current), C (added, then abandoned), an orphan."""

    a: set[str]
    b: set[str]
    c_only: set[str]
    orphan: str
    a_commit: str


def _objects(cache: DataCache, folder_sha: str) -> set[str]:
    return {folder_sha, *(e.sha256 for e in parse_manifest(cache.read_bytes(folder_sha)))}


def _version(project: Project, files: dict[str, bytes]) -> str:
    folder = project.root / "data" / "images"
    for old in folder.glob("*") if folder.exists() else []:
        old.unlink()
    for name, data in files.items():
        write(folder / name, data)
    (pointer,) = add(project, [folder])
    return pointer.sha256


@pytest.fixture
def history(project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> History:
    """The history in a project on SQLite and on PostgreSQL (gc reads the registry)."""
    return _history(project, monkeypatch, tmp_path)


@pytest.fixture
def sqlite_history(
    sqlite_project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> History:
    """The history on SQLite only, for tests about something else than storage."""
    return _history(sqlite_project, monkeypatch, tmp_path)


def _history(project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> History:
    git_env(monkeypatch, tmp_path)
    init_repo(project.root)
    cache = cache_for(project)
    a_sha = _version(project, {"cat.png": b"cat A" * 100, "dog.png": b"dog" * 100})
    a_commit = commit_all(project.root, "images A")
    git(project.root, "branch", "experiment")

    with start_run(project=project, name="train-on-A") as run:
        run.log_input("dataset", a_sha, name="data/images", details={"kind": "dir"})
        register_model_version(project, predict, "classifier", run_id=run.id, flavor="pyfunc")

    b_sha = _version(project, {"cat.png": b"cat B" * 100, "dog.png": b"dog" * 100})
    commit_all(project.root, "images B")
    git(project.root, "branch", "-f", "experiment", "main")  # B on every branch

    c_sha = _version(project, {"cat.png": b"cat C" * 100, "eel.png": b"eel C" * 100})
    git(project.root, "checkout", "-q", "--", "data/images.keel")  # C abandoned: back to B
    orphan = cache.add_bytes(b"nobody points at me")

    a, b, c = (_objects(cache, sha) for sha in (a_sha, b_sha, c_sha))
    assert read_pointer(project.root / "data/images.keel", project.root).sha256 == b_sha
    return History(a, b, c - a - b, orphan, a_commit)


def test_gc_keeps_a_registered_models_data_after_every_pointer_moved_on(
    project: Project, history: History
) -> None:
    from sqlalchemy import delete

    from keel.metadata.schema import run_inputs

    cache = cache_for(project)
    doomed = history.c_only | {history.orphan}
    before = set(cache.objects())

    dry = gc(project)
    assert dry.dry_run
    assert {sha for sha, _ in dry.cache} == doomed
    assert dry.freed_bytes == sum(cache.path_of(sha).stat().st_size for sha in doomed)
    assert set(cache.objects()) == before  # a dry run deletes nothing

    done = gc(project, dry_run=False)
    assert {sha for sha, _ in done.cache} == doomed
    assert set(cache.objects()) == before - doomed
    assert history.a <= set(cache.objects())  # the model's training data survived
    assert history.b <= set(cache.objects())

    # ... and it is usable: the data the model was trained on comes back byte for byte.
    checkout(project, history.a_commit, force=True)
    assert (project.root / "data/images/cat.png").read_bytes() == b"cat A" * 100
    checkout(project, "main", force=True)

    # Without the registry's lineage (what DVC's gc looks at), A would have been garbage.
    with project.metadata.write() as conn:
        conn.execute(delete(run_inputs))
    assert history.a - history.b <= {sha for sha, _ in gc(project).cache}


def test_lineage_through_a_parent_run_and_without_a_declared_kind(
    sqlite_project: Project, sqlite_history: History
) -> None:
    project, history = sqlite_project, sqlite_history
    from sqlalchemy import delete, update

    from keel.metadata.schema import run_inputs

    c_folder = next(iter(sha for sha in history.c_only if _is_manifest(project, sha)))
    with start_run(project=project, name="sweep") as parent:
        parent.log_input("dataset", c_folder, name="data/images")  # no details: kind unknown
        with start_run(project=project, name="trial", nested=True) as child:
            register_model_version(project, predict, "sweeper", run_id=child.id, flavor="pyfunc")
    with project.metadata.write() as conn:  # keep the test about C only
        conn.execute(delete(run_inputs).where(run_inputs.c.ref != c_folder))
        conn.execute(update(run_inputs).values(details=None))

    collected = {sha for sha, _ in gc(project).cache}
    assert not collected & history.c_only
    assert history.orphan in collected


def test_branches_keep_their_pointers_objects_unless_left_out(
    sqlite_project: Project, sqlite_history: History
) -> None:
    project, history = sqlite_project, sqlite_history
    from sqlalchemy import delete

    from keel.metadata.schema import run_inputs

    with project.metadata.write() as conn:
        conn.execute(delete(run_inputs))
    git(project.root, "branch", "-f", "experiment", history.a_commit)  # A only on a branch

    kept_by_branch = {sha for sha, _ in gc(project).cache}
    assert not kept_by_branch & (history.a - history.b)
    only_main = {sha for sha, _ in gc(project, branches=["main"]).cache}
    assert history.a - history.b <= only_main


def test_a_folder_pointer_whose_manifest_is_nowhere_stops_gc(
    sqlite_project: Project, sqlite_history: History
) -> None:
    project, history = sqlite_project, sqlite_history
    cache = cache_for(project)
    folder = read_pointer(project.root / "data/images.keel", project.root).sha256
    cache.remove(folder)
    with pytest.raises(StateError, match=r"manifest of folder data/images .* deletes nothing"):
        gc(project, dry_run=False)
    assert history.orphan in set(cache.objects())


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3), "fsspec"])
def test_gc_on_a_remote_deletes_only_unreferenced_objects(
    kind: str, sqlite_project: Project, sqlite_history: History, request: pytest.FixtureRequest
) -> None:
    history = sqlite_history
    with _shared_remote(kind, request, sqlite_project) as (remote, project):
        cache = cache_for(project)
        everything = set(cache.objects())
        remote.push(cache, everything)
        doomed = history.c_only | {history.orphan}

        dry = gc(project, remote="shared")
        assert {sha for sha, _ in dry.remote or []} == doomed
        assert remote.missing(everything) == set()

        gc(project, remote="shared", dry_run=False)
        assert remote.missing(everything) == doomed
        assert set(cache.objects()) == everything - doomed


@contextmanager
def _shared_remote(
    kind: str, request: pytest.FixtureRequest, sqlite_project: Project
) -> Iterator[tuple[Remote, Project]]:
    """A remote of ``kind``, and the project with it configured as remote 'shared'."""
    remote = make_remote(kind, request, sqlite_project.root.parent)
    data = {"remotes": {"shared": {"url": remote.url, "options": dict(remote.options)}}}
    project = Project(sqlite_project.root, overrides={"data": data}, environ={})
    try:
        yield remote, project
    finally:
        project.close()


def _is_manifest(project: Project, sha: str) -> bool:
    return cache_for(project).read_bytes(sha)[:1] == b"["


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3), "fsspec"])
def test_gc_deletes_a_remote_pack_only_when_nothing_in_it_is_referenced(
    kind: str,
    sqlite_project: Project,
    sqlite_history: History,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import keel.data.packs
    from keel.data.inventory import contents

    monkeypatch.setattr(keel.data.packs, "PACK_MIN_OBJECTS", 1)  # even a few objects pack
    history = sqlite_history
    with _shared_remote(kind, request, sqlite_project) as (remote, project):
        cache = cache_for(project)
        stray = cache.add_bytes(b"unreferenced, packed beside referenced objects")
        everything = set(cache.objects())
        doomed = history.c_only | {history.orphan}
        remote.push(cache, doomed)  # a pack of garbage only
        remote.push(cache, everything - doomed)  # a pack of referenced objects and the stray
        before = contents(remote)
        assert len(before.packs) == 2
        assert not before.loose

        dry = gc(project, remote="shared")
        assert {sha for sha, _ in dry.remote or []} == doomed
        assert (dry.packs, dry.kept_packed) == (1, 1)

        kept = cache.pack_indexes
        assert {p.name for p in kept.iterdir()} == {f"{p}.idx" for p in before.packs}
        gc(project, remote="shared", dry_run=False)
        after = contents(remote)
        assert set(after.packs) == {p for p, i in before.packs.items() if stray in i.objects}
        assert not after.unindexed
        # the local copy of the deleted pack's index went with it
        assert {p.name for p in kept.iterdir()} == {f"{p}.idx" for p in after.packs}
        assert remote.missing(everything) == doomed
        fresh = DataCache(sqlite_project.root.parent / "fresh", ["copy"])
        assert remote.pull(fresh, everything - doomed).transferred == len(everything - doomed)


def test_gc_removes_packs_an_interrupted_push_left_once_they_are_a_day_old(
    sqlite_project: Project, sqlite_history: History, request: pytest.FixtureRequest
) -> None:
    """A pack whose index never arrived holds nothing anyone can see; gc deletes it once it
    is older than a day (a younger one may be a push still running)."""
    import hashlib
    import os
    import time

    from keel.data.inventory import contents

    with _shared_remote("local", request, sqlite_project) as (remote, project):
        folder = Path(remote.url)
        (folder / "packs").mkdir(parents=True)
        blobs = {age: os.urandom(1000 + age) for age in (2, 30)}  # hours
        names = {age: hashlib.sha256(blob).hexdigest() for age, blob in blobs.items()}
        for age, blob in blobs.items():
            path = folder / "packs" / names[age]
            path.write_bytes(blob)
            stamp = time.time() - age * 3600
            os.utime(path, (stamp, stamp))
        assert set(contents(remote).unindexed) == set(names.values())

        dry = gc(project, remote="shared")
        assert dry.unfinished == [(names[30], len(blobs[30]))]
        assert (folder / "packs" / names[30]).exists()
        gc(project, remote="shared", dry_run=False)
        assert set(contents(remote).unindexed) == {names[2]}
