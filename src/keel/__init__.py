"""Keel: get machine-learning models out of the notebook and keep them healthy in production.

    import keel

    with keel.start_run(experiment="fraud") as run:
        run.log_params({"model": "lgbm"})
        run.log_metric("auc", 0.93)
        version = run.log_model(model, name="fraud", input_example=X.head())
    keel.set_alias("fraud", "champion", version.version, reason="best AUC")
    keel.load_model("fraud@champion").predict(X_new)

Names resolve lazily on first use, so ``import keel`` stays fast (no SQLAlchemy, pandas or
model libraries are imported until they are needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ArtifactCorruptedError": "keel.errors",
    "ConfigError": "keel.errors",
    "FeatureStore": "keel.features.store",
    "FilterSyntaxError": "keel.errors",
    "FlavorError": "keel.errors",
    "InvalidInputError": "keel.errors",
    "KeelError": "keel.errors",
    "LoadedModel": "keel.registry.loaded",
    "ModelVersion": "keel.registry.versions",
    "NondeterminismWarning": "keel.training.seeding",
    "NotFoundError": "keel.errors",
    "Params": "keel.training.params",
    "Project": "keel.project",
    "ProjectNotFoundError": "keel.errors",
    "ReproductionReport": "keel.training.reproduce",
    "Run": "keel.tracking.run",
    "RunInfo": "keel.tracking.records",
    "SchemaTooNewError": "keel.errors",
    "SignatureError": "keel.errors",
    "StateError": "keel.errors",
    "StoreError": "keel.errors",
    "TimeSplit": "keel.training.split",
    "TrainResult": "keel.training.train",
    "Trainer": "keel.training.trainers",
    "TrainingData": "keel.training.trainers",
    "active_run": "keel.tracking.fluent",
    "alias_history": "keel.api",
    "approve": "keel.api",
    "archive": "keel.api",
    "compare_runs": "keel.api",
    "delete_alias": "keel.api",
    "deterministic_params": "keel.training.seeding",
    "get_model_version": "keel.api",
    "get_run": "keel.api",
    "init_project": "keel.project",
    "lineage": "keel.api",
    "list_models": "keel.api",
    "list_runs": "keel.api",
    "load_model": "keel.api",
    "log_artifact": "keel.tracking.fluent",
    "log_input": "keel.tracking.fluent",
    "log_metric": "keel.tracking.fluent",
    "log_metrics": "keel.tracking.fluent",
    "log_param": "keel.tracking.fluent",
    "log_params": "keel.tracking.fluent",
    "models_using": "keel.api",
    "register_model": "keel.api",
    "reproduce": "keel.training.reproduce",
    "search_runs": "keel.api",
    "seed_everything": "keel.training.seeding",
    "set_alias": "keel.api",
    "set_tag": "keel.tracking.fluent",
    "set_tags": "keel.tracking.fluent",
    "start_run": "keel.tracking.fluent",
    "train": "keel.training.train",
    "trainer": "keel.training.trainers",
}

__all__ = [
    "ArtifactCorruptedError",
    "ConfigError",
    "FeatureStore",
    "FilterSyntaxError",
    "FlavorError",
    "InvalidInputError",
    "KeelError",
    "LoadedModel",
    "ModelVersion",
    "NondeterminismWarning",
    "NotFoundError",
    "Params",
    "Project",
    "ProjectNotFoundError",
    "ReproductionReport",
    "Run",
    "RunInfo",
    "SchemaTooNewError",
    "SignatureError",
    "StateError",
    "StoreError",
    "TimeSplit",
    "TrainResult",
    "Trainer",
    "TrainingData",
    "active_run",
    "alias_history",
    "approve",
    "archive",
    "compare_runs",
    "delete_alias",
    "deterministic_params",
    "get_model_version",
    "get_run",
    "init_project",
    "lineage",
    "list_models",
    "list_runs",
    "load_model",
    "log_artifact",
    "log_input",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "models_using",
    "register_model",
    "reproduce",
    "search_runs",
    "seed_everything",
    "set_alias",
    "set_tag",
    "set_tags",
    "start_run",
    "train",
    "trainer",
]

if TYPE_CHECKING:
    from keel.api import (
        alias_history,
        approve,
        archive,
        compare_runs,
        delete_alias,
        get_model_version,
        get_run,
        lineage,
        list_models,
        list_runs,
        load_model,
        models_using,
        register_model,
        search_runs,
        set_alias,
    )
    from keel.errors import (
        ArtifactCorruptedError,
        ConfigError,
        FilterSyntaxError,
        FlavorError,
        InvalidInputError,
        KeelError,
        NotFoundError,
        ProjectNotFoundError,
        SchemaTooNewError,
        SignatureError,
        StateError,
        StoreError,
    )
    from keel.features.store import FeatureStore
    from keel.project import Project, init_project
    from keel.registry.loaded import LoadedModel
    from keel.registry.versions import ModelVersion
    from keel.tracking.fluent import (
        active_run,
        log_artifact,
        log_input,
        log_metric,
        log_metrics,
        log_param,
        log_params,
        set_tag,
        set_tags,
        start_run,
    )
    from keel.tracking.records import RunInfo
    from keel.tracking.run import Run
    from keel.training.params import Params
    from keel.training.reproduce import ReproductionReport, reproduce
    from keel.training.seeding import NondeterminismWarning, deterministic_params, seed_everything
    from keel.training.split import TimeSplit
    from keel.training.train import TrainResult, train
    from keel.training.trainers import Trainer, TrainingData, trainer


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
