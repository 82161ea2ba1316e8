"""Model versions: registration, numbering, artifact hashing and verification, refs and reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from keel.core.hashing import is_sha256
from keel.core.timeutil import now_ms
from keel.errors import ArtifactCorruptedError, InvalidInputError, NotFoundError
from keel.metadata.schema import (
    audit_log,
    environments,
    experiments,
    model_versions,
    registered_models,
    runs,
)
from keel.project import Project
from keel.registry import (
    audit_log as read_audit,
)
from keel.registry import (
    get_model_version,
    list_models,
    list_versions,
    load_model,
    parse_ref,
    register_model_version,
    set_alias,
)
from keel.registry.refs import ModelRef

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1], [0.1, 0.7], [0.8, 0.3]])
Y = np.array([0, 1, 0, 1, 0, 1])


@pytest.fixture(scope="module")
def clf() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(X, Y)


def insert_run(project: Project) -> str:
    """A finished run inserted directly (the registry needs only its row)."""
    run_id = f"{now_ms():012x}" + "ab" * 10
    with project.metadata.write() as conn:
        exp = conn.execute(
            insert(experiments)
            .values(name=f"exp-{run_id[-6:]}", created_at=now_ms())
            .returning(experiments.c.id)
        ).scalar_one()
        conn.execute(
            insert(runs).values(
                id=run_id, experiment_id=exp, status="finished", start_time=now_ms()
            )
        )
    return run_id


def row_counts(project: Project) -> dict[str, int]:
    with project.metadata.read() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (registered_models, model_versions, audit_log)
        }


def stored_objects(project: Project) -> list[Path]:
    root = Path(project.artifacts.url) / "objects"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def manifest_of(project: Project, sha: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(project.artifacts.get_bytes(sha))
    return data


def test_register_records_everything(project: Project, clf: Any) -> None:
    run_id = insert_run(project)
    mv = register_model_version(
        project, clf, "fraud", run_id=run_id, input_example=X[:2], description="first"
    )
    assert (mv.name, mv.version, mv.state, mv.run_id) == ("fraud", 1, "candidate", run_id)
    assert mv.flavor == "sklearn"
    assert mv.description == "first"
    assert mv.created_by == project.user
    assert mv.aliases == []
    assert "scikit-learn" in mv.library_versions
    assert mv.signature is not None
    assert is_sha256(mv.artifact_sha256)
    assert project.artifacts.exists(mv.artifact_sha256)
    assert get_model_version(project, "fraud@1") == mv
    with project.metadata.read() as conn:
        env = conn.execute(
            select(environments).where(environments.c.sha256 == mv.environment_sha256)
        ).first()
    assert env is not None
    (record,) = read_audit(project, entity_ref="fraud@1")
    assert (record.action, record.actor) == ("register", project.user)
    assert record.details["artifact_sha256"] == mv.artifact_sha256


def test_versions_are_monotonic_per_model(project: Project, clf: Any) -> None:
    numbers = [
        (mv.name, mv.version)
        for mv in (register_model_version(project, clf, name) for name in "aabab")
    ]
    assert numbers == [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)]
    assert [v.version for v in list_versions(project, "a")] == [1, 2, 3]
    models = {m.name: m.latest_version for m in list_models(project)}
    assert models == {"a": 3, "b": 2}


def test_manifest_names_every_file_and_its_hash_is_stable(project: Project, clf: Any) -> None:
    first = register_model_version(project, clf, "m", input_example=X[:2])
    second = register_model_version(project, clf, "m", input_example=X[:2])
    assert first.artifact_sha256 == second.artifact_sha256  # same bytes, same hash
    manifest = manifest_of(project, first.artifact_sha256)
    assert manifest["format"] == "keel-model/1"
    assert manifest["flavor"] == "sklearn"
    assert manifest["signature"] == first.signature
    assert manifest["library_versions"] == first.library_versions
    assert manifest["files"]
    for entry in manifest["files"].values():
        assert len(project.artifacts.get_bytes(entry["sha256"])) == entry["size"]


def test_load_round_trip_and_cache(project: Project, clf: Any) -> None:
    mv = register_model_version(project, clf, "m", input_example=X[:2])
    loaded = load_model(project, "m@1")
    np.testing.assert_array_equal(np.asarray(loaded.predict(X)), clf.predict(X))
    cached = project.keel_dir / "models" / mv.artifact_sha256
    assert (cached / "manifest.json").is_file()
    # A damaged cached copy is replaced from the store, never loaded.
    victim = next(p for p in (cached / "model").rglob("*") if p.is_file())
    victim.write_bytes(b"garbage")
    again = load_model(project, "m")
    np.testing.assert_array_equal(np.asarray(again.predict(X)), clf.predict(X))
    assert victim.read_bytes() != b"garbage"


@pytest.mark.parametrize("target", ["file", "manifest"])
def test_tampered_object_is_refused(project: Project, clf: Any, target: str) -> None:
    mv = register_model_version(project, clf, "m")
    manifest = manifest_of(project, mv.artifact_sha256)
    sha = (
        mv.artifact_sha256
        if target == "manifest"
        else max(manifest["files"].values(), key=lambda e: e["size"])["sha256"]
    )
    path = Path(project.artifacts.path_of(sha))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorruptedError, match=sha):
        load_model(project, "m@1")
    assert not (project.keel_dir / "models" / mv.artifact_sha256).exists()


def test_refs_resolve(project: Project, clf: Any) -> None:
    for _ in range(3):
        register_model_version(project, clf, "m")
    set_alias(project, "m", "champion", 2)
    assert get_model_version(project, "m").version == 3
    assert get_model_version(project, "m@latest").version == 3
    assert get_model_version(project, "m@1").version == 1
    assert get_model_version(project, "m", 1).version == 1
    champion = get_model_version(project, "m@champion")
    assert (champion.version, champion.aliases) == (2, ["champion"])


def test_unknown_model_lists_known_ones(project: Project, clf: Any) -> None:
    with pytest.raises(NotFoundError, match="no model is yet"):
        get_model_version(project, "fraud")
    register_model_version(project, clf, "fraud")
    register_model_version(project, clf, "churn")
    with pytest.raises(NotFoundError, match=r"'frud' is not registered.*churn, fraud.*keel models"):
        get_model_version(project, "frud@1")
    with pytest.raises(NotFoundError, match="churn, fraud"):
        list_versions(project, "frud")


def test_unknown_version_or_alias_lists_what_exists(project: Project, clf: Any) -> None:
    register_model_version(project, clf, "m")
    register_model_version(project, clf, "m")
    with pytest.raises(NotFoundError, match=r"no version 7; its versions: 1-2"):
        get_model_version(project, "m@7")
    with pytest.raises(NotFoundError, match=r"no alias 'champion' \(it has no aliases\)"):
        get_model_version(project, "m@champion")
    set_alias(project, "m", "staging", 1)
    with pytest.raises(NotFoundError, match=r"its aliases: staging -> 1"):
        get_model_version(project, "m@champion")


def test_bad_name_writes_nothing(project: Project, clf: Any) -> None:
    before = row_counts(project)
    with pytest.raises(InvalidInputError, match="'has space' is invalid: use 1-128 letters"):
        register_model_version(project, clf, "has space")
    assert row_counts(project) == before
    assert stored_objects(project) == []


@pytest.mark.parametrize("name", ["", "a/b", "x" * 129, "-lead", "ünïcode", "a@b", "..", None])
def test_bad_names(sqlite_project: Project, clf: Any, name: Any) -> None:
    with pytest.raises(InvalidInputError, match="letters, digits"):
        register_model_version(sqlite_project, clf, name)
    assert stored_objects(sqlite_project) == []
    assert row_counts(sqlite_project)["model_versions"] == 0


def test_unknown_run_writes_nothing(project: Project, clf: Any) -> None:
    before = row_counts(project)
    with pytest.raises(NotFoundError, match="run 'nope' does not exist"):
        register_model_version(project, clf, "m", run_id="nope")
    assert row_counts(project) == before
    assert stored_objects(project) == []


@pytest.mark.parametrize(
    ("ref", "version", "message"),
    [
        ("m@0", None, "whole numbers from 1"),
        ("m@", None, "after '@'"),
        ("m@Champ", None, "after '@'"),
        ("m@1", 2, "drop the separate version"),
        ("m", "x", "whole numbers"),
        ("m@a@b", None, "after '@'"),
    ],
)
def test_bad_refs(sqlite_project: Project, ref: str, version: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        get_model_version(sqlite_project, ref, version)


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
aliases = st.from_regex(r"[a-z_-][a-z0-9_-]{0,10}", fullmatch=True).filter(lambda a: a != "latest")


@given(name=names, version=st.integers(1, 10**6), alias=aliases)
def test_parse_ref_round_trips(name: str, version: int, alias: str) -> None:
    assert parse_ref(f"{name}@{version}") == ModelRef(name, version)
    assert parse_ref(f"{name}@{alias}") == ModelRef(name, alias=alias)
    assert parse_ref(name) == ModelRef(name)
    assert str(parse_ref(f"{name}@{alias}")) == f"{name}@{alias}"
