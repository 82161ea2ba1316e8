"""The public face of tracking queries and the registry: each function takes an optional
``project`` (default: the project of the working directory, see ``Project.discover``).

The domain packages take the project first and explicitly; these wrappers make the everyday
calls short — ``keel.load_model("fraud@champion")`` — without hiding which project is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.project import Project
    from keel.registry import AliasChange, Lineage, ModelVersion, RegisteredModel
    from keel.registry.loaded import LoadedModel
    from keel.tracking.query import RunComparison
    from keel.tracking.records import RunInfo


def _resolve(project: Project | None) -> Project:
    if project is not None:
        return project
    from keel.project import Project

    return Project.discover()


# --- runs -------------------------------------------------------------------------------------


def get_run(run_id: str, *, project: Project | None = None) -> RunInfo:
    """One run by id (or a unique prefix of at least 6 characters).

    >>> keel.get_run("01a215b6").metrics["auc"]  # doctest: +SKIP
    """
    from keel.tracking.query import get_run as get

    return get(_resolve(project), run_id)


def list_runs(
    *,
    experiment: str | None = None,
    status: str | None = None,
    limit: int = 100,
    project: Project | None = None,
) -> list[RunInfo]:
    """The newest runs, optionally of one experiment or status."""
    from keel.tracking.query import list_runs as runs

    return runs(_resolve(project), experiment=experiment, status=status, limit=limit)


def search_runs(
    filter: str = "",  # the name MLflow users know
    *,
    order_by: str | list[str] | None = None,
    experiments: list[str] | None = None,
    max_results: int = 100,
    project: Project | None = None,
) -> list[RunInfo]:
    """Runs matching a filter, e.g. ``"metrics.auc > 0.9 and params.model = 'lgbm'"``.

    >>> keel.search_runs("metrics.auc > 0.9", order_by="metrics.auc DESC")  # doctest: +SKIP
    """
    from keel.tracking.query import search_runs as search

    return search(
        _resolve(project),
        filter,
        order_by=order_by,
        experiments=experiments,
        max_results=max_results,
    )


def compare_runs(run_ids: Sequence[str], *, project: Project | None = None) -> RunComparison:
    """Params and metrics of several runs side by side, with the keys that differ."""
    from keel.tracking.query import compare_runs as compare

    return compare(_resolve(project), run_ids)


# --- registry ---------------------------------------------------------------------------------


def register_model(
    model: Any,
    name: str,
    *,
    input_example: Any = None,
    run_id: str | None = None,
    flavor: str | None = None,
    description: str | None = None,
    project: Project | None = None,
) -> ModelVersion:
    """Register ``model`` as the next version of ``name`` (outside a run; inside one prefer
    ``run.log_model``, which links the version to the run)."""
    from keel.registry import register_model_version

    return register_model_version(
        _resolve(project),
        model,
        name,
        run_id=run_id,
        input_example=input_example,
        flavor=flavor,
        description=description,
    )


def get_model_version(ref: str, *, project: Project | None = None) -> ModelVersion:
    """A version by reference: ``"fraud@3"``, ``"fraud@champion"`` or ``"fraud"`` (latest)."""
    from keel.registry import get_model_version as get

    return get(_resolve(project), ref)


def list_models(*, project: Project | None = None) -> list[RegisteredModel]:
    """Every registered model with its latest version and aliases."""
    from keel.registry import list_models as models

    return models(_resolve(project))


def load_model(ref: str, *, project: Project | None = None) -> LoadedModel:
    """Load a registered model, its files verified against their sha256 names.

    >>> model = keel.load_model("fraud@champion")  # doctest: +SKIP
    >>> model.predict_proba(frame)  # the signature is enforced  # doctest: +SKIP
    """
    from keel.registry import load_model as load

    return load(_resolve(project), ref)


def set_alias(
    name: str,
    alias: str,
    version: int | str,
    *,
    reason: str | None = None,
    project: Project | None = None,
) -> AliasChange:
    """Point ``alias`` (e.g. ``"champion"``) of model ``name`` at ``version``, recorded with the
    author and ``reason``."""
    from keel.registry import set_alias as move

    return move(_resolve(project), name, alias, version, reason=reason)


def delete_alias(
    name: str, alias: str, *, reason: str | None = None, project: Project | None = None
) -> AliasChange:
    """Remove an alias, recorded in its history."""
    from keel.registry import delete_alias as delete

    return delete(_resolve(project), name, alias, reason=reason)


def approve(
    name: str, version: int | str, *, reason: str | None = None, project: Project | None = None
) -> ModelVersion:
    """Move a candidate version to ``approved``."""
    from keel.registry import transition

    return transition(_resolve(project), name, version, "approved", reason=reason)


def archive(
    name: str, version: int | str, *, reason: str | None = None, project: Project | None = None
) -> ModelVersion:
    """Move a version to ``archived`` (final; refused while an alias points at it)."""
    from keel.registry import transition

    return transition(_resolve(project), name, version, "archived", reason=reason)


def alias_history(
    name: str, alias: str | None = None, *, project: Project | None = None
) -> list[AliasChange]:
    """Every move of the model's aliases (or of one alias): who, when, from, to and why."""
    from keel.registry import alias_history as history

    return history(_resolve(project), name, alias)


def lineage(ref: str, *, project: Project | None = None) -> Lineage:
    """Walk back from a model version to its run, code, environment and inputs."""
    from keel.registry import lineage as walk

    return walk(_resolve(project), ref)


def models_using(
    *,
    dataset: str | None = None,
    feature_view: str | None = None,
    training_set: str | None = None,
    project: Project | None = None,
) -> list[ModelVersion]:
    """Walk forward from an input to every model version trained on it."""
    from keel.registry import models_using as walk

    return walk(
        _resolve(project), dataset=dataset, feature_view=feature_view, training_set=training_set
    )
