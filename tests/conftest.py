"""Shared fixtures: a fresh project per test, over SQLite and the machine's real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.project import Project, init_project

PG_SERVER = os.environ.get("KEEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def service_unavailable(name: str, why: str) -> None:
    """Skip outside CI; in CI (CI set) a missing service is a failure, never a skip."""
    message = f"{name} is unreachable ({why})"
    if os.environ.get("CI"):
        pytest.fail(message + " — CI requires it; start it with `make services`")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_SERVER)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any connection failure means "not reachable"
        service_unavailable("PostgreSQL", str(exc).splitlines()[0])
    finally:
        engine.dispose()
    return PG_SERVER


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A URL to a fresh, empty PostgreSQL schema, dropped after the test."""
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:16]}"
    engine = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{pg_server}?options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keel.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    init_project(root)
    return root


@pytest.fixture
def project(project_dir: Path, metadata_url: str) -> Iterator[Project]:
    """A fresh project whose metadata lives in SQLite or PostgreSQL (each test runs on both)."""
    proj = Project(project_dir, overrides={"metadata.url": metadata_url}, environ={})
    yield proj
    proj.close()


@pytest.fixture
def sqlite_project(project_dir: Path) -> Iterator[Project]:
    """A fresh project on the embedded default only (for tests that are not about storage)."""
    proj = Project(project_dir, environ={})
    yield proj
    proj.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real SeaweedFS S3 server on loopback for the whole session (per xdist worker)."""
    from tests.support import s3_server as weed

    try:
        process, server = weed.start(tmp_path_factory.mktemp("seaweedfs"))
    except (FileNotFoundError, RuntimeError) as exc:
        service_unavailable("the S3 test server (SeaweedFS)", str(exc).splitlines()[0])
        raise  # service_unavailable always raises; this keeps the type checker informed
    try:
        yield server
    finally:
        weed.stop(process)


@pytest.fixture
def s3_bucket(s3_server: object) -> str:
    """A fresh bucket on the S3 test server."""
    import botocore.session

    from tests.support.s3_server import S3Server

    assert isinstance(s3_server, S3Server)
    name = f"keel-{uuid.uuid4().hex[:12]}"
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name
