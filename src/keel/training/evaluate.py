"""Evaluation on the validation period: the metrics every run of a task records, so runs of
different trainers compare on the same numbers.

Classification (a model with ``predict_proba``): auc, log_loss, average_precision, accuracy
(binary; multi-class gives log_loss, accuracy and one-vs-rest auc). Regression: rmse, mae, r2.

    evaluate(model, training.X_valid, training.y_valid)
    # {'auc': 0.93, 'log_loss': 0.21, 'average_precision': 0.64, 'accuracy': 0.95}
"""

from __future__ import annotations

from typing import Any

from keel.errors import InvalidInputError

CLASSIFICATION = "classification"
REGRESSION = "regression"


def infer_task(model: Any) -> str:
    """'classification' for models with ``predict_proba``, else 'regression'."""
    return CLASSIFICATION if callable(getattr(model, "predict_proba", None)) else REGRESSION


def evaluate(model: Any, x: Any, y: Any, *, task: str | None = None) -> dict[str, float]:
    """The task's metrics of ``model`` on features ``x`` and labels ``y``.

    >>> evaluate(LogisticRegression().fit(X, y), X, y)["accuracy"]  # doctest: +SKIP
    0.97
    """
    import numpy as np

    task = task or infer_task(model)
    truth = np.asarray(y)
    if len(truth) == 0:
        raise InvalidInputError("the validation set is empty; move the split's bounds")
    if task == CLASSIFICATION:
        return _classification(model, x, truth)
    if task == REGRESSION:
        return _regression(np.asarray(model.predict(x), dtype=float), truth.astype(float))
    raise InvalidInputError(f"task {task!r} is unknown; use {CLASSIFICATION!r} or {REGRESSION!r}")


def _classification(model: Any, x: Any, truth: Any) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import accuracy_score, average_precision_score, log_loss, roc_auc_score

    proba = np.asarray(model.predict_proba(x), dtype=float)
    classes = np.asarray(getattr(model, "classes_", np.arange(proba.shape[1])))
    predicted = classes[np.argmax(proba, axis=1)]
    metrics = {
        "log_loss": float(log_loss(truth, proba, labels=classes)),
        "accuracy": float(accuracy_score(truth, predicted)),
    }
    present = np.unique(truth)
    if len(present) < 2:  # AUC is undefined on one class: leave it out rather than fail
        return metrics
    if proba.shape[1] == 2:
        scores = proba[:, 1]
        metrics["auc"] = float(roc_auc_score(truth, scores))
        metrics["average_precision"] = float(
            average_precision_score(truth, scores, pos_label=classes[1])
        )
    elif len(present) == len(classes):
        metrics["auc"] = float(roc_auc_score(truth, proba, multi_class="ovr", labels=classes))
    return metrics


def _regression(predicted: Any, truth: Any) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    metrics = {
        "rmse": float(mean_squared_error(truth, predicted) ** 0.5),
        "mae": float(mean_absolute_error(truth, predicted)),
    }
    if len(truth) > 1:  # r2 is undefined on one row
        metrics["r2"] = float(r2_score(truth, predicted))
    return metrics
