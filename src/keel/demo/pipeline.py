"""The end-to-end demo: version the data, define features in the feature store, train two
fraud models with `keel train` (training sets built through the store, runs with full lineage),
register them, approve the better one and make it champion, then serve the features online and
check them for training-serving skew. The CLI (`keel demo`) prints the results.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    from keel.demo.data_share import DataShare
    from keel.demo.deployment import DeploymentDemo
    from keel.demo.feature_store import ServingCheck
    from keel.features.registry import AppliedView
    from keel.project import Project
    from keel.registry.versions import ModelVersion
    from keel.training.reproduce import ReproductionReport
    from keel.training.train import TrainResult

MARKER = ".keel-demo"
MODEL_NAME = "fraud"
EXPERIMENT = "fraud-demo"
STEPS = (
    "Create the demo project",
    "Generate the transaction stream, version it (keel data add) and share it (keel data push, "
    "then keel data pull into a fresh clone)",
    "Define the fraud features (keel features apply)",
    "Train a logistic regression (keel train fraud --param model=logreg)",
    "Train a LightGBM model (keel train fraud --param model=lightgbm)",
    "Register, approve and promote the champion",
    "Materialize the online store, serve lookups, check training-serving skew",
    "Serve the champion, shadow the challenger, canary a retrained model to 100 %",
    "Reproduce the champion from its recorded code, data and seed (keel reproduce)",
)


@dataclass(frozen=True)
class DemoResult:
    project: Project
    rows: int
    dataset_sha256: str
    champion: ModelVersion
    challenger: ModelVersion
    run_ids: list[str]
    feature_views: list[AppliedView]
    serving: ServingCheck
    deployment: DeploymentDemo
    reproduction: ReproductionReport
    shared: DataShare


def prepare_directory(directory: Path) -> None:
    """Start from a clean folder: reuse one made by an earlier demo, refuse anything else."""
    if directory.exists():
        if not (directory / MARKER).exists() and any(directory.iterdir()):
            raise InvalidInputError(
                f"{directory} exists and was not made by `keel demo`; "
                "pass another folder with --dir, or remove it"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("made by `keel demo`; safe to delete\n", "utf-8")


def run_demo(
    directory: Path,
    *,
    n_rows: int = 1_000_000,
    seed: int = 7,
    on_step: Callable[[int], None] = lambda _: None,
) -> DemoResult:
    """Run the whole demo in ``directory``; ``on_step(i)`` is called as step i of STEPS starts."""
    from keel.demo import feature_store
    from keel.demo.data import generate, write_parquet
    from keel.demo.trainers import TRAIN_PY
    from keel.features.store import FeatureStore

    on_step(0)
    project = _create_project(directory)
    on_step(1)
    data = generate(n_rows=n_rows, seed=seed)
    write_parquet(data, directory / "data")
    _version_data(project)
    from keel.demo.data_share import share_data

    shared = share_data(project, partial(_commit, project.root))
    on_step(2)
    applied = feature_store.define_features(project)
    (project.root / "train.py").write_text(TRAIN_PY, "utf-8")
    _commit(project.root, "features.py train.py", "Fraud features and how the model is trained")
    on_step(3)
    logreg = _train(project, "logreg", seed)
    on_step(4)
    lgbm = _train(project, "lightgbm", seed)
    on_step(5)
    champion, challenger = _promote(project, [logreg, lgbm])
    on_step(6)
    with FeatureStore(project, log_served=True) as store:
        serving = feature_store.serve_and_check(store, data.transactions)
    on_step(7)
    from keel.demo.deployment import run_deployment

    # The candidate: the champion's kind of model retrained with a slightly different setting.
    won = logreg.model_version is not None and logreg.model_version.version == champion.version
    kind = logreg if won else lgbm
    tweak = {"C": "0.8"} if kind is logreg else {"n_estimators": "170"}
    candidate = _train(project, str(kind.record["params"]["model"]), seed, extra=tweak)
    if candidate.model_version is None:
        raise InvalidInputError("the demo's candidate training registered no model version")
    deployment = run_deployment(
        project,
        data.transactions,
        f"{MODEL_NAME}@{champion.version}",
        f"{MODEL_NAME}@{challenger.version}",
        f"{MODEL_NAME}@{candidate.model_version.version}",
    )
    on_step(8)
    from keel.training.reproduce import reproduce

    reproduction = reproduce(project, f"{MODEL_NAME}@champion")
    return DemoResult(
        project=project,
        rows=len(data.transactions),
        # What the runs trained on: the transactions file inside the versioned folder.
        dataset_sha256=_file_version(project, "data/transactions.parquet"),
        champion=champion,
        challenger=challenger,
        run_ids=[r.run_id for r in (logreg, lgbm)],
        feature_views=applied,
        serving=serving,
        deployment=deployment,
        reproduction=reproduction,
        shared=shared,
    )


def _file_version(project: Project, path: str) -> str:
    from keel.data import resolve

    return resolve(path, project=project).sha256


def _train(
    project: Project, kind: str, seed: int, *, extra: dict[str, str] | None = None
) -> TrainResult:
    """`keel train fraud --param model=KIND [--param ...] --seed SEED --experiment fraud-demo`."""
    from keel.training.train import train

    params = {"model": kind, **(extra or {})}
    return train(MODEL_NAME, params=params, seed=seed, experiment=EXPERIMENT, project=project)


def _create_project(directory: Path) -> Project:
    from keel.project import Project, init_project

    file = init_project(directory, name="keel-demo", force=True)
    # The demo shows the approval workflow: champion may only point at an approved version.
    text = file.read_text("utf-8").replace("require_approval: []", "require_approval: [champion]")
    file.write_text(text, "utf-8")
    with (directory / ".gitignore").open("a", encoding="utf-8") as ignore:
        ignore.write(f"{MARKER}\n")
    _git(directory, "init", "-q", "-b", "main")
    _git(directory, "add", "keel.yaml", ".gitignore")
    _git(
        directory,
        "-c",
        "user.name=Keel demo",
        "-c",
        "user.email=demo@keel.dev",
        "commit",
        "-q",
        "-m",
        "Keel demo project",
    )
    return Project(directory, environ={})


def _version_data(project: Project) -> None:
    """`keel data add data`: the tables go to the content-addressed cache and a small pointer
    file (data.keel) goes to git; every run below records the version it trained on."""
    from keel.data import add

    add(project, ["data"])
    _commit(project.root, "data.keel .gitignore", "Version the demo data")


def _commit(directory: Path, paths: str, message: str) -> None:
    _git(directory, "add", *paths.split())
    _git(
        directory,
        "-c",
        "user.name=Keel demo",
        "-c",
        "user.email=demo@keel.dev",
        "commit",
        "-q",
        "-m",
        message,
    )


def _git(directory: Path, *args: str) -> None:
    # The demo's runs record a real commit when git exists; without git they record none.
    try:
        subprocess.run(["git", *args], cwd=directory, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return


def _promote(project: Project, results: list[TrainResult]) -> tuple[ModelVersion, ModelVersion]:
    from keel.registry.aliases import set_alias, transition
    from keel.registry.versions import get_model_version

    ranked = sorted(results, key=lambda result: -result.metrics["auc"])
    best, other = ranked[0], ranked[1]
    if best.model_version is None or other.model_version is None:
        raise InvalidInputError("the demo's trainings registered no model version")
    reason = f"validation AUC {best.metrics['auc']:.4f} vs {other.metrics['auc']:.4f} (campaign)"
    transition(project, MODEL_NAME, best.model_version.version, "approved", reason=reason)
    set_alias(project, MODEL_NAME, "champion", best.model_version.version, reason=reason)
    set_alias(project, MODEL_NAME, "challenger", other.model_version.version, reason="runner-up")
    return (
        get_model_version(project, f"{MODEL_NAME}@champion"),
        get_model_version(project, f"{MODEL_NAME}@challenger"),
    )
