"""A/B statistics: error rates by simulation, textbook sample sizes, SRM, guardrails, analysis."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.deploy.stats import mean_test, proportion_test, sample_size, srm_check
from keel.deploy.stats_ab import analyze_ab
from keel.deploy.stats_guardrails import Guardrail, check_guardrails
from keel.deploy.stats_sequential import SequentialTest, msprt_look
from keel.errors import InvalidInputError
from keel.serving.feedback import FeedbackLog
from keel.serving.predlog import PredictionLog, read_predictions

ALPHA = 0.05


# --- sample size ---------------------------------------------------------------------------


def test_sample_size_matches_textbook_values() -> None:
    # R: power.prop.test(p1 = .50, p2 = .75, power = .90) gives n = 76.7 per group.
    assert sample_size(0.5, 0.25, relative=False, power=0.9) == 77
    assert sample_size(0.5, 0.5, relative=True, power=0.9) == 77
    # Two means, effect of half a standard deviation, alpha 5 %, power 80 %: 2 * (1.96 +
    # 0.8416)**2 / 0.5**2 = 62.8, the normal-approximation textbook answer of 63 per group.
    assert sample_size(10.0, 0.5, relative=False, std=1.0) == 63
    assert sample_size(10.0, 0.05, std=1.0) == 63  # 5 % of 10 is the same 0.5
    # The often quoted plan "10 % baseline, +20 % relative lift": 3,841 per arm.
    assert sample_size(0.1, 0.2) == 3841
    # A one-sided test needs fewer units, a smaller effect more.
    assert sample_size(0.1, 0.1) > sample_size(0.1, 0.1, two_sided=False)
    assert sample_size(0.1, 0.05) > 3 * sample_size(0.1, 0.1)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0.1, 0.0), {}),
        ((0.0, 0.1), {}),
        ((0.9, 0.2), {}),  # 0.9 * 1.2 > 1
        ((0.1, 0.1), {"alpha": 1.5}),
        ((0.1, 0.1), {"power": 0.0}),
        ((1.0, 0.1), {"std": -1.0}),
    ],
)
def test_sample_size_rejects_bad_plans(args: tuple[float, float], kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        sample_size(*args, **kwargs)


# --- fixed-horizon tests -------------------------------------------------------------------


def test_aa_tests_have_the_nominal_false_positive_rate() -> None:
    rng = np.random.default_rng(6)
    n = 2000
    counts = rng.binomial(n, 0.1, size=(1000, 2))
    rate = np.mean(
        [proportion_test(int(a), n, int(b), n, alpha=ALPHA).significant for a, b in counts]
    )
    assert 0.03 <= rate <= 0.07
    values = rng.normal(5.0, 2.0, size=(1000, 2, 40))
    rate = np.mean([mean_test(a, b, alpha=ALPHA).significant for a, b in values])
    assert 0.03 <= rate <= 0.07


def test_an_effect_of_the_planned_size_is_detected_with_the_planned_power() -> None:
    rng = np.random.default_rng(7)
    n = sample_size(0.1, 0.2, power=0.8)  # 10 % -> 12 %
    a, b = rng.binomial(n, 0.1, size=1000), rng.binomial(n, 0.12, size=1000)
    power = np.mean(
        [proportion_test(int(x), n, int(y), n).significant for x, y in zip(a, b, strict=False)]
    )
    assert 0.75 <= power <= 0.85
    n = sample_size(3.0, 0.25, relative=False, std=1.0)
    values = rng.normal(3.0, 1.0, size=(1000, 2, n))
    values[:, 1] += 0.25
    power = np.mean([mean_test(x, y).significant for x, y in values])
    assert 0.75 <= power <= 0.85


def test_proportion_test_values() -> None:
    est = proportion_test(100, 1000, 150, 1000)
    assert est.difference == pytest.approx(0.05)
    assert est.relative_lift == pytest.approx(0.5)
    se = math.sqrt(0.1 * 0.9 / 1000 + 0.15 * 0.85 / 1000)
    assert est.ci_low == pytest.approx(0.05 - 1.959964 * se, rel=1e-6)
    assert est.p_value == pytest.approx(math.erfc(0.05 / se / math.sqrt(2)), rel=1e-9)
    assert est.significant
    assert proportion_test(0, 10, 0, 10).p_value == 1.0
    assert proportion_test(0, 10, 10, 10).p_value == 0.0


def test_mean_test_matches_welch() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    est = mean_test(a, b)
    # Welch: t = 4 / sqrt(2.5/5 + 14/6) = 2.376, df = 6.97, two-sided p = 0.04928 (as
    # scipy.stats.ttest_ind(equal_var=False) also gives).
    assert est.difference == pytest.approx(4.0)
    assert est.p_value == pytest.approx(0.049284, abs=1e-6)
    t_crit = 2.3665  # t quantile 0.975 at 6.97 degrees of freedom
    assert est.ci_low == pytest.approx(4.0 - t_crit * math.sqrt(2.5 / 5 + 14 / 6), abs=1e-3)
    assert est.method == "welch"


@pytest.mark.parametrize(
    "call",
    [
        lambda: proportion_test(11, 10, 1, 10),
        lambda: proportion_test(1, 0, 1, 10),
        lambda: proportion_test(1, 10, 1, 10, alpha=0.0),
        lambda: mean_test([1.0], [1.0, 2.0]),
        lambda: mean_test([1.0, math.nan], [1.0, 2.0]),
    ],
)
def test_bad_test_input_is_rejected(call: object) -> None:
    with pytest.raises(InvalidInputError):
        call()  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(
    n_a=st.integers(1, 5000),
    n_b=st.integers(1, 5000),
    fa=st.floats(0, 1),
    fb=st.floats(0, 1),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_interval_excludes_zero_exactly_when_significant(
    n_a: int, n_b: int, fa: float, fb: float, alpha: float
) -> None:
    s_a, s_b = round(fa * n_a), round(fb * n_b)
    est = proportion_test(s_a, n_a, s_b, n_b, alpha=alpha)
    assert 0.0 <= est.p_value <= 1.0
    assert est.ci_low <= est.difference <= est.ci_high
    if est.ci_low != est.ci_high:  # a zero-width interval is an exact, degenerate result
        assert est.significant == (est.ci_low > 0 or est.ci_high < 0)
    swapped = proportion_test(s_b, n_b, s_a, n_a, alpha=alpha)
    assert swapped.difference == -est.difference
    assert swapped.p_value == pytest.approx(est.p_value)


# --- sequential test -----------------------------------------------------------------------


def _streams(rng: np.random.Generator, p_b: float) -> np.ndarray:
    """500 streams of 20 looks, 200 units per arm per look: cumulative successes (a, b)."""
    batches = np.stack(
        [rng.binomial(200, 0.5, size=(500, 20)), rng.binomial(200, p_b, size=(500, 20))], axis=-1
    )
    return np.cumsum(batches, axis=1)


def test_sequential_test_keeps_type_one_error_under_repeated_looks() -> None:
    streams = _streams(np.random.default_rng(8), 0.5)
    always_valid = naive = covered = 0
    for stream in streams:
        test = SequentialTest(tau=0.02, alpha=ALPHA)
        peeked = False
        for look, (s_a, s_b) in enumerate(stream, start=1):
            n = 200 * look
            result = test.update_proportions(int(s_a), n, int(s_b), n)
            peeked |= proportion_test(int(s_a), n, int(s_b), n, alpha=ALPHA).significant
        always_valid += result.significant
        naive += peeked
        covered += result.ci_low <= 0.0 <= result.ci_high
    assert always_valid / 500 <= ALPHA + 0.02
    assert naive / 500 > 2 * ALPHA  # stopping at the first significant fixed test is broken
    assert covered / 500 >= 1 - ALPHA - 0.02


def test_sequential_test_detects_a_real_effect() -> None:
    streams = _streams(np.random.default_rng(9), 0.56)
    detected = []
    for stream in streams[:200]:
        test = SequentialTest(tau=0.02)
        for look, (s_a, s_b) in enumerate(stream, start=1):
            result = test.update_proportions(int(s_a), 200 * look, int(s_b), 200 * look)
        detected.append(result.significant and result.ci_low > 0)
    assert np.mean(detected) > 0.9


def test_msprt_look_values() -> None:
    p_value, radius = msprt_look(0.02, 0.0001, tau=0.02, alpha=0.05)
    # 1/L = sqrt(5) * exp(-1.6); radius = sqrt(2.5e-4 * (ln 20 + ln(5) / 2)).
    assert p_value == pytest.approx(math.sqrt(5) * math.exp(-1.6))
    assert radius == pytest.approx(math.sqrt(2.5e-4 * (math.log(20) + math.log(5) / 2)))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1, 1), st.floats(0, 1, exclude_min=False)), min_size=1, max_size=15
    )
)
def test_sequential_p_value_never_rises_and_interval_never_grows(
    looks: list[tuple[float, float]],
) -> None:
    test = SequentialTest(tau=0.1)
    previous = test.estimate
    for difference, variance in looks:
        current = test.update(difference, variance)
        assert 0.0 <= current.p_value <= previous.p_value
        assert previous.ci_low <= current.ci_low
        assert current.ci_high <= previous.ci_high
        previous = current
    assert previous.looks == len(looks)


def test_sequential_rejects_bad_input() -> None:
    for tau in (0.0, -0.1, 1e-200, math.nan):
        with pytest.raises(InvalidInputError, match="tau"):
            SequentialTest(tau=tau)
    with pytest.raises(InvalidInputError):
        msprt_look(0.1, 0.0, tau=0.1, alpha=0.05)
    with pytest.raises(InvalidInputError):
        SequentialTest(tau=0.1).update(0.1, -1.0)
    with pytest.raises(InvalidInputError):
        SequentialTest(tau=0.1).update_proportions(5, 4, 1, 4)


# --- sample-ratio mismatch -----------------------------------------------------------------


def test_srm_flags_a_45_55_split_and_not_a_50_50_one() -> None:
    equal = {"control": 1.0, "treatment": 1.0}
    skewed = srm_check({"control": 4500, "treatment": 5500}, equal)
    assert skewed.chi2 == pytest.approx(100.0)
    assert skewed.mismatch
    assert skewed.p_value < 1e-20
    assert not srm_check({"control": 5000, "treatment": 5000}, equal).mismatch
    rng = np.random.default_rng(10)
    treated = int((rng.random(10_000) < 0.5).sum())
    fair = srm_check({"control": 10_000 - treated, "treatment": treated}, equal)
    assert not fair.mismatch
    assert fair.p_value > 0.01
    # Planned 10/90 split observed as planned; three arms with one starved.
    assert not srm_check({"a": 1010, "b": 8990}, {"a": 0.1, "b": 0.9}).mismatch
    starved = srm_check({"a": 3400, "b": 3400, "c": 3000}, {"a": 1, "b": 1, "c": 1})
    assert starved.mismatch
    assert starved.expected["c"] == pytest.approx(9800 / 3)


def test_srm_false_alarms_are_rare() -> None:
    rng = np.random.default_rng(11)
    treated = rng.binomial(10_000, 0.5, size=2000)
    alarms = sum(
        srm_check({"c": 10_000 - int(t), "t": int(t)}, {"c": 1, "t": 1}).mismatch for t in treated
    )
    assert alarms <= 10  # 0.1 % of 2,000 is 2


@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        ({"a": 1, "b": 2}, {"a": 1.0, "c": 1.0}),
        ({"a": 1}, {"a": 1.0}),
        ({"a": -1, "b": 2}, {"a": 1.0, "b": 1.0}),
        ({"a": 1, "b": 2}, {"a": 0.0, "b": 1.0}),
        ({"a": 0, "b": 0}, {"a": 1.0, "b": 1.0}),
    ],
)
def test_srm_rejects_bad_input(observed: dict[str, int], weights: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        srm_check(observed, weights)


# --- guardrails ----------------------------------------------------------------------------


def test_guardrails() -> None:
    limits = {
        "error_rate": Guardrail(max_increase=0.01),
        "latency_p99_ms": Guardrail(max_relative_increase=0.10),
        "revenue": Guardrail(max_relative_decrease=0.02),
        "clicks": Guardrail(max_decrease=5.0),
    }
    control = {"error_rate": 0.010, "latency_p99_ms": 20.0, "revenue": 100.0, "clicks": 50.0}
    good = {"error_rate": 0.015, "latency_p99_ms": 21.0, "revenue": 99.0, "clicks": 46.0}
    assert all(ok for _, ok, _ in check_guardrails(control, good, limits))
    bad = {"error_rate": 0.030, "latency_p99_ms": 25.0, "revenue": 97.0, "clicks": 40.0}
    results = check_guardrails(control, bad, limits)
    assert [(metric, ok) for metric, ok, _ in results] == [
        ("clicks", False),
        ("error_rate", False),
        ("latency_p99_ms", False),
        ("revenue", False),
    ]
    assert "relative increase 0.25 exceeds 0.1" in results[2].detail
    missing = check_guardrails(control, {"error_rate": math.nan}, limits)
    assert not any(result.ok for result in missing)
    with pytest.raises(InvalidInputError, match="Guardrail"):
        check_guardrails(control, good, {"error_rate": 0.01})  # type: ignore[dict-item]


# --- analysis of a prediction log ----------------------------------------------------------


def _log(rng: np.random.Generator, counts: dict[str, int], rates: dict[str, float]) -> pa.Table:
    variants = np.repeat(list(counts), list(counts.values()))
    rng.shuffle(variants)
    rate = np.array([rates[v] for v in variants])
    labels = (rng.random(variants.size) < rate).astype(np.float64)
    label = pa.array(labels, mask=rng.random(variants.size) < 0.1)  # 10 % without feedback
    return pa.table({"variant": variants, "label": label, "unit": np.arange(variants.size) % 7000})


def test_analyze_ab_matches_the_direct_tests_and_flags_srm() -> None:
    rng = np.random.default_rng(12)
    table = _log(rng, {"control": 4500, "treatment": 5500}, {"control": 0.1, "treatment": 0.13})
    report = analyze_ab(table)
    labels = table.column("label").to_numpy(zero_copy_only=False)
    variants = table.column("variant").to_numpy(zero_copy_only=False)
    split = {v: labels[(variants == v) & ~np.isnan(labels)] for v in ("control", "treatment")}
    expected = proportion_test(
        int(split["control"].sum()),
        split["control"].size,
        int(split["treatment"].sum()),
        split["treatment"].size,
    )
    assert report.effects["treatment"] == expected
    assert [(arm.variant, arm.assigned, arm.n) for arm in report.arms] == [
        ("control", 4500, split["control"].size),
        ("treatment", 5500, split["treatment"].size),
    ]
    assert report.srm.mismatch
    assert not analyze_ab(table, expected_weights={"control": 0.45, "treatment": 0.55}).srm.mismatch
    by_unit = analyze_ab(table, unit_column="unit")
    assert sum(by_unit.srm.observed.values()) > 7000  # a unit seen in both arms counts in each
    means = analyze_ab(table, kind="mean")
    assert means.effects["treatment"] == mean_test(split["control"], split["treatment"])
    assert json.loads(json.dumps(report.to_dict()))["srm"]["mismatch"] is True


def test_analyze_ab_sequential_is_always_valid_and_more_cautious() -> None:
    rng = np.random.default_rng(13)
    table = _log(rng, {"control": 5000, "treatment": 5000}, {"control": 0.1, "treatment": 0.12})
    fixed = analyze_ab(table).effects["treatment"]
    sequential = analyze_ab(table, sequential=True, tau=0.02).effects["treatment"]
    assert sequential.method == "msprt"
    assert sequential.difference == pytest.approx(fixed.difference)
    assert sequential.p_value >= fixed.p_value
    assert sequential.ci_high - sequential.ci_low > fixed.ci_high - fixed.ci_low
    # The same replay by hand: 20 looks over the rows in log order.
    labels = table.column("label").to_numpy(zero_copy_only=False)
    variants = table.column("variant").to_numpy(zero_copy_only=False)
    keep = ~np.isnan(labels)
    labels, is_b = labels[keep], variants[keep] == "treatment"
    test = SequentialTest(tau=0.02)
    for stop in np.linspace(0, labels.size, 21)[1:].astype(int):
        a, b = labels[:stop][~is_b[:stop]], labels[:stop][is_b[:stop]]
        result = test.update_proportions(int(a.sum()), a.size, int(b.sum()), b.size)
    assert sequential.p_value == pytest.approx(result.p_value)
    assert sequential.ci_low == pytest.approx(result.ci_low)
    default_tau = analyze_ab(table, sequential=True).effects["treatment"]
    assert 0.0 < default_tau.p_value <= 1.0


def test_analyze_ab_sequential_means_of_large_values() -> None:
    # Latencies in microseconds: large values, small spread; the replay must keep the variance.
    rng = np.random.default_rng(14)
    arms = np.where(rng.random(4000) < 0.5, "control", "treatment")
    latency = 1e7 + rng.normal(0.0, 3.0, size=4000) + np.where(arms == "treatment", 0.5, 0.0)
    table = pa.table({"variant": arms, "latency_us": latency})
    report = analyze_ab(table, metric="latency_us", kind="mean", sequential=True, tau=0.5, looks=5)
    test = SequentialTest(tau=0.5)
    for stop in np.linspace(0, 4000, 6)[1:].astype(int):
        test.update_means(
            latency[:stop][arms[:stop] == "control"], latency[:stop][arms[:stop] == "treatment"]
        )
    effect = report.effects["treatment"]
    assert effect.p_value == pytest.approx(test.estimate.p_value, rel=1e-6)
    assert effect.ci_low == pytest.approx(test.estimate.ci_low, rel=1e-6)
    assert effect.significant
    assert effect.ci_low <= 0.5 <= effect.ci_high


def test_analyze_ab_reads_the_real_prediction_log(tmp_path: Path) -> None:
    log, feedback = PredictionLog(tmp_path), FeedbackLog(tmp_path)
    for i in range(60):
        variant = "control" if i % 2 else "treatment"
        log.append({"request_id": f"r{i}", "time_us": 1_767_225_600_000_000 + i,
                    "endpoint": "churn", "variant": variant, "prediction": 0.5})  # fmt: skip
        if i < 50:
            feedback.attach(f"r{i}", label=int(variant == "treatment" or i % 3 == 0))
    log.close()
    report = analyze_ab(read_predictions(tmp_path))
    arms = {arm.variant: (arm.assigned, arm.n, arm.mean) for arm in report.arms}
    assert arms == {"control": (30, 25, pytest.approx(8 / 25)), "treatment": (30, 25, 1.0)}
    assert report.effects["treatment"].difference == pytest.approx(17 / 25)


def test_analyze_ab_rejects_unusable_tables() -> None:
    table = pa.table({"variant": ["control", "b"] * 3, "label": [0.0, 2.0] * 3})
    with pytest.raises(InvalidInputError, match="kind='mean'"):
        analyze_ab(table)
    with pytest.raises(InvalidInputError, match="'control'"):
        analyze_ab(table, control="primary")
    with pytest.raises(InvalidInputError, match="outcome"):
        analyze_ab(table, metric="outcome")
    text = pa.table({"variant": ["control", "b"], "label": ["yes", "no"]})
    with pytest.raises(InvalidInputError, match="numeric"):
        analyze_ab(text)
    few = pa.table({"variant": ["control", "b", "b"], "label": [1.0, 0.0, 1.0]})
    with pytest.raises(InvalidInputError, match="at least 2"):
        analyze_ab(few)


# --- by unit ------------------------------------------------------------------------------------


def clustered_aa(rng: np.random.Generator, units: int, per_unit: int) -> pa.Table:
    """An A/A test whose units differ a lot (each has its own conversion rate) and make many
    requests each: requests of one unit are correlated, as real users' are."""
    rates = rng.beta(0.5, 1.5, units)
    arms = np.where(rng.random(units) < 0.5, "control", "treatment")
    unit_ids = np.repeat([f"u{i}" for i in range(units)], per_unit)
    labels = (rng.random(units * per_unit) < np.repeat(rates, per_unit)).astype(float)
    return pa.table(
        {"variant": np.repeat(arms, per_unit).tolist(), "unit": unit_ids, "label": labels}
    )


def test_by_unit_keeps_its_false_positive_rate_where_by_row_does_not() -> None:
    rng = np.random.default_rng(11)
    by_unit = by_row = 0
    runs = 400
    for _ in range(runs):
        table = clustered_aa(rng, units=60, per_unit=20)
        by_unit += analyze_ab(table, unit_column="unit").effects["treatment"].significant
        by_row += analyze_ab(table).effects["treatment"].significant
    assert 0.02 <= by_unit / runs <= 0.09  # near alpha = 5 %
    assert by_row / runs > 0.3  # requests of a unit are not independent observations


def test_by_unit_means_each_units_values_and_counts_mixed_units() -> None:
    table = pa.table(
        {
            "variant": ["control", "control", "treatment", "treatment", "control", "treatment"]
            + ["control", "treatment"] * 2,
            "unit": ["a", "a", "b", "b", "c", "c", "d", "e", "f", "g"],
            "label": [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
        }
    )
    result = analyze_ab(table, unit_column="unit")
    assert (result.unit, result.mixed_units, result.kind) == ("unit", 1, "mean")  # c: both arms
    arms = {a.variant: (a.n, a.mean) for a in result.arms}
    # control units a (0.5), d (0), f (1); treatment units b (1), e (1), g (0)
    assert arms["control"] == (3, pytest.approx(0.5))
    assert arms["treatment"] == (3, pytest.approx(2 / 3))
    assert result.srm.observed == {"control": 4, "treatment": 4}  # distinct units, c in both
