"""The end-to-end demo: version the data, define features in the feature store, train three
fraud models as tracked runs (one on a training set built through the store), register them,
approve the best and make it champion, then serve the features online and check them for
training-serving skew. The CLI (`keel demo`) prints the results.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

    from keel.demo.data import DemoData
    from keel.demo.feature_store import ServingCheck
    from keel.features.registry import AppliedView
    from keel.features.training import TrainingSet
    from keel.project import Project
    from keel.registry.versions import ModelVersion
    from keel.tracking.run import Run

MARKER = ".keel-demo"
MODEL_NAME = "fraud"
EXPERIMENT = "fraud-demo"
STEPS = (
    "Create the demo project",
    "Generate the transaction stream and version it (keel data add)",
    "Compute fraud features",
    "Define feature views and build a training set through the feature store",
    "Train a logistic regression (tracked run)",
    "Train a LightGBM model (tracked run)",
    "Train LightGBM with the feature store's features (tracked run, lineage)",
    "Register, approve and promote the champion",
    "Materialize the online store, serve lookups, check training-serving skew",
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
    store_model: ModelVersion
    serving: ServingCheck


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
    from keel.demo.features import FEATURES, build_features
    from keel.features.store import FeatureStore

    on_step(0)
    project = _create_project(directory)
    on_step(1)
    data = generate(n_rows=n_rows, seed=seed)
    write_parquet(data, directory / "data")
    dataset = _version_data(project)
    on_step(2)
    frame = _with_keys(build_features(data), data)
    on_step(3)
    applied = feature_store.define_features(project)
    _commit(project.root, "features.py", "Fraud feature definitions")
    store = FeatureStore(project, log_served=True)
    try:
        training = feature_store.training_set(store, frame)
        on_step(4)
        train, valid = _split(frame, data)
        logreg = _train(project, "logreg", train, valid, dataset, seed)
        on_step(5)
        lgbm = _train(project, "lightgbm", train, valid, dataset, seed)
        on_step(6)
        enriched = _add_columns(frame, training)
        train, valid = _split(enriched, data)
        columns = [*FEATURES, *feature_store.STORE_FEATURES]
        with_store = _train(
            project, "lightgbm", train, valid, dataset, seed, features=columns, training=training
        )
        on_step(7)
        champion, challenger = _promote(project, [logreg, lgbm, with_store])
        on_step(8)
        serving = feature_store.serve_and_check(store, frame)
    finally:
        store.close()
    return DemoResult(
        project=project,
        rows=len(data.transactions),
        dataset_sha256=dataset["ref"],
        champion=champion,
        challenger=challenger,
        run_ids=[v.run_id or "" for v in (logreg[0], lgbm[0], with_store[0])],
        feature_views=applied,
        store_model=with_store[0],
        serving=serving,
    )


def _with_keys(features: pd.DataFrame, data: DemoData) -> pd.DataFrame:
    """The feature frame with the merchant and amount of each transaction (the store's keys
    and the on-demand view's request field)."""
    extra = data.transactions[["transaction_id", "merchant_id", "amount"]]
    merged = features.merge(extra, on="transaction_id", how="left", validate="one_to_one")
    return merged.reset_index(drop=True)


def _add_columns(frame: pd.DataFrame, training: TrainingSet) -> pd.DataFrame:
    """``frame`` with the training set's feature columns (same rows, same order)."""
    out = frame.copy()
    for name in training.features:
        out[name] = training.table.column(name).to_numpy(zero_copy_only=False)
    return out


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


def _version_data(project: Project) -> dict[str, Any]:
    """`keel data add data`: the tables go to the content-addressed cache, a small pointer file
    (data.keel) goes to git, and every run below records the version it trained on."""
    from keel.data import add, resolve

    add(project, ["data"])
    _commit(project.root, "data.keel .gitignore", "Version the demo data")
    version = resolve("data", project=project)
    return {"ref": version.sha256, "path": "data", "files": version.files, "size": version.size}


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


def _split(features: pd.DataFrame, data: DemoData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on the weeks before the marketing campaign, validate on the campaign weeks."""
    scenario = data.scenario
    ts = features["event_timestamp"]
    train = features[ts < scenario.campaign_start]
    valid = features[(ts >= scenario.campaign_start) & (ts < scenario.fraud_shift_start)]
    return train, valid


def _train(
    project: Project,
    kind: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    dataset: dict[str, Any],
    seed: int,
    *,
    features: list[str] | None = None,
    training: TrainingSet | None = None,
) -> tuple[ModelVersion, float]:
    from keel.demo.features import FEATURES, LABEL
    from keel.tracking.fluent import start_run

    columns = features or FEATURES
    name = f"{kind}-feature-store" if training is not None else f"{kind}-baseline"
    with start_run(EXPERIMENT, name=name, project=project) as run:
        run.set_seed(seed)
        run.log_input("dataset", dataset["ref"], name=dataset["path"], details=dataset)
        if training is not None:  # the training set, its feature versions and datasets
            training.log_to(run)
        run.log_params(
            {
                "model": kind,
                "features": ",".join(columns),
                "train_rows": len(train),
                "train_end": str(valid["event_timestamp"].min().date()),
                "valid_rows": len(valid),
            }
        )
        model = _fit(kind, run, train[columns], train[LABEL], valid[columns], valid[LABEL], seed)
        scores = model.predict_proba(valid[columns])[:, 1]
        auc = _log_quality(run, valid[LABEL].to_numpy(), scores)
        version = run.log_model(
            model,
            MODEL_NAME,
            input_example=valid[columns].head(50),
            description=f"{kind} on {len(columns)} transaction features",
        )
    return version, auc


def _fit(
    kind: str, run: Run, x: pd.DataFrame, y: pd.Series, xv: pd.DataFrame, yv: pd.Series, seed: int
) -> Any:
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        run.log_params({"C": 1.0, "max_iter": 300})
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=300)).fit(x, y)
    import lightgbm as lgb

    # One thread: OpenMP workers spin-wait, so on a busy 2-core machine two threads can be ten
    # times slower than one; a fixed thread count also keeps the result reproducible.
    params: dict[str, Any] = {
        "n_estimators": 150,
        "learning_rate": 0.08,
        "num_leaves": 31,
        "n_jobs": 1,
    }
    run.log_params(params)
    model = lgb.LGBMClassifier(**params, random_state=seed, verbose=-1, deterministic=True)

    def log_iteration(env: Any) -> None:  # one point per boosting round: a metric series
        for _, metric, value, _ in env.evaluation_result_list:
            run.log_metric(f"valid_{metric}", value, step=env.iteration)

    model.fit(x, y, eval_X=(xv,), eval_y=(yv,), eval_metric="auc", callbacks=[log_iteration])
    return model


def _log_quality(run: Run, y: Any, scores: Any) -> float:
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    auc = float(roc_auc_score(y, scores))
    run.log_metrics(
        {
            "auc": auc,
            "average_precision": float(average_precision_score(y, scores)),
            "log_loss": float(log_loss(y, scores)),
        }
    )
    return auc


def _promote(
    project: Project, candidates: list[tuple[ModelVersion, float]]
) -> tuple[ModelVersion, ModelVersion]:
    from keel.registry.aliases import set_alias, transition
    from keel.registry.versions import get_model_version

    ranked = sorted(candidates, key=lambda pair: -pair[1])
    (best, best_auc), (other, other_auc) = ranked[0], ranked[1]
    reason = f"validation AUC {best_auc:.4f} vs {other_auc:.4f} (campaign weeks)"
    transition(project, MODEL_NAME, best.version, "approved", reason=reason)
    set_alias(project, MODEL_NAME, "champion", best.version, reason=reason)
    set_alias(project, MODEL_NAME, "challenger", other.version, reason="runner-up")
    return (
        get_model_version(project, f"{MODEL_NAME}@champion"),
        get_model_version(project, f"{MODEL_NAME}@challenger"),
    )
