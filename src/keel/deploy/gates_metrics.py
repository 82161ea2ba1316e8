"""The statistics behind the canary gates: distribution shift, ranking quality and losses.

Pure numpy on one-dimensional arrays, so the gates need no heavy dependency and the same
numbers come out wherever a ramp is analysed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from keel.errors import InvalidInputError

FloatArray = npt.NDArray[np.float64]

# Added to every bucket count so an empty bucket on one side gives a large but finite PSI;
# half an observation keeps identical samples at exactly zero.
_PSEUDO_COUNT = 0.5


def _as_sample(name: str, values: Sequence[float] | FloatArray) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise InvalidInputError(
            f"{name} must be a non-empty one-dimensional sample, got shape {array.shape}; "
            "pass at least one value"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} holds NaN or infinite values; drop them before comparing")
    return array


def _psi_from_counts(expected: FloatArray, actual: FloatArray) -> float:
    p = (expected + _PSEUDO_COUNT) / (expected.sum() + _PSEUDO_COUNT * expected.size)
    q = (actual + _PSEUDO_COUNT) / (actual.sum() + _PSEUDO_COUNT * actual.size)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(
    reference: Sequence[float] | FloatArray,
    current: Sequence[float] | FloatArray,
    *,
    bins: int = 10,
) -> float:
    """Population stability index of ``current`` against ``reference`` (0 means no shift).

    Buckets are the reference's quantiles (so each holds about ``1/bins`` of it), plus one
    bucket below its minimum and one above its maximum, so a sample that moves outside the
    reference's range is caught even when the reference is a single repeated value. The usual
    reading: below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2 a significant one.

    Example:
        >>> psi([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])
        0.0
        >>> psi([0.1, 0.2, 0.3, 0.4] * 50, [0.8, 0.9] * 100) > 0.2
        True
    """
    if bins < 2:
        raise InvalidInputError(f"psi bins must be at least 2, got {bins}; the usual value is 10")
    ref = _as_sample("reference", reference)
    cur = _as_sample("current", current)
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)))
    ref_counts = _bucket_counts(ref, edges)
    cur_counts = _bucket_counts(cur, edges)
    return _psi_from_counts(ref_counts, cur_counts)


def _bucket_counts(values: FloatArray, edges: FloatArray) -> FloatArray:
    # Buckets: below the minimum, [e0, e1), ..., [e(k-2), e(k-1)] (the last one closed), above
    # the maximum. A single edge (a constant reference) gives below / equal / above.
    index = np.searchsorted(edges, values, side="right")
    last = edges.size
    if last > 1:
        index[values == edges[-1]] = last - 1
        index[values > edges[-1]] = last
        size = last + 1
    else:
        index[values > edges[0]] = 2
        size = 3
    return np.bincount(index, minlength=size).astype(np.float64)


def psi_categorical(reference: Sequence[str], current: Sequence[str]) -> float:
    """Population stability index over categories (class labels, JSON-encoded outputs).

    Example:
        >>> psi_categorical(["a", "b"] * 10, ["a", "b"] * 10)
        0.0
    """
    if not reference or not current:
        raise InvalidInputError(
            "psi_categorical needs a non-empty reference and current sample; "
            "pass at least one value on each side"
        )
    categories = sorted(set(reference) | set(current))
    position = {category: i for i, category in enumerate(categories)}
    ref_counts = np.bincount([position[v] for v in reference], minlength=len(categories))
    cur_counts = np.bincount([position[v] for v in current], minlength=len(categories))
    return _psi_from_counts(ref_counts.astype(np.float64), cur_counts.astype(np.float64))


def ks_test(
    a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and its asymptotic two-sided p-value.

    Example:
        >>> statistic, p_value = ks_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
        >>> statistic, p_value
        (0.0, 1.0)
    """
    x = np.sort(_as_sample("a", a))
    y = np.sort(_as_sample("b", b))
    pooled = np.concatenate([x, y])
    cdf_x = np.searchsorted(x, pooled, side="right") / x.size
    cdf_y = np.searchsorted(y, pooled, side="right") / y.size
    statistic = float(np.max(np.abs(cdf_x - cdf_y)))
    effective = math.sqrt(x.size * y.size / (x.size + y.size))
    # Stephens' small-sample correction of the Kolmogorov limit distribution.
    return statistic, _kolmogorov_survival((effective + 0.12 + 0.11 / effective) * statistic)


def _kolmogorov_survival(lam: float) -> float:
    # Q(lam) = 2 * sum (-1)^(j-1) exp(-2 j^2 lam^2); the series is useless (and Q is 1 to
    # within 1e-5) for small lam.
    if lam < 0.3:
        return 1.0
    j = np.arange(1, 101, dtype=np.float64)
    terms = 2.0 * (-1.0) ** (j - 1) * np.exp(-2.0 * j * j * lam * lam)
    return float(min(1.0, max(0.0, terms.sum())))


def auc(labels: Sequence[float] | FloatArray, scores: Sequence[float] | FloatArray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count one half).

    Computed from ranks (the Mann-Whitney statistic), so any monotone score works, not only
    probabilities.

    Example:
        >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y = _as_sample("labels", labels)
    s = _as_sample("scores", scores)
    _check_same_length(y, s)
    if not np.all((y == 0.0) | (y == 1.0)):
        raise InvalidInputError("auc needs labels that are 0 or 1; use rmse for other labels")
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        raise InvalidInputError(
            f"auc needs both classes, got {positives} positive and {negatives} negative labels; "
            "wait for more labels or use log_loss"
        )
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # Average rank of each distinct score, 1-based: tied scores share the mean of their ranks.
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    rank_sum = float(ranks[y == 1.0].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def log_loss(labels: Sequence[float] | FloatArray, probs: Sequence[float] | FloatArray) -> float:
    """Mean binary cross-entropy of probabilities ``probs`` for 0/1 ``labels`` (lower is better).

    Example:
        >>> round(log_loss([0, 1], [0.5, 0.5]), 4)
        0.6931
    """
    y = _as_sample("labels", labels)
    p = _as_sample("probabilities", probs)
    _check_same_length(y, p)
    if not np.all((y == 0.0) | (y == 1.0)):
        raise InvalidInputError("log_loss needs labels that are 0 or 1; use rmse for other labels")
    if np.any((p < 0.0) | (p > 1.0)):
        raise InvalidInputError(
            "log_loss needs predictions that are probabilities in [0, 1]; "
            "use auc for scores or logits"
        )
    clipped = np.clip(p, 1e-15, 1.0 - 1e-15)
    return float(-np.mean(y * np.log(clipped) + (1.0 - y) * np.log(1.0 - clipped)))


def rmse(labels: Sequence[float] | FloatArray, predictions: Sequence[float] | FloatArray) -> float:
    """Root mean squared error of ``predictions`` against ``labels`` (lower is better).

    Example:
        >>> rmse([1.0, 2.0], [1.0, 4.0])
        1.4142135623730951
    """
    y = _as_sample("labels", labels)
    p = _as_sample("predictions", predictions)
    _check_same_length(y, p)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def standard_error(metric: str, labels: FloatArray, predictions: FloatArray, score: float) -> float:
    """Standard error of ``score`` (``metric`` computed on this sample) for comparing variants.

    AUC uses Hanley and McNeil's approximation; log loss and RMSE the spread of the per-row
    losses (through the delta method for RMSE).

    Example:
        >>> y = np.array([0.0, 1.0, 0.0, 1.0]); p = np.array([0.2, 0.7, 0.4, 0.6])
        >>> standard_error("rmse", y, p, rmse(y, p)) > 0
        True
    """
    n = labels.size
    if metric == "auc":
        positives = float(labels.sum())
        negatives = n - positives
        q1 = score / (2.0 - score)
        q2 = 2.0 * score * score / (1.0 + score)
        variance = (
            score * (1.0 - score)
            + (positives - 1.0) * (q1 - score * score)
            + (negatives - 1.0) * (q2 - score * score)
        ) / (positives * negatives)
        return math.sqrt(max(variance, 0.0))
    if n < 2:
        return math.inf
    if metric == "log_loss":
        p = np.clip(predictions, 1e-15, 1.0 - 1e-15)
        losses = -(labels * np.log(p) + (1.0 - labels) * np.log(1.0 - p))
        return float(np.std(losses, ddof=1) / math.sqrt(n))
    if metric == "rmse":
        squared = (labels - predictions) ** 2
        se_mse = float(np.std(squared, ddof=1) / math.sqrt(n))
        return se_mse / (2.0 * score) if score > 0 else 0.0
    raise InvalidInputError(f"no standard error for metric {metric!r}; use auc, log_loss or rmse")


def _check_same_length(a: FloatArray, b: FloatArray) -> None:
    if a.size != b.size:
        raise InvalidInputError(
            f"labels and predictions differ in length ({a.size} vs {b.size}); pair them row by row"
        )
