"""Remotes: naming them in keel.yaml, folder manifests, request signing, and a remote that
refuses the credentials (one clear error, nothing half-written)."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from keel.data.manifest import Entry, build_manifest
from keel.data.pointer import Pointer
from keel.data.remote import Remote, RemoteAccessError, objects_of, remote_for
from keel.data.s3_signing import Credentials, Signer
from keel.errors import InvalidInputError, NotFoundError, StoreError
from keel.project import Project
from tests.data.remote_support import botocore_only, fill, new_cache, s3_remote
from tests.support import s3_server as weed

# -- naming remotes --------------------------------------------------------------------------


def _project(root: Path, data: dict[str, Any]) -> Project:
    return Project(root, overrides={"data": data}, environ={})


def test_remote_for_resolves_names_defaults_and_relative_folders(project_dir: Path) -> None:
    remotes = {"nas": {"url": "../shared"}, "s3": {"url": "s3://b/p/", "options": {"anon": True}}}
    project = _project(project_dir, {"remote": "s3", "remotes": remotes, "jobs": 5})
    default = remote_for(project)
    assert (default.name, default.url, dict(default.options), default.jobs) == (
        "s3",
        "s3://b/p",
        {"anon": True},
        5,
    )
    nas = remote_for(project, "nas")
    assert nas.url == str((project_dir.parent / "shared").resolve())
    assert nas.object_url("ab" * 32) == f"{nas.url}/objects/ab/{'ab' * 31}"

    only = _project(project_dir, {"remotes": {"nas": {"url": "file:///srv/keel"}}})
    assert remote_for(only).url == "/srv/keel"  # the only remote is the default


def test_unknown_or_missing_remotes_say_how_to_fix_them(project_dir: Path) -> None:
    bare = _project(project_dir, {})
    with pytest.raises(InvalidInputError, match=r"(?s)no data remote is configured.*remotes:"):
        remote_for(bare)
    two = _project(project_dir, {"remotes": {"a": {"url": "/a"}, "b": {"url": "/b"}}})
    with pytest.raises(InvalidInputError, match=r"several data remotes.*a, b.*--remote"):
        remote_for(two)
    with pytest.raises(InvalidInputError, match=r"'c' is not configured \(configured: a, b\)"):
        remote_for(two, "c")


def test_object_url_refuses_a_bad_hash() -> None:
    with pytest.raises(InvalidInputError, match="not a sha256"):
        Remote("r", "/x").object_url("../../etc/passwd")


# -- folder manifests ------------------------------------------------------------------------


def test_objects_of_expands_folders_and_fetches_their_manifests(tmp_path: Path) -> None:
    source = new_cache(tmp_path / "a")
    files = fill(source, [10, 20])
    manifest = build_manifest(
        Entry(f"f{i}", sha, len(data)) for i, (sha, data) in enumerate(files.items())
    )
    folder_sha = source.add_bytes(manifest)
    (single,) = fill(source, [30])
    pointers = [
        Pointer("data/images", folder_sha, 30, 2, "dir"),
        Pointer("data/train.csv", single, 30, 1, "file"),
    ]
    expected = {folder_sha, single, *files}
    assert objects_of(source, pointers) == expected

    remote = Remote("r", str(tmp_path / "remote"))
    remote.push(source, [folder_sha])
    fresh = new_cache(tmp_path / "b")
    with pytest.raises(NotFoundError, match="keel data pull"):
        objects_of(fresh, pointers)  # no remote to fetch the manifest from
    assert objects_of(fresh, pointers, remote) == expected
    assert fresh.read_bytes(folder_sha) == manifest


# -- request signing -------------------------------------------------------------------------

STAMP = datetime.datetime(2013, 5, 24, 0, 0, 0)


@pytest.mark.parametrize(
    ("path", "extra", "token"),
    [
        ("/bucket/objects/ab/cd", {}, None),
        ("/bucket/team/keel%20data/objects/ab/cd", {"x-amz-checksum-sha256": "q83v"}, None),
        ("/b/k%2Bplus~tilde", {"Range": "bytes=0-9"}, "session/token+="),
    ],
)
def test_signer_matches_botocore(
    monkeypatch: pytest.MonkeyPatch, path: str, extra: dict[str, str], token: str | None
) -> None:
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    body = b"payload"
    payload = hashlib.sha256(body).hexdigest()
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: STAMP)
    request = AWSRequest("PUT", f"http://127.0.0.1:8333{path}", headers=dict(extra), data=body)
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    botocore.auth.S3SigV4Auth(
        BotoCredentials("AKIDEXAMPLE", secret, token), "s3", "eu-west-1"
    ).add_auth(request)

    ours = Signer("eu-west-1").headers(
        "PUT",
        "127.0.0.1:8333",
        path,
        extra,
        payload,
        Credentials("AKIDEXAMPLE", secret, token),
        now=STAMP.replace(tzinfo=datetime.UTC).timestamp(),
    )
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["x-amz-date"] == "20130524T000000Z"


def test_requests_retry_transient_failures_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from keel.data import s3http

    async def no_wait(seconds: float) -> None:
        pass

    monkeypatch.setattr(s3http.asyncio, "sleep", no_wait)
    failures: list[BaseException] = [OSError("reset"), s3http.S3ResponseError(503, "Slow", "")]
    calls, undone = [0], [0]

    async def flaky() -> str:
        calls[0] += 1
        if failures:
            raise failures.pop(0)
        return "done"

    def undo() -> None:
        undone[0] += 1

    assert asyncio.run(s3http._retrying(flaky, undo)) == "done"
    assert (calls[0], undone[0]) == (3, 2)

    async def missing() -> str:
        calls[0] += 1
        raise s3http.S3ResponseError(404, "NoSuchKey", "gone")

    calls[0] = 0
    with pytest.raises(s3http.S3ResponseError, match="NoSuchKey"):
        asyncio.run(s3http._retrying(missing))
    assert calls[0] == 1  # a definite answer is not asked again

    async def down() -> str:
        calls[0] += 1
        raise OSError("refused")

    calls[0] = 0
    with pytest.raises(OSError, match="refused"):
        asyncio.run(s3http._retrying(down))
    assert calls[0] == s3http.ATTEMPTS
    with pytest.raises(s3http.S3ResponseError, match="MalformedListing"):
        s3http._list_page(b"<ListBucketResult><Contents>")
    page = s3http._list_page(
        b"<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>a/b</Key>"
        b"<Size>3</Size><LastModified>2026-01-02T03:04:05.000Z</LastModified></Contents>"
        b"<Contents><Key>c</Key><Size>0</Size></Contents></ListBucketResult>"
    )
    stamp = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC).timestamp()
    assert page.objects == [("a/b", 3, stamp), ("c", 0, None)]
    assert page.next_token is None


def test_anonymous_requests_are_not_signed() -> None:
    headers = Signer("us-east-1").headers("GET", "h", "/b/k", {}, "e" * 64, None)
    assert "Authorization" not in headers


# -- refused credentials ---------------------------------------------------------------------

KEY, SECRET = "keel-auth", "keel-auth-secret"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[weed.S3Server]:
    """A SeaweedFS that checks signatures: one identity, KEY/SECRET."""
    from tests.conftest import service_unavailable

    binary = weed.weed_binary()
    if binary is None:
        service_unavailable("the S3 test server (SeaweedFS)", "weed is not installed")
        raise AssertionError("unreachable")
    folder = tmp_path_factory.mktemp("weed-auth")
    config = folder / "s3.json"
    identity = {"name": "keel", "credentials": [{"accessKey": KEY, "secretKey": SECRET}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    s3, master, volume, filer = (weed._free_port_pair() for _ in range(4))
    with (folder / "weed.log").open("wb") as log:
        process = subprocess.Popen(
            [
                *(binary, "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"),
                *("-s3", f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}"),
                *(f"-filer.port={filer}", "-volume.max=0", "-master.volumeSizeLimitMB=64"),
                *(f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = weed.S3Server(endpoint_url=f"http://127.0.0.1:{s3}", key=KEY, secret=SECRET)
    try:
        weed._wait_until_ready(process, server, 60, folder / "weed.log")
    except RuntimeError as exc:
        service_unavailable("the S3 test server with authentication", str(exc).splitlines()[0])
    try:
        yield server
    finally:
        weed.stop(process)


@pytest.fixture
def auth_bucket(auth_server: weed.S3Server) -> str:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=auth_server.endpoint_url,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    name = f"auth-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


@pytest.mark.s3
@pytest.mark.parametrize("path", ["fast", "botocore"])
def test_refused_credentials_are_one_clear_error_and_nothing_is_written(
    path: str,
    auth_server: weed.S3Server,
    auth_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if path == "botocore":
        botocore_only(monkeypatch)
    cache = new_cache(tmp_path / "a")
    objects = fill(cache, [100, 2 << 20])
    good = s3_remote(auth_server, auth_bucket, prefix="signed path+x")
    assert good.push(cache, objects).transferred == 2  # the signature is right

    for key, secret in [(KEY, "wrong-secret"), ("nobody", SECRET)]:
        bad = Remote("team", good.url, {**good.options, "key": key, "secret": secret})
        target = new_cache(tmp_path / "b")
        steps: dict[str, Callable[[], object]] = {
            "missing": partial(bad.missing, objects),
            # enough hashes to be answered by listing rather than one by one
            "missing, listed": partial(bad.missing, list(fill(cache, [7] * 300))),
            "push": partial(bad.push, cache, fill(cache, [5])),
            "pull": partial(bad.pull, target, list(objects)),
        }
        for step in steps.values():
            with pytest.raises(RemoteAccessError, match=r"remote 'team' .*refused access") as e:
                step()
            assert isinstance(e.value, StoreError)
            assert "check the credentials" in str(e.value)
        assert list(target.objects()) == []
        temp = target.root / "tmp"
        assert not temp.exists() or not any(temp.iterdir())  # no partial download left behind

    fresh = new_cache(tmp_path / "c")
    assert good.pull(fresh, list(objects)).transferred == 2


@pytest.mark.s3
def test_a_missing_bucket_says_so(s3_server: Any, tmp_path: Path) -> None:
    cache = new_cache(tmp_path / "a")
    remote = s3_remote(s3_server, "no-such-bucket-here")
    with pytest.raises(RemoteAccessError, match="does not exist"):
        remote.push(cache, fill(cache, [10]))


@pytest.mark.s3
def test_a_few_existence_checks_need_no_botocore(
    s3_server: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to HEAD_LIMIT hashes are checked one by one with HEAD, through the lean client
    when the options name the endpoint and keys: building botocore costs a status ~0.4 s."""
    from keel.data.s3_connection import S3Connection

    cache = new_cache(tmp_path / "a")
    objects = fill(cache, [100, 2 << 20, 7, 0])
    remote = s3_remote(s3_server, s3_bucket)
    pushed = sorted(objects)[:2]
    remote.push(cache, {sha: objects[sha] for sha in pushed})

    async def no_botocore(self: S3Connection) -> Any:
        raise AssertionError("an existence check built a botocore client")

    monkeypatch.setattr(S3Connection, "botocore", no_botocore)
    assert remote.missing(objects) == set(objects) - set(pushed)
    sizes = {sha: len(data) for sha, data in objects.items()}
    assert remote.missing(pushed, {**sizes, pushed[0]: sizes[pushed[0]] + 1}) == {pushed[0]}


@pytest.mark.s3
def test_a_missing_bucket_says_so_when_listed(s3_server: Any, tmp_path: Path) -> None:
    """Many hashes are answered by listing (the lean client's ListObjectsV2), not one by one."""
    cache = new_cache(tmp_path / "a")
    remote = s3_remote(s3_server, "no-such-bucket-either")
    with pytest.raises(RemoteAccessError, match="does not exist"):
        remote.missing(list(fill(cache, [8] * 300)))


def test_an_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    cache = new_cache(tmp_path / "a")
    options = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }
    remote = Remote("down", "s3://bucket/p", options)
    with pytest.raises(RemoteAccessError, match=r"cannot reach remote 'down'"):
        remote.pull(cache, list(fill(new_cache(tmp_path / "b"), [10])))


@pytest.mark.s3
def test_credentials_found_by_botocore_also_drive_the_lean_client(
    s3_server: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys from the environment (not in the options): s3fs/botocore resolve them and the lean
    client signs with them; keys in the options: s3fs is not needed at all."""
    options = dict(s3_server.fsspec_options)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", str(options.pop("key")))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", str(options.pop("secret")))
    cache = new_cache(tmp_path / "a")
    objects = fill(cache, [100, 5000])
    from_env = Remote("env", f"s3://{s3_bucket}/env", options, jobs=4)
    assert from_env.push(cache, objects).transferred == 2
    assert from_env.pull(new_cache(tmp_path / "b"), objects).transferred == 2

    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from keel.data.cache import DataCache\n"
        "from keel.data.remote import Remote\n"
        "spec = json.loads(sys.argv[1])\n"
        "remote = Remote('r', spec['url'], spec['options'], jobs=4)\n"
        "report = remote.pull(DataCache(Path(spec['cache']), ['copy']), spec['hashes'])\n"
        "print(report.transferred, 's3fs' in sys.modules, 'botocore' in sys.modules)\n"
    )
    spec = {
        "url": f"s3://{s3_bucket}/env",
        "options": s3_server.fsspec_options,
        "cache": str(tmp_path / "c"),
        "hashes": sorted(objects),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(spec)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "False", "False"]
