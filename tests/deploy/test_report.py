"""Deployment reports: numbers checked against hand computation; the CLI commands end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.cli import deploy as deploy_cli
from keel.cli import deploy_control
from keel.cli.main import app, main
from keel.deploy.gates_metrics import psi
from keel.deploy.report import report, shadow_report, variant_stats
from keel.deploy.state import deploy, get_deployment, start_ab, start_canary, start_shadow
from keel.errors import InvalidInputError
from keel.project import Project
from keel.registry import register_model_version
from keel.serving.feedback import FeedbackLog
from keel.serving.predlog import PredictionLog

EP = "fraud-ep"
T0_US = 1_700_000_000_000_000  # 2023-11-14: in the past, before any canary starts

# (request id, variant, prediction or None for an error, latency in us)
SHADOW_ROWS: list[tuple[str, str, float | None, int]] = [
    ("r1", "primary", 0.2, 1000),
    ("r2", "primary", 0.4, 2000),
    ("r3", "primary", 0.6, 3000),
    ("r4", "primary", 0.8, 4000),
    ("r5", "primary", 0.5, 5000),  # its shadow copy was dropped
    ("r1", "shadow", 0.2, 1500),
    ("r2", "shadow", 0.4000001, 2500),
    ("r3", "shadow", 0.9, 3500),
    ("r4", "shadow", None, 10000),  # the shadow failed on r4
]


def records(rows: list[tuple[str, str, float | None, int]]) -> list[dict[str, Any]]:
    return [
        {
            "request_id": rid,
            "time_us": T0_US + i,
            "endpoint": EP,
            "variant": variant,
            "model": "fraud",
            "model_version": 1,
            "features": {"amount": 1.0},
            "prediction": prediction,
            "latency_us": latency,
            "status": 200 if prediction is not None else 500,
        }
        for i, (rid, variant, prediction, latency) in enumerate(rows)
    ]


def table(rows: list[tuple[str, str, float | None, int]]) -> pa.Table:
    data = records(rows)
    return pa.table(
        {
            "request_id": [r["request_id"] for r in data],
            "variant": [r["variant"] for r in data],
            "status": pa.array([r["status"] for r in data], pa.int32()),
            "latency_us": pa.array([r["latency_us"] for r in data], pa.int64()),
            "prediction": pa.array([r["prediction"] for r in data], pa.float64()),
            "prediction_json": [json.dumps(r["prediction"]) for r in data],
        }
    )


def check_shadow_numbers(result: Any) -> None:
    assert result.pairs == 3  # r1-r3: r4 failed in the shadow, r5 has no shadow row
    assert result.unmatched == 1
    assert result.agreement == pytest.approx(1 / 3)  # only r1 is identical
    assert result.within_tolerance == pytest.approx(2 / 3)  # r2 differs by 1e-7
    assert result.mean_abs_diff == pytest.approx((0 + 1e-7 + 0.3) / 3)
    assert result.psi == pytest.approx(psi([0.2, 0.4, 0.6, 0.8, 0.5], [0.2, 0.4000001, 0.9]))
    primary, shadow = result.primary, result.shadow
    assert (primary.rows, primary.errors, primary.error_rate) == (5, 0, 0.0)
    assert (shadow.rows, shadow.errors, shadow.error_rate) == (4, 1, 0.25)
    assert primary.latency_p50_ms == pytest.approx(3.0)
    assert primary.latency_p99_ms == pytest.approx(4.96)  # 4000 + 0.96 * 1000 us
    assert shadow.latency_p50_ms == pytest.approx(3.0)  # halfway between 2500 and 3500 us
    assert shadow.latency_p99_ms == pytest.approx(9.805)  # 3500 + 0.97 * 6500 us


def test_shadow_report_matches_hand_computed_values() -> None:
    check_shadow_numbers(shadow_report(table(SHADOW_ROWS)))
    loose = shadow_report(table(SHADOW_ROWS), tolerance=0.5)
    assert loose.within_tolerance == 1.0
    with pytest.raises(InvalidInputError, match="tolerance -1"):
        shadow_report(table(SHADOW_ROWS), tolerance=-1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=30))
def test_shadow_agreement_counts_equal_answers(pairs: list[tuple[int, int]]) -> None:
    rows: list[tuple[str, str, float | None, int]] = []
    for i, (a, b) in enumerate(pairs):
        rows += [(f"q{i}", "primary", a / 4, 1000), (f"q{i}", "shadow", b / 4, 1000)]
    result = shadow_report(table(rows))
    same = sum(a == b for a, b in pairs)
    assert result.pairs == len(pairs)
    assert result.agreement == pytest.approx(same / len(pairs))
    assert result.within_tolerance == result.agreement
    assert result.mean_abs_diff == pytest.approx(sum(abs(a - b) / 4 for a, b in pairs) / len(pairs))
    if same == len(pairs):
        assert result.psi == pytest.approx(0.0, abs=1e-12)


def test_variant_stats_of_an_absent_variant_is_empty() -> None:
    stats = variant_stats(table(SHADOW_ROWS), "canary")
    assert (stats.rows, stats.error_rate, stats.latency_p99_ms) == (0, None, None)


def predict(frame: Any) -> list[int]:
    return [0] * len(frame)


@pytest.fixture
def fraud(sqlite_project: Project) -> Project:
    for _ in range(2):
        register_model_version(sqlite_project, predict, "fraud", flavor="pyfunc")
    deploy(sqlite_project, EP, "fraud@1")
    return sqlite_project


def write(
    project: Project, rows: list[dict[str, Any]], labels: dict[str, int] | None = None
) -> None:
    folder = project.root / project.config.serving.prediction_log
    log = PredictionLog(folder)
    log.append_many(rows)
    log.close()
    if labels:
        feedback = FeedbackLog(folder)
        for rid, label in labels.items():
            feedback.attach(rid, label=label)
        feedback.close()


def test_report_of_a_shadow_deployment(fraud: Project) -> None:
    start_shadow(fraud, EP, "fraud@2")
    write(fraud, records(SHADOW_ROWS))
    result = report(fraud, EP)
    assert (result.strategy, result.rows) == ("shadow", 9)
    assert result.shadow is not None
    check_shadow_numbers(result.shadow)
    assert [v.variant for v in result.variants] == ["primary", "shadow"]
    assert result.to_dict()["shadow"]["pairs"] == 3


def ab_rows(arm: str, n: int, ones: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rows = records([(f"{arm}-{i}", arm, 0.5, 1000) for i in range(n)])
    return rows, {f"{arm}-{i}": int(i < ones) for i in range(n)}


def test_report_of_an_ab_test_per_arm_with_srm(fraud: Project) -> None:
    start_ab(fraud, EP, {"control": "fraud@1", "treatment": "fraud@2"}, salt="s")
    control, control_labels = ab_rows("control", 40, 10)
    treatment, treatment_labels = ab_rows("treatment", 60, 30)
    write(fraud, control + treatment)
    waiting = report(fraud, EP)
    assert waiting.ab is None
    assert waiting.note is not None
    assert waiting.note.startswith("no effect estimate yet")
    assert "sample ratio p-value 0.0455" in waiting.note  # chi2 = (10^2 + 10^2) / 50 = 4

    write(fraud, [], {**control_labels, **treatment_labels})
    result = report(fraud, EP)
    assert result.ab is not None
    arms = {a.variant: (a.assigned, a.n, a.mean) for a in result.ab.arms}
    assert arms == {"control": (40, 40, 0.25), "treatment": (60, 60, 0.5)}
    effect = result.ab.effects["treatment"]
    assert effect.difference == pytest.approx(0.25)
    assert result.ab.srm.chi2 == pytest.approx(4.0)
    assert result.ab.srm.mismatch is False  # p = 0.0455 is far above 0.001


def test_report_of_an_ab_test_counts_and_compares_units_the_server_logged(
    fraud: Project,
) -> None:
    start_ab(fraud, EP, {"control": "fraud@1", "treatment": "fraud@2"}, salt="s")
    rows: list[dict[str, Any]] = []
    labels: dict[str, int] = {}
    # control: 10 units × 4 requests, unit i converts on all its requests when i < 5;
    # treatment: 12 units × 2 requests, all converting when i < 9.
    for arm, units, per_unit, converting in (("control", 10, 4, 5), ("treatment", 12, 2, 9)):
        for i in range(units):
            for j in range(per_unit):
                rid = f"{arm}-{i}-{j}"
                rows += [{**records([(rid, arm, 0.5, 1000)])[0], "unit": f'["{arm}{i}"]'}]
                labels[rid] = int(i < converting)
    write(fraud, rows, labels)
    result = report(fraud, EP)
    assert result.ab is not None
    assert result.ab.unit is not None
    arms = {a.variant: (a.assigned, a.n, a.mean) for a in result.ab.arms}
    assert arms == {"control": (10, 10, 0.5), "treatment": (12, 12, 0.75)}
    assert result.ab.srm.observed == {"control": 10, "treatment": 12}
    assert result.ab.effects["treatment"].difference == pytest.approx(0.25)


def test_report_of_a_canary_reads_its_current_step(fraud: Project) -> None:
    write(fraud, records([("old", "canary", 0.1, 99_000)]))  # before the canary started
    start_canary(fraud, EP, "fraud@2", plan=[50, 100], hold=0, min_sample=2)
    canary = get_deployment(fraud, EP).spec.canary
    assert canary is not None
    start_us = canary.step_started_at * 1000
    rows = records([(f"p{i}", "primary", 0.5, 1000) for i in range(3)])
    rows += records([(f"c{i}", "canary", 0.5, 1000) for i in range(2)])
    for i, row in enumerate(rows):
        row["time_us"] = start_us + i
    write(fraud, rows)
    result = report(fraud, EP)
    assert result.strategy == "canary"
    assert result.canary is not None
    assert result.canary.rows == {"primary": 3, "canary": 2}
    assert result.canary.gate("sample").status == "pass"
    assert {v.variant: v.rows for v in result.variants} == {"canary": 2, "primary": 3}


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli(fraud: Project, project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    if not any(group.name == "deploy" for group in app.registered_groups):
        deploy_cli.register(app)
    if not any(c.name == "tick" for c in deploy_cli.app.registered_commands):
        deploy_control.register(deploy_cli.app)
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(project_dir))
    from keel.cli import output

    monkeypatch.setattr(output.console, "width", 250)
    return fraud


def test_cli_report_table_and_json(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    start_shadow(cli, EP, "fraud@2")
    write(cli, records(SHADOW_ROWS))
    capsys.readouterr()
    assert main(["deploy", "report", EP]) == 0
    text = capsys.readouterr().out
    assert "shadow report of fraud-ep (9 rows, all logged traffic)" in text
    assert "33.33%" in text  # identical outputs
    assert "66.67%" in text  # within the tolerance
    assert main(["deploy", "report", EP, "--since", "1h", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == 0  # the rows were logged in 2023
    assert main(["deploy", "report", EP, "--since", "2020-01-01T00:00:00Z", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shadow"]["unmatched"] == 1
    assert main(["deploy", "report", EP, "--since", "yesterday"]) != 0
    assert "neither an ISO time" in capsys.readouterr().err


def test_cli_tick_and_watch(cli: Project, capsys: pytest.CaptureFixture[str]) -> None:
    start_canary(cli, EP, "fraud@2", plan=[50, 100], hold=3600, min_sample=5)
    capsys.readouterr()
    assert main(["deploy", "tick", EP, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["action"] == "waiting"
    assert "canary needs 5 more rows (0 of 5)" in result["message"]
    assert main(["deploy", "watch", "--interval", "10ms", "--rounds", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("fraud-ep: waiting at 50 %: wait: sample:") for line in lines)
