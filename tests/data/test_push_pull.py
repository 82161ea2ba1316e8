"""Push and pull between a data cache and each kind of remote: only missing objects move,
uploads are verified, downloads are hashed before they enter the cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from keel.data.cache import cache_for
from keel.data.inventory import list_objects
from keel.data.pointer import read_pointer
from keel.data.remote import Remote
from keel.errors import ArtifactCorruptedError, NotFoundError
from keel.project import Project
from tests.data.helpers import write
from tests.data.remote_support import (
    Recorder,
    botocore_only,
    fill,
    make_remote,
    new_cache,
    overwrite_on_remote,
    remote_bytes,
    s3_remote,
)

# Small objects, one of exactly 1 MiB (the inline/stream boundary), and two streamed ones.
SIZES = [0, 1, 100, 40_000, *([4096] * 20), 1 << 20, (1 << 20) + 1, 3 << 20]


def test_push_then_pull_round_trips_every_byte(remote: Remote, tmp_path: Path) -> None:
    source = new_cache(tmp_path / "a")
    objects = fill(source, SIZES)
    assert remote.missing(objects) == set(objects)

    pushed = Recorder()
    report = remote.push(source, objects, progress=pushed)
    assert (report.transferred, report.present) == (len(objects), 0)
    assert report.bytes == sum(SIZES)
    assert pushed.started == [(len(objects), sum(SIZES))]
    assert (pushed.objects, pushed.nbytes) == (len(objects), sum(SIZES))
    assert remote.missing(objects) == set()
    for sha, data in objects.items():
        assert remote_bytes(remote, sha) == data

    target = new_cache(tmp_path / "b")
    pulled = Recorder()
    sizes = {sha: len(data) for sha, data in objects.items()}
    report = remote.pull(target, sizes, sizes=sizes, progress=pulled)
    assert (report.transferred, report.bytes) == (len(objects), sum(SIZES))
    assert (pulled.objects, pulled.nbytes) == (len(objects), sum(SIZES))
    for sha, data in objects.items():
        assert target.read_bytes(sha) == data


def test_only_missing_objects_move(remote: Remote, tmp_path: Path) -> None:
    cache = new_cache(tmp_path / "a")
    first = fill(cache, [10, 20, 30])
    remote.push(cache, first)
    second = fill(cache, [40, 50])
    everything = {**first, **second}

    report = remote.push(cache, everything)
    assert (report.transferred, report.present) == (2, 3)
    assert report.bytes == 90
    assert remote.push(cache, everything).transferred == 0

    target = new_cache(tmp_path / "b")
    target.add_bytes(first[next(iter(first))])
    report = remote.pull(target, list(everything))
    assert (report.transferred, report.present) == (4, 1)
    assert remote.pull(target, list(everything)).transferred == 0


@pytest.mark.parametrize(
    ("kind", "page", "flat_limit", "by_prefix"),
    [
        ("local", 1000, 16_000, True),  # a folder is always listed prefix by prefix
        pytest.param("s3", 1000, 16_000, False, marks=pytest.mark.s3),
        pytest.param("s3", 50, 16_000, False, marks=pytest.mark.s3),  # five flat pages
        pytest.param("s3", 50, 100, True, marks=pytest.mark.s3),  # past the flat limit
        # listed through botocore, as on AWS (elsewhere through the lean signed client)
        pytest.param("s3-botocore", 50, 16_000, False, marks=pytest.mark.s3),
    ],
)
def test_many_hashes_use_listing_and_still_find_exactly_the_missing(
    kind: str,
    page: int,
    flat_limit: int,
    by_prefix: bool,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import keel.data.backends
    import keel.data.packs
    import keel.data.s3

    monkeypatch.setattr(keel.data.s3, "LIST_PAGE", page)
    monkeypatch.setattr(keel.data.s3, "FLAT_LIST_LIMIT", flat_limit)
    monkeypatch.setattr(keel.data.packs, "PACK_MIN_OBJECTS", 10**9)  # loose: they are listed
    if kind == "s3-botocore":
        botocore_only(monkeypatch)
        kind = "s3"
    prefixes_listed: list[str] = []
    for backend in (keel.data.s3.S3Backend, keel.data.backends.LocalBackend):
        original = backend.list_prefix

        async def spy(self: Any, prefix: str, original: Any = original) -> dict[str, int]:
            prefixes_listed.append(prefix)
            return dict(await original(self, prefix))

        monkeypatch.setattr(backend, "list_prefix", spy)
    remote = make_remote(kind, request, tmp_path)
    cache = new_cache(tmp_path / "a")
    objects = list(fill(cache, [64] * 300))  # above the per-object check limit: listing
    remote.push(cache, objects[:200])
    prefixes_listed.clear()
    assert remote.missing(objects) == set(objects[200:])
    assert bool(prefixes_listed) == by_prefix
    assert set(list_objects(remote)) == set(objects[:200])


def test_a_remote_object_with_the_wrong_size_counts_as_missing_and_is_repaired(
    remote: Remote, tmp_path: Path
) -> None:
    cache = new_cache(tmp_path / "a")
    objects = fill(cache, [1000, 2000])
    remote.push(cache, objects)
    damaged = next(iter(objects))
    overwrite_on_remote(remote, damaged, b"truncated")
    sizes = {sha: len(data) for sha, data in objects.items()}

    assert remote.missing(objects, sizes) == {damaged}
    assert remote.push(cache, objects).transferred == 1
    assert remote_bytes(remote, damaged) == objects[damaged]


def test_a_corrupted_cache_object_is_never_uploaded_and_the_rest_are(
    remote: Remote, tmp_path: Path
) -> None:
    cache = new_cache(tmp_path / "a")
    objects = fill(cache, [5000, 6000, 3 << 20])
    bad, big = sorted(objects, key=lambda sha: len(objects[sha]))[::2]
    for sha in (bad, big):  # a small (one PUT body) and a streamed object
        path = cache.path_of(sha)
        path.chmod(0o644)
        path.write_bytes(b"x" + objects[sha][1:])

    with pytest.raises(ArtifactCorruptedError, match=r"not pushed|corrupted") as caught:
        remote.push(cache, objects)
    assert "2 of 3" in str(caught.value)
    assert remote.missing(objects) == {bad, big}


def test_pull_refuses_a_tampered_remote_object(remote: Remote, tmp_path: Path) -> None:
    cache = new_cache(tmp_path / "a")
    objects = fill(cache, [3000, 4000])
    remote.push(cache, objects)
    tampered = next(iter(objects))
    good = objects[tampered]
    overwrite_on_remote(remote, tampered, good[:-1] + bytes([good[-1] ^ 1]))  # same size

    target = new_cache(tmp_path / "b")
    with pytest.raises(ArtifactCorruptedError, match=tampered):
        remote.pull(target, list(objects))
    assert not target.has(tampered)
    assert [sha for sha in objects if target.has(sha)] == [s for s in objects if s != tampered]
    assert not any((target.root / "tmp").iterdir())  # no leftovers


def test_pull_of_objects_the_remote_lacks_names_them_and_fetches_the_rest(
    remote: Remote, tmp_path: Path
) -> None:
    cache = new_cache(tmp_path / "a")
    objects = fill(cache, [10, 20])
    present = next(iter(objects))
    remote.push(cache, [present])
    absent = hashlib.sha256(b"never pushed").hexdigest()

    target = new_cache(tmp_path / "b")
    with pytest.raises(NotFoundError, match=absent):
        remote.pull(target, [present, absent])
    assert target.read_bytes(present) == objects[present]


def test_push_of_an_object_in_neither_place_says_so(remote: Remote, tmp_path: Path) -> None:
    ghost = hashlib.sha256(b"ghost").hexdigest()
    with pytest.raises(NotFoundError, match="neither in the data cache nor on"):
        remote.push(new_cache(tmp_path / "a"), [ghost])


def test_local_remote_layout_matches_the_cache(tmp_path: Path) -> None:
    cache = new_cache(tmp_path / "a")
    (sha,) = fill(cache, [123])
    remote = Remote("r", str(tmp_path / "remote"))
    remote.push(cache, [sha])
    stored = tmp_path / "remote" / "objects" / sha[:2] / sha[2:]
    assert stored.read_bytes() == cache.read_bytes(sha)
    assert remote.object_url(sha) == str(stored)
    assert [p.name for p in stored.parent.iterdir()] == [sha[2:]]  # no temporary files left


# -- the commands ----------------------------------------------------------------------------


@pytest.fixture
def cli(sqlite_project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Project:
    """The CLI in a project whose default remote is a local folder (cwd inside it)."""
    from keel.cli import output

    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    config = sqlite_project.root / "keel.yaml"
    remote = tmp_path / "remote"
    text = config.read_text().replace(
        "  remotes: {}", f"  remote: shared\n  remotes:\n    shared: {{url: '{remote}'}}"
    )
    config.write_text(text)
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(sqlite_project.root))
    monkeypatch.chdir(sqlite_project.root)
    monkeypatch.setattr(output.console, "width", 250)
    write(sqlite_project.root / "data" / "train.csv", b"a,b\n1,2\n")
    for i in range(40):  # enough small files to travel in a pack
        write(sqlite_project.root / "data" / "images" / f"{i}.png", bytes([i]) * 1000)
    return sqlite_project


def keel(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from keel.cli.main import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


def test_push_pull_and_gc_commands(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert keel(capsys, "data", "add", "data/train.csv", "data/images")[0] == 0
    code, out = keel(capsys, "data", "push", "-j", "4")
    assert code == 0, out
    assert "pushed 42 object(s)" in out  # 41 files and the folder's manifest
    assert "to remote 'shared'" in out
    # The images went in one pack; what the pointers name stays loose, with its own address.
    remote = cli.root.parent / "remote"
    assert len(list((remote / "packs").glob("*.idx"))) == 1
    loose = {p.parent.name + p.name for p in (remote / "objects").glob("*/*")}
    pointers = [
        read_pointer(cli.root / "data" / n, cli.root) for n in ("train.csv.keel", "images.keel")
    ]
    assert loose == {pointer.sha256 for pointer in pointers}
    code, out = keel(capsys, "data", "push", "--json")
    assert json.loads(out)["transferred"] == 0

    shutil.rmtree(cli.root / "data" / "images")
    (cli.root / "data" / "train.csv").unlink()
    shutil.rmtree(cli.root / ".keel" / "cache")
    code, out = keel(capsys, "data", "pull")
    assert code == 0, out
    assert "pulled 42 object(s) from remote 'shared'" in out
    assert (cli.root / "data" / "train.csv").read_bytes() == b"a,b\n1,2\n"
    assert (cli.root / "data" / "images" / "7.png").read_bytes() == bytes([7]) * 1000

    shutil.rmtree(cli.root / ".keel" / "cache")  # the workspace matches; the cache is empty
    code, out = keel(capsys, "data", "pull")
    assert "pulled 42 object(s)" in out
    assert "workspace already up to date" in out
    assert len(list(cache_for(cli).objects())) == 42

    orphan = cache_for(cli).add_bytes(b"unreferenced")
    code, out = keel(capsys, "data", "gc", "--remote", "shared")
    assert code == 0, out
    assert "would delete 1 object(s), 12 B, from the cache" in out
    assert orphan in out
    assert "dry run" in out
    code, out = keel(capsys, "data", "gc", "--force", "--json")
    assert json.loads(out)["cache"] == [{"sha256": orphan, "size": 12}]
    assert not cache_for(cli).has(orphan)


def test_push_and_pull_from_the_python_api(cli: Project) -> None:
    import keel.data

    cli = Project(cli.root, environ={})  # with the remote the fixture wrote into keel.yaml
    keel.data.add(cli, ["data/train.csv", "data/images"])
    only_train = keel.data.push(cli, ["data/train.csv"])
    assert (only_train.transferred, only_train.bytes) == (1, 8)
    not_pushed = {p.path: p.not_pushed for p in keel.data.status(cli).paths}
    assert not_pushed == {"data/train.csv": 0, "data/images": 41}
    report = keel.data.push(cli)
    assert (report.transferred, report.present) == (41, 1)  # the images and their manifest
    # The images went packed: status still finds every one of them on the remote.
    assert {p.not_pushed for p in keel.data.status(cli).paths} == {0}
    write(cli.root / "data" / "images" / "new.png", b"one more")
    keel.data.add(cli, ["data/images"])
    not_pushed = {p.path: p.not_pushed for p in keel.data.status(cli).paths}
    assert not_pushed == {"data/train.csv": 0, "data/images": 2}  # the file, a new manifest
    assert keel.data.push(cli).transferred == 2
    (cli.root / "data" / "images" / "new.png").unlink()
    keel.data.add(cli, ["data/images"])  # back to the pushed version

    shutil.rmtree(cli.root / "data" / "images")
    shutil.rmtree(cli.root / ".keel" / "cache")
    pulled = keel.data.pull(cli, ["data/images"])
    assert pulled.remote == "shared"
    assert pulled.checkout.restored == ["data/images"]
    assert (pulled.fetched, pulled.checkout.written) == (41, 40)
    assert (cli.root / "data" / "images" / "39.png").read_bytes() == bytes([39]) * 1000
    # train.csv matched the workspace already; a full pull still completes the cache.
    assert keel.data.pull(cli).fetched == 1
    assert keel.data.status(cli).clean
    cli.close()


def test_push_without_a_remote_is_one_clear_error(
    cli: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = keel(capsys, "data", "push", "--remote", "nope")
    assert code == 2
    assert "data remote 'nope' is not configured (configured: shared)" in out


@pytest.mark.s3
def test_a_server_that_ignores_checksums_gets_checked_by_size_and_md5(
    s3_server: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.data import s3, s3http

    real_put = s3http.ObjectClient.put
    heads: list[str] = []

    async def put_without_echo(self: s3http.ObjectClient, *args: Any, **kwargs: Any) -> None:
        await real_put(self, *args, **kwargs)  # as if the server had not echoed the checksum

    real_check = s3.S3Backend._check_after_put

    async def check(self: s3.S3Backend, key: str, src: Path, size: int) -> None:
        heads.append(key.rpartition("/objects/")[2].replace("/", ""))
        await real_check(self, key, src, size)

    monkeypatch.setattr(s3http.ObjectClient, "put", put_without_echo)
    monkeypatch.setattr(s3.S3Backend, "_check_after_put", check)
    cache = new_cache(tmp_path / "a")
    objects = fill(cache, [10, 3 << 20])
    remote = s3_remote(s3_server, s3_bucket)
    assert remote.push(cache, objects).transferred == 2
    assert sorted(heads) == sorted(objects)
    for sha, data in objects.items():
        assert remote_bytes(remote, sha) == data
