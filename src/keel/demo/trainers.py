"""The demo's trainer: the ``train.py`` a team would keep in git next to ``features.py``.

One trainer, ``fraud``, fits a logistic regression or a LightGBM model (the ``model`` param) on
the training set the feature store builds for the ``fraud_features`` service, trained on the
weeks before the marketing campaign and validated on the campaign weeks.
"""

from __future__ import annotations

TRAIN_PY = '''"""How the fraud model is trained (`keel train fraud --param model=lightgbm`)."""

from dataclasses import dataclass

from keel import TimeSplit, TrainingData, deterministic_params, trainer


@dataclass
class FraudParams:
    model: str = "lightgbm"  # or "logreg"
    C: float = 1.0
    n_estimators: int = 150
    learning_rate: float = 0.08
    num_leaves: int = 31


# Train before the marketing campaign, validate on the campaign weeks (new users: data drift).
CAMPAIGN = TimeSplit(valid_from="2026-03-02", valid_until="2026-03-16")


@trainer(
    name="fraud",
    features="fraud_features",
    label="is_fraud",
    entities="data/transactions.parquet",
    timestamp="event_timestamp",
    split=CAMPAIGN,
)
def fraud(training: TrainingData, params: FraudParams):
    if params.model == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(C=params.C, max_iter=300))
        return model.fit(training.X_train, training.y_train)
    import lightgbm as lgb

    # One thread: OpenMP workers spin-wait, so on a busy 2-core machine two threads can be
    # ten times slower than one; a fixed thread count also keeps the result reproducible.
    settings = {
        "n_estimators": params.n_estimators,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "n_jobs": 1,
        "verbose": -1,
    }
    model = lgb.LGBMClassifier(**deterministic_params(settings, seed=training.seed))
    return model.fit(training.X_train, training.y_train)
'''
