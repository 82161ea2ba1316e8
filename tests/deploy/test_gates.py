"""Canary gates: a good canary advances once its sample is reached, a bad one is rolled back."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.deploy.gates import CanaryDecision, GateConfig, evaluate_canary
from keel.deploy.gates_metrics import (
    auc,
    ks_test,
    log_loss,
    psi,
    psi_categorical,
    rmse,
    standard_error,
)
from keel.errors import InvalidInputError

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
NO_LABELS = GateConfig(performance_metric="off")


def rows(
    variant: str,
    n: int,
    seed: int,
    *,
    errors: float = 0.0,
    slow: float = 1.0,
    shift: float = 0.0,
    informative: bool = True,
    labelled: int = 0,
    start_us: int = T0,
) -> pa.Table:
    """``n`` prediction-log rows of one variant of a calibrated binary classifier."""
    rng = np.random.default_rng(seed)
    truth = rng.beta(2, 5, n)
    # An uninformative model predicts the same distribution, paired with the wrong rows.
    prediction = truth if informative else rng.permutation(truth)
    prediction = np.clip(prediction + shift, 0.0, 1.0)
    status = np.where(rng.random(n) < errors, 500, 200)
    latency = (rng.lognormal(math.log(2000), 0.3, n) * slow).astype(np.int64)
    outcome = (rng.random(n) < truth).astype(np.float64)
    label = [float(y) if i < labelled else None for i, y in enumerate(outcome)]
    times = [start_us + i * 1000 for i in range(n)]
    return pa.table(
        {
            "request_id": [f"{variant}-{seed}-{i}" for i in range(n)],
            "time": pa.array(times, pa.timestamp("us", tz="UTC")),
            "endpoint": ["churn"] * n,
            "variant": [variant] * n,
            "model": ["churn"] * n,
            "model_version": pa.array([4 if variant == "canary" else 3] * n, pa.int64()),
            "latency_us": pa.array(latency, pa.int64()),
            "status": pa.array(status, pa.int32()),
            "features_json": ["{}"] * n,
            "prediction_json": [json.dumps(float(p)) for p in prediction],
            "prediction": pa.array(prediction, pa.float64()),
            "label": pa.array(label, pa.float64()),
            "outcome": pa.array([None] * n, pa.float64()),
            "feedback_time": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def log(*parts: pa.Table) -> pa.Table:
    return pa.concat_tables(parts)


def statuses(decision: CanaryDecision) -> dict[str, str]:
    return {gate.name: gate.status for gate in decision.gates}


# --- decisions --------------------------------------------------------------------------------


def test_good_canary_waits_for_its_sample_with_the_counts_then_advances() -> None:
    early = evaluate_canary(log(rows("primary", 300, 1), rows("canary", 200, 2)), config=NO_LABELS)
    assert early.decision == "wait"
    assert early.gate("sample").status == "waiting"
    assert "canary needs 300 more rows (200 of 500)" in early.message
    assert "primary needs 200 more rows (300 of 500)" in early.message
    assert early.rows == {"primary": 300, "canary": 200}
    assert early.failed == []

    later = evaluate_canary(log(rows("primary", 900, 1), rows("canary", 600, 2)), config=NO_LABELS)
    assert later.decision == "advance", later.message
    assert set(statuses(later).values()) == {"pass"}
    assert list(statuses(later)) == [
        "sample",
        "error_rate",
        "latency_p99",
        "prediction_distribution",
    ]


def test_good_canary_with_labels_advances_and_without_enough_labels_waits() -> None:
    good = log(rows("primary", 2000, 1, labelled=2000), rows("canary", 2000, 2, labelled=2000))
    decision = evaluate_canary(good)
    assert decision.decision == "advance", decision.message
    performance = decision.gate("performance")
    assert performance.status == "pass"
    assert performance.detail.startswith("auc")
    assert decision.labels == {"primary": 2000, "canary": 2000}

    few = log(rows("primary", 600, 1, labelled=400), rows("canary", 600, 2, labelled=50))
    waiting = evaluate_canary(few)
    assert waiting.decision == "wait"
    assert waiting.waiting == ["performance"]
    assert "canary needs 150 more labels (50 of 200)" in waiting.message
    assert "primary needs" not in waiting.message


def test_erroring_canary_is_rolled_back_naming_the_error_gate() -> None:
    table = log(rows("primary", 800, 1, errors=0.002), rows("canary", 600, 2, errors=0.05))
    decision = evaluate_canary(table, config=NO_LABELS)
    assert decision.decision == "rollback"
    assert decision.failed == ["error_rate"]
    assert decision.gate("error_rate").value == pytest.approx(0.05, abs=0.02)
    assert "error_rate failed" in decision.message


def test_error_rate_fails_early_only_when_the_canary_cannot_recover() -> None:
    primary = rows("primary", 600, 1)
    hopeless = evaluate_canary(log(primary, rows("canary", 100, 2, errors=0.3)), config=NO_LABELS)
    assert hopeless.decision == "rollback"
    assert hopeless.failed == ["error_rate"]
    # One error in 100 rows could still end at 0.2 % after 500 rows: keep waiting.
    canary = rows("canary", 100, 3)
    status = canary["status"].to_numpy().copy()
    status[0] = 0  # status 0: the request never got an answer
    canary = canary.set_column(
        canary.schema.get_field_index("status"), "status", pa.array(status, pa.int32())
    )
    hopeful = evaluate_canary(log(primary, canary), config=NO_LABELS)
    assert hopeful.decision == "wait"
    assert hopeful.gate("error_rate").value == pytest.approx(0.01)


def test_slow_canary_is_rolled_back_on_p99_latency() -> None:
    table = log(rows("primary", 800, 1), rows("canary", 600, 2, slow=3.0))
    decision = evaluate_canary(table, config=NO_LABELS)
    assert decision.decision == "rollback"
    assert decision.failed == ["latency_p99"]
    value = decision.gate("latency_p99").value
    assert value is not None
    assert 2.5 < value < 3.5


def test_canary_slow_only_in_its_tail_is_rolled_back() -> None:
    canary = rows("canary", 600, 2)
    latency = canary["latency_us"].to_numpy().copy()
    latency[::25] *= 10  # 4 % of requests ten times slower; the median does not move
    index = canary.schema.get_field_index("latency_us")
    canary = canary.set_column(index, "latency_us", pa.array(latency, pa.int64()))
    decision = evaluate_canary(log(rows("primary", 800, 1), canary), config=NO_LABELS)
    assert decision.failed == ["latency_p99"]


def test_shifted_predictions_are_rolled_back_on_psi_and_on_ks() -> None:
    table = log(rows("primary", 800, 1), rows("canary", 600, 2, shift=0.15))
    decision = evaluate_canary(table, config=NO_LABELS)
    assert decision.decision == "rollback"
    assert decision.failed == ["prediction_distribution"]
    psi_gate = decision.gate("prediction_distribution")
    assert psi_gate.value is not None
    assert psi_gate.value > 0.2
    assert psi_gate.detail.startswith("PSI")

    ks = GateConfig(performance_metric="off", distribution_test="ks")
    by_ks = evaluate_canary(table, config=ks)
    assert by_ks.failed == ["prediction_distribution"]
    ks_value = by_ks.gate("prediction_distribution").value
    assert ks_value is not None
    assert ks_value < 0.001
    same = log(rows("primary", 800, 1), rows("canary", 600, 2))
    assert evaluate_canary(same, config=ks).decision == "advance"


def test_canary_worse_against_labels_is_rolled_back_on_performance() -> None:
    table = log(
        rows("primary", 800, 1, labelled=800),
        rows("canary", 600, 2, labelled=600, informative=False),
    )
    decision = evaluate_canary(table)
    assert decision.decision == "rollback"
    # Same prediction distribution, only the labels show the canary is worse.
    assert decision.failed == ["performance"]
    gate = decision.gate("performance")
    assert gate.value is not None
    assert gate.value > 0.1
    assert "auc canary" in gate.detail

    by_loss = evaluate_canary(table, config=GateConfig(performance_metric="log_loss"))
    assert by_loss.failed == ["performance"]
    assert "log_loss" in by_loss.gate("performance").detail


def with_errors(table: pa.Table, count: int) -> pa.Table:
    status = np.full(table.num_rows, 200, dtype=np.int32)
    status[:count] = 503
    index = table.schema.get_field_index("status")
    return table.set_column(index, "status", pa.array(status, pa.int32()))


def test_error_rate_over_the_limit_but_not_significant_waits_for_more_rows() -> None:
    # 2.4 % vs 1.2 %: over the 1-point limit, but on 500 rows that is within noise (z ~ 1.4).
    small = log(with_errors(rows("primary", 500, 1), 6), with_errors(rows("canary", 500, 2), 12))
    decision = evaluate_canary(small, config=NO_LABELS)
    assert decision.decision == "wait"
    assert decision.gate("error_rate").status == "waiting"
    assert "not yet significant" in decision.gate("error_rate").detail
    large = log(
        with_errors(rows("primary", 5000, 1), 60), with_errors(rows("canary", 5000, 2), 120)
    )
    assert evaluate_canary(large, config=NO_LABELS).failed == ["error_rate"]


def test_label_noise_never_rolls_back_a_good_canary() -> None:
    # 200 good canaries (same model) scored on 250 labels each: a bare 5 % threshold on AUC
    # would roll back many of them; the significance requirement makes them wait instead.
    over_limit = rolled_back = 0
    for seed in range(200):
        table = log(
            rows("primary", 500, 1000 + seed, labelled=250),
            rows("canary", 500, 5000 + seed, labelled=250),
        )
        decision = evaluate_canary(table)
        value = decision.gate("performance").value
        over_limit += value is not None and value > 0.05
        rolled_back += decision.decision == "rollback"
    assert over_limit > 20
    assert rolled_back == 0


def test_slightly_worse_canary_waits_on_few_labels_and_fails_on_many() -> None:
    def partly_random(n: int) -> pa.Table:
        table = rows("canary", n, 2, labelled=n)
        prediction = table["prediction"].to_numpy().copy()
        rng = np.random.default_rng(102)
        scrambled = rng.choice(n, int(0.4 * n), replace=False)
        prediction[scrambled] = rng.permutation(prediction[scrambled])
        index = table.schema.get_field_index("prediction")
        return table.set_column(index, "prediction", pa.array(prediction, pa.float64()))

    few = evaluate_canary(log(rows("primary", 250, 1, labelled=250), partly_random(250)))
    assert few.gate("performance").status == "waiting"
    assert "not yet significant" in few.message
    many = evaluate_canary(log(rows("primary", 4000, 1, labelled=4000), partly_random(4000)))
    assert many.failed == ["performance"]


def test_regression_labels_are_scored_by_rmse() -> None:
    rng = np.random.default_rng(7)

    def regression(variant: str, noise: float) -> pa.Table:
        table = rows(variant, 600, 11 if variant == "primary" else 12, labelled=600)
        truth = rng.normal(50.0, 10.0, 600)
        prediction = truth + rng.normal(0.0, noise, 600)
        table = table.set_column(
            table.schema.get_field_index("label"), "label", pa.array(truth, pa.float64())
        )
        return table.set_column(
            table.schema.get_field_index("prediction"),
            "prediction",
            pa.array(prediction, pa.float64()),
        )

    good = evaluate_canary(log(regression("primary", 2.0), regression("canary", 2.0)))
    assert good.gate("performance").status == "pass"
    assert good.gate("performance").detail.startswith("rmse")
    worse = evaluate_canary(log(regression("primary", 2.0), regression("canary", 4.0)))
    assert worse.failed == ["performance"]
    assert worse.gate("performance").value == pytest.approx(1.0, abs=0.25)


def test_too_little_traffic_waits_and_never_passes() -> None:
    decision = evaluate_canary(log(rows("primary", 5000, 1), rows("canary", 12, 2)))
    assert decision.decision == "wait"
    assert decision.failed == []
    assert {"sample", "latency_p99", "prediction_distribution", "performance"} <= set(
        decision.waiting
    )
    assert "canary needs 488 more rows (12 of 500)" in decision.message
    empty = evaluate_canary(rows("primary", 0, 1))
    assert empty.decision == "wait"
    assert empty.rows == {"primary": 0, "canary": 0}


def test_since_keeps_only_the_current_step_and_other_variants_are_ignored() -> None:
    step_start_us = T0 + 3_600_000_000
    old_bad = rows("canary", 600, 3, errors=0.5, start_us=T0)
    shadow = rows("shadow", 600, 4, errors=1.0, start_us=step_start_us)
    table = log(
        old_bad,
        shadow,
        rows("primary", 700, 1, start_us=step_start_us),
        rows("canary", 600, 2, start_us=step_start_us),
    )
    since = datetime.fromtimestamp(step_start_us / 1e6, tz=UTC)
    assert evaluate_canary(table, since=since, config=NO_LABELS).decision == "advance"
    assert evaluate_canary(table, config=NO_LABELS).failed == ["error_rate"]


def test_variant_names_are_configurable_for_ab_arms() -> None:
    table = log(rows("control", 600, 1), rows("treatment", 600, 2, slow=4.0))
    config = GateConfig(primary="control", canary="treatment", performance_metric="off")
    decision = evaluate_canary(table, config=config)
    assert decision.failed == ["latency_p99"]
    assert decision.rows == {"control": 600, "treatment": 600}


def test_categorical_outputs_are_compared_as_categories() -> None:
    def classes(variant: str, share_a: float) -> pa.Table:
        n = 600
        labels = ["a" if i < share_a * n else "b" for i in range(n)]
        table = rows(variant, n, 1 if variant == "primary" else 2)
        table = table.set_column(
            table.schema.get_field_index("prediction"),
            "prediction",
            pa.array([None] * n, pa.float64()),
        )
        return table.set_column(
            table.schema.get_field_index("prediction_json"),
            "prediction_json",
            pa.array([json.dumps(v) for v in labels]),
        )

    same = evaluate_canary(log(classes("primary", 0.5), classes("canary", 0.5)), config=NO_LABELS)
    assert same.decision == "advance"
    assert same.gate("prediction_distribution").value == 0.0
    moved = evaluate_canary(log(classes("primary", 0.5), classes("canary", 0.9)), config=NO_LABELS)
    assert moved.failed == ["prediction_distribution"]
    assert "categories" in moved.gate("prediction_distribution").detail


def test_text_labels_wait_and_say_how_to_fix() -> None:
    table = log(rows("primary", 600, 1), rows("canary", 600, 2))
    text = pa.array(["yes"] * table.num_rows, pa.string())
    table = table.set_column(table.schema.get_field_index("label"), "label", text)
    decision = evaluate_canary(table)
    assert decision.decision == "wait"
    assert "performance_metric='off'" in decision.gate("performance").detail


def test_decision_serializes_to_json() -> None:
    decision = evaluate_canary(log(rows("primary", 600, 1), rows("canary", 600, 2, slow=3.0)))
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["decision"] == "rollback"
    assert data["gates"][0]["name"] == "sample"
    assert data["rows"] == {"primary": 600, "canary": 600}


def test_bad_input_is_refused_with_the_fix() -> None:
    table = rows("primary", 10, 1)
    with pytest.raises(InvalidInputError, match="latency_us"):
        evaluate_canary(table.drop_columns(["latency_us"]))
    with pytest.raises(InvalidInputError, match="time zone"):
        evaluate_canary(table, since=datetime(2026, 1, 1))
    with pytest.raises(InvalidInputError, match="max_p99_latency_ratio"):
        GateConfig(max_p99_latency_ratio=0.5)
    with pytest.raises(InvalidInputError, match="min_sample"):
        GateConfig(min_sample=0)
    with pytest.raises(InvalidInputError, match="two different variants"):
        GateConfig(canary="primary")
    with pytest.raises(InvalidInputError, match="no gate named"):
        evaluate_canary(table).gate("throughput")


# --- the statistics ---------------------------------------------------------------------------

samples = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=200
)


@settings(max_examples=60, deadline=None)
@given(samples)
def test_psi_of_identical_samples_is_zero(values: list[float]) -> None:
    assert psi(values, values) == 0.0
    assert psi(values, list(reversed(values))) == 0.0


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_psi_is_never_negative(reference: list[float], current: list[float]) -> None:
    assert psi(reference, current) >= 0.0


@settings(max_examples=30, deadline=None)
@given(st.floats(min_value=-100, max_value=100), st.floats(min_value=0.5, max_value=10))
def test_psi_catches_a_move_outside_a_constant_reference(level: float, step: float) -> None:
    constant = [level] * 300
    assert psi(constant, [level + step] * 300) > 0.2
    assert psi(constant, [level - step] * 300) > 0.2


def test_psi_of_same_distribution_is_small_and_of_shift_is_large() -> None:
    rng = np.random.default_rng(5)
    reference = rng.normal(0.0, 1.0, 5000)
    assert psi(reference, rng.normal(0.0, 1.0, 5000)) < 0.02
    assert psi(reference, rng.normal(1.0, 1.0, 5000)) > 0.5
    assert psi_categorical(["a"] * 50 + ["b"] * 50, ["a"] * 90 + ["b"] * 10) > 0.2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 20)), min_size=2, max_size=80).filter(
        lambda pairs: 0 < sum(y for y, _ in pairs) < len(pairs)
    )
)
def test_auc_matches_scikit_learn(pairs: list[tuple[bool, int]]) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    labels = [float(y) for y, _ in pairs]
    scores = [float(s) for _, s in pairs]
    assert auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
    flipped = [1.0 - y for y in labels]
    assert auc(labels, scores) + auc(flipped, scores) == pytest.approx(1.0)


def test_losses_match_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    probs = rng.random(300)
    labels = (rng.random(300) < probs).astype(float)
    assert log_loss(labels, probs) == pytest.approx(metrics.log_loss(labels, probs))
    values = rng.normal(size=300)
    assert rmse(values, values + 0.5) == pytest.approx(0.5)
    with pytest.raises(InvalidInputError, match="both classes"):
        auc([1.0, 1.0], [0.2, 0.3])
    with pytest.raises(InvalidInputError, match="probabilities"):
        log_loss([0.0, 1.0], [-2.0, 3.0])


@pytest.mark.parametrize(
    ("metric", "function"), [("auc", auc), ("log_loss", log_loss), ("rmse", rmse)]
)
def test_standard_errors_match_the_spread_of_simulated_scores(metric: str, function: Any) -> None:
    rng = np.random.default_rng(0)
    scores, errors = [], []
    for _ in range(200):
        truth = rng.beta(2, 5, 400)
        labels = (rng.random(400) < truth).astype(float)
        if metric == "rmse":
            labels = truth + rng.normal(0.0, 0.1, 400)
        score = function(labels, truth)
        scores.append(score)
        errors.append(standard_error(metric, labels, truth, score))
    assert float(np.mean(errors)) == pytest.approx(float(np.std(scores)), rel=0.25)


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.25, 0.5])
def test_ks_p_value_matches_scipy(shift: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(9)
    a, b = rng.normal(0.0, 1.0, 400), rng.normal(shift, 1.0, 300)
    statistic, p_value = ks_test(a, b)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert statistic == pytest.approx(expected.statistic)
    assert p_value == pytest.approx(expected.pvalue, rel=0.1, abs=1e-4)
