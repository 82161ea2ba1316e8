"""Lineage: from a model version back to everything that made it, and from an input forward
to every model version built on it.

Backward: version -> run (params, code commit and diff, environment) -> the run's inputs
(dataset versions, feature-view versions, training-set fingerprints) -> its parent runs and
their inputs. Forward: an input -> the runs that recorded it -> those runs' nested runs ->
the model versions registered from any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, or_, select

from keel.core.hashing import is_sha256
from keel.errors import InvalidInputError, NotFoundError
from keel.metadata.schema import model_versions, run_inputs, runs
from keel.registry.lookup import ModelVersion, aliases_by_version, resolve, to_version
from keel.registry.refs import parse_ref

if TYPE_CHECKING:
    from keel.project import Project
    from keel.tracking.records import RunInfo

INPUT_KINDS = ("dataset", "feature_view", "training_set")
_MIN_PREFIX = 6  # shortest hash prefix accepted for --dataset / --training-set


@dataclass(frozen=True)
class CodeInfo:
    commit: str | None
    branch: str | None
    dirty: bool | None
    diff_sha256: str | None  # artifact holding the uncommitted diff


@dataclass(frozen=True)
class EnvironmentInfo:
    sha256: str
    python_version: str
    platform: str
    package_count: int


@dataclass(frozen=True)
class LineageInput:
    """An input recorded by the model's run, or by one of its parent runs (``run_id`` says)."""

    kind: str  # dataset | feature_view | training_set
    ref: str  # content hash, "view@version" or fingerprint
    name: str | None
    run_id: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lineage:
    """Everything a model version came from. ``run`` is None for a version registered without
    one; ``parents`` lists the run's parent, grandparent, ... nearest first."""

    model: ModelVersion
    run: RunInfo | None
    code: CodeInfo | None
    environment: EnvironmentInfo | None
    params: dict[str, str]
    datasets: list[LineageInput]
    feature_views: list[LineageInput]
    training_sets: list[LineageInput]
    parents: list[RunInfo]


def lineage(project: Project, ref: str) -> Lineage:
    """Walk back from model version ``ref`` ("fraud@3", "fraud@champion", "fraud").

    >>> trail = lineage(project, "fraud@champion")  # doctest: +SKIP
    >>> trail.code.commit, [d.ref for d in trail.datasets]  # doctest: +SKIP
    ('4f2c9e1...', ['9b1d...'])
    """
    from keel.tracking.query import get_run

    with project.metadata.read() as conn:
        model = resolve(conn, parse_ref(ref))
    run = get_run(project, model.run_id) if model.run_id else None
    parents: list[RunInfo] = []
    seen = {run.id} if run else set()
    parent_id = run.parent_run_id if run else None
    while parent_id and parent_id not in seen:  # the guard only matters for corrupt data
        parent = get_run(project, parent_id)
        parents.append(parent)
        seen.add(parent_id)
        parent_id = parent.parent_run_id
    inputs = _inputs([run, *parents] if run else [])
    return Lineage(
        model=model,
        run=run,
        code=_code(run),
        environment=_environment(project, model.environment_sha256 or _run_env(run)),
        params=dict(run.params) if run else {},
        datasets=[i for i in inputs if i.kind == "dataset"],
        feature_views=[i for i in inputs if i.kind == "feature_view"],
        training_sets=[i for i in inputs if i.kind == "training_set"],
        parents=parents,
    )


def models_using(
    project: Project,
    *,
    dataset: str | None = None,
    feature_view: str | None = None,
    training_set: str | None = None,
) -> list[ModelVersion]:
    """Every model version trained on an input, directly or through a parent run that used it.

    ``dataset`` and ``training_set`` take a hash (or a prefix of at least 6 characters);
    ``feature_view`` takes "view@version", or "view" for every version of the view.

    >>> [mv.ref for mv in models_using(project, dataset="9b1d5e")]  # doctest: +SKIP
    ['fraud@2', 'fraud@3']
    """
    given = {
        kind: value
        for kind, value in zip(INPUT_KINDS, (dataset, feature_view, training_set), strict=True)
        if value is not None
    }
    if len(given) != 1:
        raise InvalidInputError(
            "name exactly one input: dataset=HASH, feature_view='view@version' or "
            f"training_set=FINGERPRINT (got {', '.join(given) or 'none'})"
        )
    kind, value = next(iter(given.items()))
    with project.metadata.read() as conn:
        direct = conn.execute(
            select(run_inputs.c.run_id).where(run_inputs.c.kind == kind, _matches(kind, value))
        ).scalars()
        run_ids = _with_descendants(conn, set(direct))
        if not run_ids:
            return []
        rows = conn.execute(
            select(model_versions)
            .where(model_versions.c.run_id.in_(sorted(run_ids)))
            .order_by(model_versions.c.model_name, model_versions.c.version)
        ).mappings()
        aliases: dict[str, dict[int, list[str]]] = {}
        found = []
        for row in rows:
            name = row["model_name"]
            if name not in aliases:
                aliases[name] = aliases_by_version(conn, name)
            found.append(to_version(row, aliases[name].get(row["version"], [])))
    return found


def _matches(kind: str, value: str) -> ColumnElement[bool]:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{kind} {value!r} is invalid; pass a non-empty string")
    ref = run_inputs.c.ref
    if kind == "feature_view" and "@" not in value:
        return or_(ref == value, ref.startswith(value + "@", autoescape=True))
    if kind != "feature_view" and _is_hash_prefix(value):
        return ref.startswith(value, autoescape=True)
    return ref == value


def _is_hash_prefix(value: str) -> bool:
    return (
        _MIN_PREFIX <= len(value) < 64
        and all(c in "0123456789abcdef" for c in value)
        and not is_sha256(value)
    )


def _with_descendants(conn: Connection, run_ids: set[str]) -> set[str]:
    """The runs and all runs nested under them (children, grandchildren, ...)."""
    found = set(run_ids)
    frontier = set(run_ids)
    while frontier:
        children = set(
            conn.execute(
                select(runs.c.id).where(runs.c.parent_run_id.in_(sorted(frontier)))
            ).scalars()
        )
        frontier = children - found
        found |= frontier
    return found


def _inputs(chain: list[RunInfo]) -> list[LineageInput]:
    """Inputs of the run and its parents; an input the run itself recorded wins over a parent's."""
    out: dict[tuple[str, str], LineageInput] = {}
    for run in chain:
        for item in run.inputs:
            key = (item.kind, item.ref)
            if key not in out:
                out[key] = LineageInput(item.kind, item.ref, item.name, run.id, dict(item.details))
    return list(out.values())


def _code(run: RunInfo | None) -> CodeInfo | None:
    if run is None:
        return None
    return CodeInfo(run.git_commit, run.git_branch, run.git_dirty, run.git_diff_sha256)


def _run_env(run: RunInfo | None) -> str | None:
    return run.environment_sha256 if run else None


def _environment(project: Project, sha256: str | None) -> EnvironmentInfo | None:
    from keel.tracking.query import get_environment

    if sha256 is None:
        return None
    try:
        env = get_environment(project, sha256)
    except NotFoundError:  # the row is referenced by a foreign key; only a damaged db lacks it
        return None
    return EnvironmentInfo(sha256, env.python_version, env.platform, len(env.packages))
