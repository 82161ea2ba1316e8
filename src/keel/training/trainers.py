"""Trainers: the training functions a project declares (in ``train.py`` by default), and the
data they receive.

    import keel
    from features import fraud_features      # the project's features.py

    @keel.trainer(name="fraud", features=fraud_features, label="is_fraud",
                  entities="data/transactions.parquet",
                  split=keel.TimeSplit(valid_from="2026-03-02"))
    def fraud(training: keel.TrainingData, params: FraudParams) -> Any:
        model = LGBMClassifier(**keel.deterministic_params({}, seed=training.seed))
        return model.fit(training.X_train, training.y_train)

`keel train fraud` loads the file, builds the training set through the feature store, splits
it by event time, calls the function and records everything (keel.training.train).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError, KeelError, NotFoundError
from keel.training.params import ParamSchema
from keel.training.split import TimeSplit

if TYPE_CHECKING:
    import pandas as pd

    from keel.data.api import DatasetVersion
    from keel.features.service import FeatureService
    from keel.project import Project

DEFAULT_FILE = "train.py"
TrainFunction = Callable[..., Any]


@dataclass(frozen=True)
class TrainingData:
    """What a trainer receives: ``train`` and ``valid`` frames (keys, event time, label and
    feature columns), the ``features`` column names, the ``label`` and the run's ``seed``.

    >>> model.fit(training.X_train, training.y_train)   # doctest: +SKIP
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    features: list[str]
    label: str
    seed: int
    timestamp: str = "event_timestamp"

    @property
    def X_train(self) -> pd.DataFrame:  # noqa: N802 - the name every ML reader expects
        return self.train[self.features]

    @property
    def y_train(self) -> pd.Series:
        return self.train[self.label]

    @property
    def X_valid(self) -> pd.DataFrame:  # noqa: N802
        return self.valid[self.features]

    @property
    def y_valid(self) -> pd.Series:
        return self.valid[self.label]


@dataclass(frozen=True, eq=False)
class Trainer:
    """A declared training function and what it trains on; made by ``keel.trainer``."""

    name: str
    function: TrainFunction
    features: FeatureService | Sequence[str] | str
    label: str
    entities: str
    timestamp: str = "event_timestamp"
    split: TimeSplit = field(default_factory=lambda: TimeSplit(valid_fraction=0.2))
    flavor: str | None = None
    params: ParamSchema = field(default_factory=lambda: ParamSchema(None, {}, {}))

    def __call__(self, training: TrainingData, params: Any) -> Any:
        return self.function(training, params)

    @property
    def feature_request(self) -> dict[str, Any]:
        """Keyword arguments of FeatureStore.get_training_set naming the features."""
        from keel.features.service import FeatureService

        if isinstance(self.features, FeatureService):
            # By name: the store resolves it in its own load of the definitions file.
            return {"service": self.features.name}
        if isinstance(self.features, str):
            return {"service": self.features}
        return {"features": list(self.features)}


def trainer(
    *,
    name: str,
    features: FeatureService | Sequence[str] | str,
    label: str,
    entities: str,
    timestamp: str = "event_timestamp",
    split: TimeSplit | None = None,
    flavor: str | None = None,
) -> Callable[[TrainFunction], Trainer]:
    """Declare a training function: ``features`` (a FeatureService, its name, or a list of
    ``"view:feature"`` refs), the ``label`` column and the ``timestamp`` column of the
    ``entities`` Parquet data (a project path), and the ``split`` (default: the last 20 % of
    the time range validates). The function takes ``(training, params)``; annotate params
    with a dataclass or pydantic model to give them types and defaults.

    >>> @trainer(name="fraud", features="fraud_features", label="is_fraud",
    ...          entities="data/tx.parquet")
    ... def fraud(training, params):
    ...     return None
    >>> fraud.name
    'fraud'
    """
    from keel.registry.refs import validate_model_name

    validate_model_name(name)  # the trainer's name is the registered model's name
    for what, value in (("label", label), ("entities", entities), ("timestamp", timestamp)):
        if not isinstance(value, str) or not value:
            raise InvalidInputError(f"trainer {name!r}: {what} {value!r} must be a non-empty str")
    if split is not None and not isinstance(split, TimeSplit):
        raise InvalidInputError(
            f"trainer {name!r}: split {split!r} is not a TimeSplit; e.g. "
            "keel.TimeSplit(valid_from='2026-03-02')"
        )

    def wrap(function: TrainFunction) -> Trainer:
        if not callable(function):
            raise InvalidInputError(f"trainer {name!r} decorates {function!r}, not a function")
        return Trainer(
            name=name,
            function=function,
            features=features,
            label=label,
            entities=entities,
            timestamp=timestamp,
            split=split or TimeSplit(valid_fraction=0.2),
            flavor=flavor,
            params=ParamSchema.of(_params_annotation(name, function)),
        )

    return wrap


def _params_annotation(name: str, function: TrainFunction) -> Any:
    parameters = list(inspect.signature(function).parameters.values())
    if len(parameters) != 2:
        raise InvalidInputError(
            f"trainer {name!r}: {function.__name__} takes {len(parameters)} arguments; it must "
            "take (training, params)"
        )
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):  # an annotation that does not resolve: treat as untyped
        hints = {}
    # None (no annotation), Any, dict and keel.Params all mean a free dict.
    return hints.get(parameters[1].name)


def load_trainers(file: Path, root: Path) -> dict[str, Trainer]:
    """Run the trainer ``file`` with ``root`` first on sys.path (so ``from features import
    ...`` finds the project's modules) and collect its module-level trainers by name.

    >>> sorted(load_trainers(Path("train.py"), Path(".")))  # doctest: +SKIP
    ['fraud', 'fraud_linear']
    """
    if not file.is_file():
        raise NotFoundError(
            f"trainer file {str(file)!r} does not exist; create it with @keel.trainer "
            "functions, or pass its path with --file"
        )
    namespace = _run(file, root)
    found: dict[str, Trainer] = {}
    for value in namespace.values():
        if isinstance(value, Trainer):
            known = found.setdefault(value.name, value)
            if known is not value:
                raise InvalidInputError(f"{file} declares two trainers named {value.name!r}")
    return found


def get_trainer(name: str, file: Path, root: Path) -> Trainer:
    """The trainer ``name`` of ``file``; an unknown name lists the known ones."""
    trainers = load_trainers(file, root)
    if name not in trainers:
        known = ", ".join(sorted(trainers)) or "none"
        raise NotFoundError(
            f"trainer {name!r} is not declared in {file}; the trainers are: {known}"
        )
    return trainers[name]


def read_entities(
    project: Project, trainer: Trainer, data_rev: str | None
) -> tuple[pd.DataFrame, DatasetVersion | None]:
    """The entity rows (keys, event time, label) and their dataset version, verified
    readable now so a version that no cache or remote holds fails before the run starts.
    ``data_rev`` reads the version at that git revision; entities that are not versioned are
    read from the worktree (no dataset version then).

    >>> frame, version = read_entities(project, fraud, "v1.0")  # doctest: +SKIP
    """
    import pandas as pd

    from keel.data.api import open as open_data
    from keel.data.api import resolve

    try:
        version = resolve(trainer.entities, data_rev, project=project)
    except NotFoundError:
        if data_rev is not None:
            raise
        version = None  # not versioned: read as it is in the worktree, no dataset lineage
    frame = None
    if version is not None:
        try:  # the verified bytes of the recorded version, from the cache or the remote
            with open_data(trainer.entities, data_rev, project=project) as handle:
                frame = pd.read_parquet(handle)
        except InvalidInputError:  # a tracked folder: read from the worktree below
            if data_rev is not None:
                raise InvalidInputError(
                    f"entities {trainer.entities!r} is a folder; --data-rev reads a single "
                    "Parquet file — point entities= at a file"
                ) from None
    if frame is None:
        target = project.root / trainer.entities
        if not target.exists():
            raise NotFoundError(
                f"entities {trainer.entities!r} of trainer {trainer.name!r} do not exist in "
                f"{project.root}; create them or fix the trainer's entities="
            )
        frame = pd.read_parquet(target)
    for column, role in ((trainer.timestamp, "timestamp"), (trainer.label, "label")):
        if column not in frame.columns:
            raise InvalidInputError(
                f"trainer {trainer.name!r}: {role} column {column!r} is not in "
                f"{trainer.entities}; its columns are {list(frame.columns)}"
            )
    return frame, version


def _run(file: Path, root: Path) -> dict[str, Any]:
    from keel.core.hashing import sha256_bytes

    module_name = "keel_trainers_" + sha256_bytes(str(file.resolve()).encode())[:12]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"{file} cannot be loaded as Python; give it a .py name")
    module = importlib.util.module_from_spec(spec)
    # A module of the same name imported from elsewhere (another project's features.py) must
    # not stand in for this project's: set aside while the file runs, put back after.
    shadowed = {
        name: sys.modules.pop(name)
        for name in _top_level_modules(root)
        if name in sys.modules and not _inside(sys.modules[name], root)
    }
    before = set(sys.modules)
    sys.modules[module_name] = module
    sys.path.insert(0, str(root))
    try:
        spec.loader.exec_module(module)
    except KeelError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"{file} failed while loading: {type(exc).__name__}: {exc}; fix the file"
        ) from exc
    finally:
        with contextlib.suppress(ValueError):  # the file may have edited sys.path itself
            sys.path.remove(str(root))
        # Project modules (features.py, helpers) are forgotten, so the next load of this or
        # another project's file reads them afresh instead of a stale copy.
        for added in set(sys.modules) - before:
            if _inside(sys.modules[added], root):
                del sys.modules[added]
        sys.modules.pop(module_name, None)
        sys.modules.update(shadowed)
    return dict(vars(module))


def _top_level_modules(root: Path) -> set[str]:
    names = {path.stem for path in root.glob("*.py")}
    return names | {path.parent.name for path in root.glob("*/__init__.py")}


def _inside(module: Any, root: Path) -> bool:
    origin = getattr(module, "__file__", None)
    if not origin:
        return False
    try:
        Path(origin).resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
