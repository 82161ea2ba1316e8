"""`keel GROUP ...` runs an app holding that group alone (typer builds every command it holds on
each run); it must behave exactly as the full app does."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from keel.cli.main import _app_for, app


@pytest.mark.parametrize("group", ["data", "features", "models", "runs"])
def test_a_group_runs_alone_and_reads_as_in_the_full_app(group: str) -> None:
    alone = _app_for([group, "--help"])
    assert alone is not app
    assert [info.name for info in alone.registered_groups] == [group]
    assert alone.registered_commands == []
    runner = CliRunner()
    for args in ([group, "--help"], [group, "no-such-command"]):
        want, got = runner.invoke(app, args), runner.invoke(alone, args)
        assert (got.exit_code, got.output) == (want.exit_code, want.output)


@pytest.mark.parametrize("args", [[], ["--help"], ["--debug", "data", "status"], ["init"]])
def test_anything_else_runs_the_full_app(args: list[str]) -> None:
    assert _app_for(args) is app
