"""`keel train`: run a declared trainer as a tracked run with complete lineage.

Everything that can be wrong is checked before any work: the trainer exists, the params have
their declared types, the entities' dataset version is readable (from the cache or remote),
the split leaves rows on both sides and the feature definitions are registered. Then one run
records the params, seed, code and environment (tracking), the training set with its feature
and dataset versions (feature store), the evaluation on the validation period, the artifacts
``keel/train.json`` and ``keel/validation.parquet``, and registers the model.

    result = train("fraud", params={"num_leaves": 15}, seed=0, project=project)
    result.model_version.ref, result.metrics["auc"]
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

    from keel.data.api import DatasetVersion
    from keel.features.store import FeatureStore
    from keel.project import Project
    from keel.registry.lookup import ModelVersion
    from keel.tracking.run import Run
    from keel.training.params import ResolvedParams
    from keel.training.split import ResolvedSplit
    from keel.training.trainers import Trainer, TrainingData

STEPS = (
    "Load the trainer and check its inputs",
    "Build the training set through the feature store",
    "Fit the model",
    "Evaluate on the validation period",
    "Record artifacts and register the model",
)
REPRODUCTIONS = "reproductions"
TRAIN_RECORD = "keel/train.json"
VALIDATION_SET = "keel/validation.parquet"
RESULT_FILE = "result.json"  # in the output folder: run id, artifact hash, metrics


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced: its ``run_id``, the registered ``model_version`` (None
    when not registering), the validation ``metrics``, the model's ``artifact_sha256`` (of
    the registered version, or of the output folder's model), the ``record`` logged as
    keel/train.json and any ``nondeterminism`` reasons warned."""

    run_id: str
    trainer: str
    model_version: ModelVersion | None
    metrics: dict[str, float]
    artifact_sha256: str | None
    record: dict[str, Any]
    nondeterminism: list[str] = field(default_factory=list)
    output: Path | None = None


@dataclass(frozen=True)
class _Prepared:
    trainer: Trainer
    file: str
    params: ResolvedParams
    entities: pd.DataFrame
    dataset: DatasetVersion | None
    split: ResolvedSplit


def train(
    name: str,
    *,
    params: Mapping[str, Any] | None = None,
    data_rev: str | None = None,
    seed: int = 0,
    experiment: str | None = None,
    register: bool = True,
    file: str | Path | None = None,
    output: str | Path | None = None,
    reproduce: bool = False,
    project: Project | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train the trainer ``name`` of ``file`` (default ``train.py`` in the project root).

    ``params`` override the declared defaults (text is parsed to the declared types);
    ``data_rev`` reads the entities at that git revision; ``seed`` seeds every generator
    (default 0: runs repeat unless another seed is asked for); ``experiment`` defaults to the
    trainer's name. ``register=False`` logs no model version; ``output`` also saves the model
    into that folder with ``result.json``. ``reproduce=True`` rebuilds a past model: feature
    definitions may be any registered version, nothing is registered and the run goes to the
    "reproductions" experiment. ``on_step(i)`` is called as step i of STEPS starts.

    >>> result = train("fraud", params={"num_leaves": "15"}, project=project)  # doctest: +SKIP
    >>> result.model_version.ref  # doctest: +SKIP
    'fraud@3'
    """
    from keel.features.store import FeatureStore

    step = on_step or (lambda _: None)
    if project is None:
        from keel.project import Project

        project = Project.discover()
    step(0)
    target = None if output is None else Path(output)
    if target is not None and target.exists() and any(target.iterdir()):
        raise InvalidInputError(f"output folder {target} is not empty; pass an empty folder")
    prepared = _prepare(project, name, params or {}, data_rev, file)
    from keel.training.seeding import seed_everything

    seed_everything(seed)  # validates the seed before any work
    store = FeatureStore(project, require_current=not reproduce, data_rev=data_rev)
    try:
        store.select(**prepared.trainer.feature_request)  # definitions registered, refs known
        return _run(
            project,
            store,
            prepared,
            seed=seed,
            data_rev=data_rev,
            experiment=experiment or (REPRODUCTIONS if reproduce else prepared.trainer.name),
            register=register and not reproduce,
            output=target,
            kind="reproduce" if reproduce else "train",
            step=step,
        )
    finally:
        store.close()


def _prepare(
    project: Project,
    name: str,
    params: Mapping[str, Any],
    data_rev: str | None,
    file: str | Path | None,
) -> _Prepared:
    from keel.training.trainers import DEFAULT_FILE, get_trainer, read_entities

    root = project.root.resolve()
    path = Path(file) if file is not None else Path(DEFAULT_FILE)
    path = (path if path.is_absolute() else root / path).resolve()
    trainer = get_trainer(name, path, root)
    resolved = trainer.params.resolve(params)
    frame, dataset = read_entities(project, trainer, data_rev)
    split = trainer.split.resolve(frame[trainer.timestamp])
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:  # a trainer file outside the project: record where it was
        relative = str(path)
    return _Prepared(trainer, relative, resolved, frame, dataset, split)


def _run(
    project: Project,
    store: FeatureStore,
    prepared: _Prepared,
    *,
    seed: int,
    data_rev: str | None,
    experiment: str,
    register: bool,
    output: Path | None,
    kind: str,
    step: Callable[[int], None],
) -> TrainResult:
    from keel.tracking.fluent import start_run

    trainer = prepared.trainer
    tags = {"keel.trainer": trainer.name, "keel.trainer_file": prepared.file, "keel.kind": kind}
    if data_rev is not None:
        tags["keel.data_rev"] = data_rev
    with start_run(
        experiment, params=prepared.params.text, tags=tags, seeds={"global": seed}, project=project
    ) as run:
        step(1)
        data, fingerprint = _training_data(store, prepared, seed, run)
        step(2)
        model, extra, reasons = _fit(trainer, data, prepared.params.value, seed)
        step(3)
        from keel.training.evaluate import evaluate

        metrics = evaluate(model, data.X_valid, data.y_valid) | extra
        run.log_metrics(metrics)
        step(4)
        record = _record(prepared, data, model, seed, data_rev, reasons)
        record["training_set"] = fingerprint
        record["experiment"] = experiment
        run.log_dict(record, TRAIN_RECORD)
        _log_validation(run, data)
        version = None
        example = data.X_valid.head(20)
        if register:
            version = run.log_model(
                model, trainer.name, input_example=example, flavor=trainer.flavor
            )
        sha = version.artifact_sha256 if version is not None else None
        if output is not None:
            result = {"run_id": run.id, "metrics": metrics, "train": record}
            sha = _write_output(project, output, model, example, trainer.flavor, result)
    return TrainResult(run.id, trainer.name, version, metrics, sha, record, reasons, output)


def _training_data(
    store: FeatureStore, prepared: _Prepared, seed: int, run: Run
) -> tuple[TrainingData, str]:
    from keel.training.split import split_frame
    from keel.training.trainers import TrainingData

    trainer = prepared.trainer
    training = store.get_training_set(
        prepared.entities, **trainer.feature_request, timestamp_column=trainer.timestamp, run=run
    )
    if prepared.dataset is not None:  # after the store's inputs, so these details are kept
        details = {"role": "entities", "size": prepared.dataset.size}
        run.log_input(
            "dataset", prepared.dataset.sha256, name=prepared.dataset.path, details=details
        )
    train_rows, valid_rows = split_frame(training.to_pandas(), trainer.timestamp, prepared.split)
    data = TrainingData(
        train_rows, valid_rows, list(training.features), trainer.label, seed, trainer.timestamp
    )
    return data, training.fingerprint


def _fit(
    trainer: Trainer, data: TrainingData, params: Any, seed: int
) -> tuple[Any, dict[str, float], list[str]]:
    from keel.training.seeding import check_determinism, seed_everything

    seed_everything(seed)  # again: the same generator state whatever ran before the fit
    returned = trainer(data, params)
    extra: dict[str, float] = {}
    if isinstance(returned, tuple):
        if len(returned) != 2 or not isinstance(returned[1], Mapping):
            raise InvalidInputError(
                f"trainer {trainer.name!r} returned a tuple of {len(returned)}; return the "
                "model, or (model, {'metric': value})"
            )
        returned, extra = returned[0], {str(k): float(v) for k, v in returned[1].items()}
    if returned is None:
        raise InvalidInputError(f"trainer {trainer.name!r} returned None; return the fitted model")
    return returned, extra, check_determinism(returned)


def _record(
    prepared: _Prepared,
    data: TrainingData,
    model: Any,
    seed: int,
    data_rev: str | None,
    reasons: list[str],
) -> dict[str, Any]:
    from keel import __version__
    from keel.training.seeding import thread_counts

    trainer = prepared.trainer
    split = prepared.split.describe() | {"declared": trainer.split.describe()}
    split |= {"train_rows": len(data.train), "valid_rows": len(data.valid)}
    return {
        "trainer": trainer.name,
        "file": prepared.file,
        "params": prepared.params.values,
        "seed": seed,
        "data_rev": data_rev,
        "split": split,
        "threads": thread_counts(model),
        "entities": trainer.entities,
        "entities_sha256": None if prepared.dataset is None else prepared.dataset.sha256,
        "timestamp": trainer.timestamp,
        "label": trainer.label,
        "features": data.features,
        "train_rows": len(data.train),
        "valid_rows": len(data.valid),
        "nondeterminism": reasons,
        "keel_version": __version__,
    }


def _log_validation(run: Run, data: TrainingData) -> None:
    frame = data.valid[[*data.features, data.label]]
    with tempfile.TemporaryDirectory(prefix="keel-valid-") as tmp:
        path = Path(tmp) / "validation.parquet"
        frame.to_parquet(path, index=False)
        run.log_artifact(path, VALIDATION_SET)


def _write_output(
    project: Project,
    output: Path,
    model: Any,
    example: pd.DataFrame,
    flavor: str | None,
    result: dict[str, Any],
) -> str:
    """Save the model under ``output/model`` (the same call and arguments as registering)
    and hash it as registering would (the same manifest), so a reproduction compares hashes
    without registering a version; ``result.json`` and ``train.json`` go next to it."""
    import json

    from keel.registry.manifest import upload_package
    from keel.registry.packaging import save_model

    package = save_model(model, output / "model", input_example=example, flavor=flavor)
    signature = None if package.signature is None else dict(package.signature.to_dict())
    sha = upload_package(
        project.artifacts,
        output / "model",
        flavor=package.flavor,
        signature=signature,
        library_versions={str(k): str(v) for k, v in package.library_versions.items()},
    )
    record = result.pop("train")
    result["artifact_sha256"] = sha
    (output / RESULT_FILE).write_text(json.dumps(result, indent=2, sort_keys=True), "utf-8")
    (output / "train.json").write_text(json.dumps(record, indent=2, sort_keys=True), "utf-8")
    return sha
