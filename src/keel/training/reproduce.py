"""`keel reproduce`: rebuild a registered model from what its run recorded and check that the
result is the same model.

The recorded commit is checked out in a git worktree under ``.keel/reproduce/<id>/`` with the
run's uncommitted diff applied, the recorded dataset versions are restored into it, and the
trainer runs there again (``python -m keel train NAME --reproduce``) with the recorded params
and seed, against this project's own metadata database, artifact store and data cache. The
new model is compared with the registered one: package hash, then predictions on the recorded
validation set.

    report = reproduce(project, "fraud@3")
    report.status          # 'identical', 'within tolerance' or 'not reproduced'
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError, StateError
from keel.training.worktree import (
    DatasetCheck,
    Worktree,
    check_datasets_available,
    create_worktree,
    remove_worktree,
    repository_of,
    require_commit,
    restore_data,
    store_settings,
)

if TYPE_CHECKING:
    from keel.project import Project
    from keel.registry.lookup import ModelVersion
    from keel.tracking.records import EnvironmentRecord, RunInfo
    from keel.training.envcompare import EnvironmentDiff
    from keel.training.modelcompare import ModelComparison

Progress = Callable[[str], None]
TRAIN_RECORD = "keel/train.json"
VALIDATION_SET = "keel/validation.parquet"
_THREAD_VARIABLES = {"omp": "OMP_NUM_THREADS", "mkl": "MKL_NUM_THREADS"}
_THREAD_VARIABLES |= {"openblas": "OPENBLAS_NUM_THREADS", "python_hash_seed": "PYTHONHASHSEED"}


class ReproductionError(StateError):
    """Raised when the recorded trainer cannot be run again (it failed in the worktree)."""


@dataclass(frozen=True)
class ReproductionReport:
    """What `keel reproduce` found. ``reproduced`` is True when the package is bit-identical,
    or when a tolerance was given and every prediction is within it."""

    model: str
    run_id: str
    new_run_id: str
    commit: str
    diff_applied: bool
    omitted_files: list[str]
    datasets: list[DatasetCheck]
    environment: EnvironmentDiff
    isolated_environment: bool
    comparison: ModelComparison
    metrics: dict[str, tuple[float | None, float | None]]  # name -> (recorded, reproduced)
    nondeterminism: list[str] = field(default_factory=list)
    trainer: str = ""
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    rtol: float | None = None
    atol: float | None = None
    worktree: Path | None = None  # kept with --keep

    @property
    def status(self) -> str:
        if self.comparison.identical:
            return "identical"
        predictions = self.comparison.predictions
        if (self.rtol is None and self.atol is None) or predictions is None:
            return "not reproduced"
        if predictions.within(self.rtol or 0.0, self.atol or 0.0):
            return "within tolerance"
        return "not reproduced"

    @property
    def reproduced(self) -> bool:
        return self.status != "not reproduced"


@dataclass(frozen=True)
class _Recorded:
    version: ModelVersion
    run: RunInfo
    record: dict[str, Any]
    diff: bytes | None
    datasets: dict[str, str]  # path -> sha256
    environment: EnvironmentRecord


def reproduce(
    project: Project,
    ref: str,
    *,
    env: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    keep: bool = False,
    progress: Progress | None = None,
) -> ReproductionReport:
    """Rebuild the model version ``ref`` (``"fraud@3"``, ``"fraud@champion"``) from its
    recorded code, data, params and seed, and compare it with the registered one. With
    ``env`` the trainer runs in a new virtual environment holding the recorded package
    versions. ``keep`` leaves the worktree (and its output) in place for inspection.

    >>> report = reproduce(project, "fraud@3", atol=1e-9)     # doctest: +SKIP
    >>> report.reproduced, report.comparison.predictions.max_abs  # doctest: +SKIP
    (True, 0.0)
    """
    say = progress or (lambda _: None)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not value >= 0:
            raise InvalidInputError(f"--{name} {value!r} must be a number >= 0, e.g. 1e-6")
    recorded = _read_recorded(project, ref)
    commit = recorded.run.git_commit
    if commit is None:
        raise StateError(
            f"run {recorded.run.id} of {ref} recorded no git commit (it ran outside a git "
            "repository), so its code cannot be rebuilt"
        )
    require_commit(repository_of(project.root), commit)
    check_datasets_available(project, recorded.datasets)
    from keel.core.ids import new_id

    folder = project.keel_dir / "reproduce" / new_id()
    say(f"checking out {commit[:12]} in {folder}")
    tree = create_worktree(project.root, commit, diff=recorded.diff, dest=folder / "tree")
    try:
        return _rebuild(
            project, recorded, tree, folder, env=env, rtol=rtol, atol=atol, keep=keep, say=say
        )
    finally:
        if not keep:
            remove_worktree(tree)
            shutil.rmtree(folder, ignore_errors=True)


def _rebuild(
    project: Project,
    recorded: _Recorded,
    tree: Worktree,
    folder: Path,
    *,
    env: bool,
    rtol: float | None,
    atol: float | None,
    keep: bool,
    say: Progress,
) -> ReproductionReport:
    from keel.project import Project
    from keel.tracking.environment import capture_environment
    from keel.tracking.query import get_run
    from keel.training.envcompare import build_environment, compare_environments, environment_of

    overrides = store_settings(project)
    worktree_project = Project(tree.project_root, overrides=overrides)
    try:
        say("restoring the recorded dataset versions")
        # Entities read with --data-rev were read at that revision of the recorded commit's
        # history, which the worktree shares.
        data_rev = recorded.record.get("data_rev")
        revs = {str(recorded.record["entities"]): str(data_rev)} if data_rev else None
        datasets = restore_data(worktree_project, recorded.datasets, revs)
    finally:
        worktree_project.close()
    old_env = recorded.environment
    python = sys.executable
    if env:
        say("building a virtual environment with the recorded package versions")
        python = str(build_environment(old_env, folder / "venv"))
        now_env = environment_of(python)
    else:
        now_env = capture_environment()
    output = folder / "output"
    say(f"training {recorded.record['trainer']} again with seed {recorded.record['seed']}")
    result = _run_trainer(python, tree, recorded.record, output, overrides, folder, say)
    say("comparing the rebuilt model with the registered one")
    comparison = _compare(project, recorded, output / "model", tree)
    new_run = get_run(project, str(result["run_id"]))
    names = sorted(set(recorded.run.metrics) | set(new_run.metrics))
    return ReproductionReport(
        model=recorded.version.ref,
        run_id=recorded.run.id,
        new_run_id=new_run.id,
        commit=tree.commit,
        diff_applied=tree.diff_applied,
        omitted_files=tree.omitted,
        datasets=datasets,
        environment=compare_environments(old_env, now_env),
        isolated_environment=env,
        comparison=comparison,
        metrics={n: (recorded.run.metrics.get(n), new_run.metrics.get(n)) for n in names},
        nondeterminism=[str(r) for r in recorded.record.get("nondeterminism") or []],
        trainer=f"{recorded.record['trainer']} ({recorded.record['file']})",
        seed=int(recorded.record["seed"]),
        params=dict(recorded.record.get("params") or {}),
        rtol=rtol,
        atol=atol,
        worktree=tree.project_root if keep else None,
    )


def child_environment(settings: dict[str, Any], project_root: Path) -> dict[str, str]:
    """The environment variables of the reproduction subprocess: this process's, with the
    project directory and the store ``settings`` (as KEEL_SECTION_KEY variables) replaced."""
    out = dict(os.environ)
    out["KEEL_PROJECT_DIR"] = str(project_root)
    for key, value in settings.items():
        name = "KEEL_" + key.replace(".", "_").upper()
        # JSON is YAML, which is how KEEL_* values are read: dicts travel as flow mappings.
        out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def _read_recorded(project: Project, ref: str) -> _Recorded:
    from keel.registry.versions import get_model_version
    from keel.tracking.query import get_environment, get_run

    version = get_model_version(project, ref)
    if version.run_id is None:
        raise StateError(
            f"{version.ref} was registered without a run, so nothing records how it was "
            "trained; only models trained with `keel train` can be reproduced"
        )
    run = get_run(project, version.run_id)
    artifacts = {a.path: a.sha256 for a in run.artifacts}
    if TRAIN_RECORD not in artifacts or VALIDATION_SET not in artifacts:
        raise StateError(
            f"{version.ref} was not trained with `keel train` (its run {run.id} has no "
            f"{TRAIN_RECORD}); only models trained with `keel train` can be reproduced"
        )
    record = json.loads(project.artifacts.get_bytes(artifacts[TRAIN_RECORD]))
    diff = project.artifacts.get_bytes(run.git_diff_sha256) if run.git_diff_sha256 else None
    datasets = {i.name or i.ref: i.ref for i in run.inputs if i.kind == "dataset"}
    env_sha = run.environment_sha256 or version.environment_sha256
    if env_sha is None:
        raise StateError(f"run {run.id} recorded no environment, so it cannot be compared")
    return _Recorded(version, run, record, diff, datasets, get_environment(project, env_sha))


def _run_trainer(
    python: str,
    tree: Worktree,
    record: dict[str, Any],
    output: Path,
    settings: dict[str, Any],
    folder: Path,
    say: Progress,
) -> dict[str, Any]:
    command = [python, "-m", "keel", "train", str(record["trainer"]), "--reproduce"]
    command += ["--output", str(output), "--file", str(record["file"])]
    command += ["--seed", str(record["seed"]), "--experiment", "reproductions"]
    for key, value in (record.get("params") or {}).items():
        command += ["--param", f"{key}={value}"]
    if record.get("data_rev"):
        command += ["--data-rev", str(record["data_rev"])]
    environ = child_environment(settings, tree.project_root)
    threads = record.get("threads") or {}
    for key, variable in _THREAD_VARIABLES.items():
        # As recorded: set to the recorded value, or unset if it was unset then.
        if threads.get(key) is not None:
            environ[variable] = str(threads[key])
        elif key in threads:
            environ.pop(variable, None)
    environ["COLUMNS"] = "100"  # the child's rich output goes to a log, not a terminal
    log = folder / "train.log"
    with (
        log.open("w", encoding="utf-8") as sink,
        subprocess.Popen(
            command,
            cwd=tree.project_root,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        ) as process,
    ):
        for line in process.stdout or ():
            sink.write(line)
            if line.strip():
                say("  " + line.rstrip())
        code = process.wait()
    result_file = output / "result.json"
    if code != 0 or not result_file.is_file():
        tail = log.read_text("utf-8", "replace").strip().splitlines()[-5:]
        raise ReproductionError(
            f"the recorded trainer failed in the worktree (exit code {code}): "
            + " | ".join(tail)
            + "; pass --keep to inspect the worktree and its train.log"
        )
    result: dict[str, Any] = json.loads(result_file.read_text("utf-8"))
    return result


def _compare(
    project: Project, recorded: _Recorded, new_model: Path, tree: Worktree
) -> ModelComparison:
    import pandas as pd

    from keel.training.modelcompare import compare_models

    sha = next(a.sha256 for a in recorded.run.artifacts if a.path == VALIDATION_SET)
    validation = pd.read_parquet(io.BytesIO(project.artifacts.get_bytes(sha)))
    features = [str(name) for name in recorded.record["features"]]
    return compare_models(
        project, recorded.version, new_model, validation, features, code_root=tree.project_root
    )
