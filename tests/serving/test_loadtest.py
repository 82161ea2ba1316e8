"""`keel loadtest`: the open-loop generator against a real uvicorn server (rate, errors, the
capacity search through the CLI), and the pure parts (percentiles, search, bodies) alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from keel.cli import loadtest as loadtest_cli
from keel.errors import InvalidInputError, NotFoundError
from keel.serving.loadgen import Summary, percentile, run_open_loop, summarize
from keel.serving.loadtest import (
    Target,
    _client,
    read_rows,
    request_bodies,
    run_loadtest,
    search_capacity,
    synthesize_rows,
)
from tests.serving import test_app
from tests.serving.test_app import Served, real_server
from tests.support.servers import free_port

served = test_app.served  # the module fixture: the served project, built once here


@pytest.fixture(scope="module")
def url(served: Served) -> Iterator[str]:
    with real_server(served) as port:
        yield f"http://127.0.0.1:{port}"


def invoke(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    loadtest_cli.register(app)
    app.command("noop")(lambda: None)  # two commands, so `loadtest` is a real subcommand
    result = CliRunner().invoke(app, ["loadtest", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def test_achieved_rate_follows_the_requested_rate(url: str) -> None:
    summary = run_loadtest(Target(url=url, endpoint="plain"), rps=50, duration=2)
    assert summary.sent == 100
    assert summary.ok == 100
    assert summary.errors == {}
    assert 40 <= summary.achieved_rps <= 60
    assert 0 < summary.p50_ms <= summary.p90_ms <= summary.p99_ms <= summary.max_ms


def test_rows_from_a_body_file_in_batches(url: str, tmp_path: Path, served: Served) -> None:
    body = tmp_path / "rows.jsonl"
    body.write_text('{"user_id": 1, "amount": 20.0}\n\n{"user_id": 2, "amount": 8.0}\n')
    target = Target(url=url, endpoint="fraud", body=body, rows_per_request=3)
    summary = run_loadtest(target, rps=20, duration=0.5)
    assert (summary.sent, summary.ok, summary.errors) == (10, 10, {})
    rows = read_rows(body)
    got = httpx.post(f"{url}{target.path}", json=request_bodies(rows, 3)[0]).json()
    expected = [served.expected_fraud(u, a) for u, a in [(1, 20.0), (2, 8.0), (1, 20.0)]]
    assert got["predictions"] == pytest.approx(expected)


def test_errors_are_counted_by_status_for_a_wrong_endpoint(url: str, tmp_path: Path) -> None:
    body = tmp_path / "rows.jsonl"
    body.write_text('{"a": 0.5, "b": 0.1}\n')
    summary = run_loadtest(Target(url=url, endpoint="nope", body=body), rps=40, duration=0.5)
    assert summary.sent == 20
    assert summary.ok == 0
    assert summary.errors == {"404": 20}
    assert summary.achieved_rps == 0
    assert summary.error_share == 1.0
    with pytest.raises(NotFoundError, match="'nope'"):
        run_loadtest(Target(url=url, endpoint="nope"), rps=10, duration=0.5)


def test_an_api_key_is_sent_as_a_bearer_token() -> None:
    client = _client(Target(url="http://t", endpoint="e", api_key="s3cret"))
    assert client.headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in _client(Target(url="http://t", endpoint="e")).headers


def test_a_server_that_is_not_there_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="no model server answers"):
        run_loadtest(Target(url=f"http://127.0.0.1:{free_port()}", endpoint="x"), rps=1, duration=1)


def test_cli_reports_figures_and_gates_on_the_slo(url: str) -> None:
    code, out = invoke("plain", "--url", url, "--rps", "20", "--duration", "0.5", "--json")
    figures = json.loads(out)
    assert code == 0
    assert (figures["sent"], figures["ok"], figures["errors"]) == (10, 10, {})
    args = ["plain", "--url", url, "--rps", "10", "--duration", "0.3", "--slo-p99", "0.0001"]
    code, out = invoke(*args, "--json")
    assert code == 1
    assert json.loads(out)["meets_slo"] is False


def test_capacity_search_stops_at_the_ceiling_when_every_rate_passes(url: str) -> None:
    args = ["--rps", "20", "--duration", "0.3", "--slo-p99", "60000", "--max-rps", "80"]
    code, out = invoke("plain", "--url", url, "--find-capacity", *args, "--json")
    report = json.loads(out)
    assert code == 0
    assert [p["rate"] for p in report["probes"]] == [20, 40, 80]
    assert all(p["passed"] for p in report["probes"])
    assert (report["capacity_rps"], report["stopped"]) == (80, "max_rps")


def test_capacity_search_bisects_down_when_nothing_meets_the_slo(url: str) -> None:
    args = ["--rps", "8", "--duration", "0.5", "--slo-p99", "0.0001"]
    code, out = invoke("plain", "--url", url, "--find-capacity", *args)
    assert code == 0
    for rate in ("8", "4", "2", "1"):
        assert f"\n│ {rate} " in out.replace("┃", "│")
    assert "capacity: 0 requests/s" in out
    with pytest.raises(InvalidInputError, match="--find-capacity needs --slo-p99"):
        invoke("plain", "--url", url, "--find-capacity", "--rps", "8", "--duration", "1")


def test_open_loop_does_not_wait_for_answers() -> None:
    in_flight = 0
    most = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.15)
        in_flight -= 1
        if request.url.path.endswith("/bad"):
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={})

    async def main(path: str, connections: int = 64) -> Summary:
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            result = await run_open_loop(
                client, path, [{"rows": []}], rate=40, duration=0.25, connections=connections
            )
        return summarize(result)

    summary = asyncio.run(main("/good"))
    assert (summary.sent, summary.ok) == (10, 10)
    assert most >= 2  # a closed loop would never have two requests out at once
    assert summary.p50_ms >= 150  # latency counts the whole answer time
    most = 0
    bounded = asyncio.run(main("/good", connections=1))
    assert most == 1
    assert bounded.ok == 10
    assert bounded.late_starts >= 8  # each waited for the one connection: counted late
    assert bounded.max_ms >= 10 * 150 - 225  # the last, due at 0.225 s, waited for nine
    failed = asyncio.run(main("/bad"))
    assert failed.errors == {"connect": 10}
    assert failed.completed == 0


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.sampled_from([0.5, 0.9, 0.99]))
def test_percentile_is_the_nearest_rank(values: list[float], q: float) -> None:
    expected = float(np.percentile(np.array(values), q * 100, method="inverted_cdf"))
    assert percentile(sorted(values), q) == expected


def fake_summary(rate: float, passed: bool) -> Summary:
    return Summary(
        requested_rps=rate, duration_s=1, sent=10, completed=10, ok=10, achieved_rps=rate,
        p50_ms=1, p90_ms=1, p99_ms=1 if passed else 100, max_ms=100,
        late_starts=0, max_lag_ms=0, errors={},
    )  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.floats(0.5, 50_000), st.floats(1, 5_000), st.floats(0.01, 0.3), st.integers(1, 40))
def test_capacity_search_brackets_the_true_capacity(
    true: float, start: float, precision: float, max_probes: int
) -> None:
    async def probe(rate: float) -> Summary:
        return fake_summary(rate, rate <= true)

    found = asyncio.run(
        search_capacity(
            probe,
            start_rps=start,
            slo_p99_ms=10,
            max_rps=100_000,
            precision=precision,
            max_probes=max_probes,
        )
    )
    rates = [p.rate for p in found.probes]
    assert len(rates) == len(set(rates)) <= max_probes
    assert all(p.passed == (p.rate <= true) for p in found.probes)
    assert found.rate == max([r for r in rates if r <= true], default=0.0)
    if found.stopped == "converged":
        failing = min(r for r in rates if r > true)
        assert failing - found.rate <= max(precision * failing, 1.0)
    if max_probes >= 40:
        assert found.stopped == "converged"


def test_search_errors_count_against_a_rate() -> None:
    async def probe(rate: float) -> Summary:
        ok = 10 if rate <= 10 else 9  # 10 % errors past 10 requests/s
        base = fake_summary(rate, True)
        return Summary(**{**base.__dict__, "ok": ok, "errors": {"500": 10 - ok}})

    found = asyncio.run(search_capacity(probe, start_rps=5, slo_p99_ms=10, max_error_share=0.05))
    assert found.rate == 10
    assert [p.rate for p in found.probes][:3] == [5, 10, 20]


def test_request_bodies_use_every_row_before_repeating() -> None:
    rows = [{"i": i} for i in range(5)]
    bodies = request_bodies(rows, 2)
    sent = [r["i"] for b in bodies for r in b["rows"]]
    assert sent == [0, 1, 2, 3, 4] * 2
    with pytest.raises(InvalidInputError, match="--rows 0"):
        request_bodies(rows, 0)


def test_synthesized_rows_follow_the_v2_types() -> None:
    inputs = [
        {"name": "k", "datatype": "INT64"},
        {"name": "x", "datatype": "FP64"},
        {"name": "f", "datatype": "BOOL"},
        {"name": "s", "datatype": "BYTES"},
    ]
    rows = synthesize_rows(inputs, 50)
    assert len(rows) == 50
    assert all(list(r) == ["k", "x", "f", "s"] for r in rows)
    assert all(isinstance(r["k"], int) and 1 <= r["k"] <= 100 for r in rows)
    assert all(isinstance(r["x"], float) for r in rows)
    assert {type(r["f"]) for r in rows} == {bool}
    assert all(isinstance(r["s"], str) for r in rows)
    assert synthesize_rows(inputs, 5) == synthesize_rows(inputs, 5)  # seeded: repeatable


def test_bad_body_files_and_plans_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        read_rows(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:2 is not a JSON object"):
        read_rows(bad)
    bad.write_text("{oops\n")
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:1 is not valid JSON"):
        read_rows(bad)

    async def plan(rate: float, duration: float) -> None:
        async with httpx.AsyncClient(base_url="http://t") as client:
            await run_open_loop(client, "/", [{}], rate=rate, duration=duration)

    for rate, duration, match in [(0, 1, "--rps 0"), (10, -1, "--duration -1")]:
        with pytest.raises(InvalidInputError, match=match):
            asyncio.run(plan(rate, duration))
