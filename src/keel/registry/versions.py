"""Model versions: register a trained model as the next version of a named model, read it back.

A version is immutable once registered: its files are content-addressed objects named by one
manifest whose sha256 is the version's ``artifact_sha256``. Version numbers come from one atomic
``UPDATE registered_models SET latest_version = latest_version + 1 ... RETURNING``, so concurrent
registrations (threads, processes, hosts) never share a number.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update

from keel.core.timeutil import at_ms, now_ms
from keel.errors import NotFoundError
from keel.metadata.schema import model_aliases, model_versions, registered_models, runs
from keel.metadata.sql import insert_ignore
from keel.registry import audit
from keel.registry.lookup import (
    CANDIDATE,
    ModelVersion,
    RegisteredModel,
    aliases_by_version,
    require_model,
    resolve,
    to_version,
)
from keel.registry.manifest import fetch_package, upload_package
from keel.registry.refs import parse_ref, validate_model_name

if TYPE_CHECKING:
    from keel.project import Project
    from keel.registry.loaded import LoadedModel

# ModelVersion and RegisteredModel live in lookup.py and are re-exported here, where callers
# (tracking, demo) expect them.
__all__ = [
    "ModelVersion",
    "RegisteredModel",
    "get_model_version",
    "list_models",
    "list_versions",
    "load_model",
    "register_model_version",
]


def register_model_version(
    project: Project,
    model: Any,
    name: str,
    *,
    run_id: str | None = None,
    input_example: Any = None,
    flavor: str | None = None,
    description: str | None = None,
) -> ModelVersion:
    """Save ``model``, store its files and register it as the next version of ``name``.

    The new version starts in state 'candidate'. Its environment (python, platform, packages)
    is recorded; ``run_id`` links it to the run that trained it (for lineage).

    >>> mv = register_model_version(project, clf, "fraud", run_id=run.id,  # doctest: +SKIP
    ...                             input_example=X[:5])
    >>> mv.ref, mv.state
    ('fraud@1', 'candidate')
    """
    from keel.registry.packaging import save_model
    from keel.tracking.environment import capture_environment, record_environment

    validate_model_name(name)
    if run_id is not None:
        _require_run(project, run_id)
    environment = capture_environment()
    with tempfile.TemporaryDirectory(prefix="keel-model-") as tmp:
        folder = Path(tmp) / "model"
        package = save_model(model, folder, input_example=input_example, flavor=flavor)
        signature = _signature_dict(package.signature)
        libraries = {str(k): str(v) for k, v in dict(package.library_versions).items()}
        sha = upload_package(
            project.artifacts,
            folder,
            flavor=package.flavor,
            signature=signature,
            library_versions=libraries,
        )
    author = project.user
    with project.metadata.write() as conn:
        now = now_ms()
        row: dict[str, Any] = {
            "model_name": name,
            "version": _next_version(conn, name, now),
            "run_id": run_id,
            "artifact_sha256": sha,
            "flavor": package.flavor,
            "signature": signature,
            "library_versions": libraries,
            "environment_sha256": record_environment(conn, environment),
            "state": CANDIDATE,
            "description": description,
            "created_by": author,
            "created_at": now,
            "updated_at": now,
        }
        conn.execute(insert(model_versions).values(**row))
        audit.record(
            conn,
            action="register",
            entity_kind=audit.MODEL_VERSION,
            entity_ref=f"{name}@{row['version']}",
            actor=author,
            details={"run_id": run_id, "artifact_sha256": sha, "flavor": package.flavor},
            at=now,
        )
    return to_version(row, [])


def get_model_version(project: Project, ref: str, version: int | str | None = None) -> ModelVersion:
    """The version ``ref`` names: ``"fraud@3"``, ``"fraud@champion"`` or ``"fraud"`` (latest).

    >>> get_model_version(project, "fraud@champion").version  # doctest: +SKIP
    3
    >>> get_model_version(project, "fraud", 2).ref  # doctest: +SKIP
    'fraud@2'
    """
    parsed = parse_ref(ref, version)
    with project.metadata.read() as conn:
        return resolve(conn, parsed)


def list_models(project: Project) -> list[RegisteredModel]:
    """Every registered model, by name, with its latest version number and aliases."""
    with project.metadata.read() as conn:
        models = conn.execute(select(registered_models).order_by(registered_models.c.name))
        aliases: dict[str, dict[str, int]] = {}
        for alias in conn.execute(select(model_aliases).order_by(model_aliases.c.alias)):
            aliases.setdefault(alias.model_name, {})[alias.alias] = alias.version
        return [
            RegisteredModel(
                name=m.name,
                description=m.description,
                latest_version=m.latest_version,
                created_at=at_ms(m.created_at),
                updated_at=at_ms(m.updated_at),
                aliases=aliases.get(m.name, {}),
            )
            for m in models
        ]


def list_versions(project: Project, name: str) -> list[ModelVersion]:
    """Every version of model ``name``, oldest first."""
    validate_model_name(name)
    with project.metadata.read() as conn:
        require_model(conn, name)
        aliases = aliases_by_version(conn, name)
        rows = conn.execute(
            select(model_versions)
            .where(model_versions.c.model_name == name)
            .order_by(model_versions.c.version)
        ).mappings()
        return [to_version(row, aliases.get(row["version"], [])) for row in rows]


def load_model(project: Project, ref: str, version: int | str | None = None) -> LoadedModel:
    """Load a registered version for prediction, verifying every byte against its manifest.

    >>> model = load_model(project, "fraud@champion")  # doctest: +SKIP
    >>> model.predict(frame)  # doctest: +SKIP
    """
    from keel.registry import packaging

    found = get_model_version(project, ref, version)
    folder = fetch_package(project.artifacts, found.artifact_sha256, project.keel_dir / "models")
    return packaging.load_model(folder)


def _next_version(conn: Connection, name: str, now: int) -> int:
    insert_ignore(
        conn,
        registered_models,
        [{"name": name, "created_at": now, "updated_at": now, "latest_version": 0}],
        keys=["name"],
    )
    # One statement reads and bumps the counter: it takes the row lock on PostgreSQL and runs
    # under BEGIN IMMEDIATE on SQLite, so no two registrations get the same number.
    bumped = conn.execute(
        update(registered_models)
        .where(registered_models.c.name == name)
        .values(latest_version=registered_models.c.latest_version + 1, updated_at=now)
        .returning(registered_models.c.latest_version)
    ).scalar_one()
    return int(bumped)


def _require_run(project: Project, run_id: str) -> None:
    with project.metadata.read() as conn:
        found = conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first()
    if found is None:
        raise NotFoundError(
            f"run {run_id!r} does not exist; pass the id of a tracked run "
            "(`keel runs list` shows them) or leave run_id out"
        )


def _signature_dict(signature: Any) -> dict[str, Any] | None:
    if signature is None:
        return None
    if isinstance(signature, dict):
        return signature
    to_dict = getattr(signature, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise TypeError(f"save_model returned a signature of unexpected type {type(signature)}")
