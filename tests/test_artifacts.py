from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.artifacts import ArtifactStore
from keel.core.hashing import sha256_bytes
from keel.errors import ArtifactCorruptedError, InvalidInputError, NotFoundError


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "objects-root"))


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=5000))
def test_round_trip_is_named_by_content(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    store = ArtifactStore(str(tmp_path_factory.mktemp("s")))
    info = store.put_bytes(data)
    assert info.sha256 == sha256_bytes(data)
    assert info.size == len(data)
    assert store.get_bytes(info.sha256) == data
    assert store.put_bytes(data) == info  # idempotent


def test_put_file_and_get_file(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"x" * 3_000_000)
    info = store.put_file(source)
    out = store.get_file(info.sha256, tmp_path / "out" / "copy.bin")
    assert out.read_bytes() == source.read_bytes()


def test_tampered_object_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    info = store.put_bytes(b"the real weights")
    path = Path(store.path_of(info.sha256))
    path.write_bytes(b"evil weights")
    with pytest.raises(ArtifactCorruptedError, match=info.sha256):
        store.get_bytes(info.sha256)
    dest = tmp_path / "dest.bin"
    with pytest.raises(ArtifactCorruptedError, match="tampered or truncated"):
        store.get_file(info.sha256, dest)
    assert not dest.exists()
    assert not list(tmp_path.glob(".dest.bin.tmp-*"))


def test_truncated_object_is_refused(store: ArtifactStore) -> None:
    info = store.put_bytes(b"0123456789" * 100)
    path = Path(store.path_of(info.sha256))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ArtifactCorruptedError):
        store.get_bytes(info.sha256)


def test_missing_object_and_bad_name(store: ArtifactStore) -> None:
    with pytest.raises(NotFoundError, match="not in the artifact store"):
        store.get_bytes("0" * 64)
    with pytest.raises(InvalidInputError, match="not a sha256"):
        store.get_bytes("../../etc/passwd")


def test_no_temporary_files_are_left(store: ArtifactStore) -> None:
    for i in range(5):
        store.put_bytes(bytes([i]) * 100)
    leftovers = [p for p in Path(store.url).rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


@pytest.mark.s3
def test_s3_store_round_trip_and_tamper(s3_server: object, s3_bucket: str) -> None:
    from tests.support.s3_server import S3Server

    assert isinstance(s3_server, S3Server)
    store = ArtifactStore(f"s3://{s3_bucket}/artifacts", options=s3_server.fsspec_options)
    info = store.put_bytes(b"weights" * 1000)
    assert store.exists(info.sha256)
    assert store.get_bytes(info.sha256) == b"weights" * 1000
    # Overwrite the object behind Keel's back: the next read must refuse it.
    store.fs.pipe_file(store.path_of(info.sha256), b"evil")
    store.fs.invalidate_cache()
    with pytest.raises(ArtifactCorruptedError, match=info.sha256):
        store.get_bytes(info.sha256)


@pytest.mark.s3
def test_project_with_s3_artifacts(s3_server: object, s3_bucket: str, tmp_path: Path) -> None:
    from keel.project import Project
    from tests.support.s3_server import S3Server

    assert isinstance(s3_server, S3Server)
    project = Project(
        tmp_path,
        environ={},
        overrides={
            "artifacts.url": f"s3://{s3_bucket}/p",
            "artifacts.options": s3_server.fsspec_options,
        },
    )
    info = project.artifacts.put_bytes(b"abc")
    assert (
        project.artifacts.fs.cat_file(f"{s3_bucket}/p/objects/{info.sha256[:2]}/{info.sha256[2:]}")
        == b"abc"
    )
