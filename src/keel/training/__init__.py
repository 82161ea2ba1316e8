"""Training: the trainers a project declares and `keel train`, which runs one as a tracked run
with complete lineage (dataset, feature and code versions, environment, params and seeds).

    import keel

    @keel.trainer(name="fraud", features=fraud_features, label="is_fraud",
                  entities="data/transactions.parquet")
    def fraud(training: keel.TrainingData, params: FraudParams) -> Any: ...

    keel.train("fraud", params={"num_leaves": 15})     # or `keel train fraud --param num_leaves=15`

Names resolve lazily, so importing this package imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.core.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "NondeterminismWarning": "keel.training.seeding",
    "ParamSchema": "keel.training.params",
    "Params": "keel.training.params",
    "TimeSplit": "keel.training.split",
    "TrainResult": "keel.training.train",
    "Trainer": "keel.training.trainers",
    "TrainingData": "keel.training.trainers",
    "check_determinism": "keel.training.seeding",
    "deterministic_params": "keel.training.seeding",
    "evaluate": "keel.training.evaluate",
    "load_trainers": "keel.training.trainers",
    "parse_assignments": "keel.training.params",
    "seed_everything": "keel.training.seeding",
    "thread_counts": "keel.training.seeding",
    "train": "keel.training.train",
    "trainer": "keel.training.trainers",
}

__all__ = [
    "NondeterminismWarning",
    "ParamSchema",
    "Params",
    "TimeSplit",
    "TrainResult",
    "Trainer",
    "TrainingData",
    "check_determinism",
    "deterministic_params",
    "evaluate",
    "load_trainers",
    "parse_assignments",
    "seed_everything",
    "thread_counts",
    "train",
    "trainer",
]

if TYPE_CHECKING:
    from keel.training.evaluate import evaluate
    from keel.training.params import Params, ParamSchema, parse_assignments
    from keel.training.seeding import (
        NondeterminismWarning,
        check_determinism,
        deterministic_params,
        seed_everything,
        thread_counts,
    )
    from keel.training.split import TimeSplit
    from keel.training.train import TrainResult, train
    from keel.training.trainers import Trainer, TrainingData, load_trainers, trainer


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
