"""`keel GROUP ...` runs an app holding that group alone (typer builds every command it holds on
each run, and the other groups' modules are not imported); it must behave exactly as the full
app does. The console script's entry point imports the CLI with the garbage collector off and
freezes what it made."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

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


def test_a_group_is_registered_once_however_often_it_runs() -> None:
    names = []
    for _ in range(3):
        group = _app_for(["features"]).registered_groups[0].typer_instance
        assert group is not None
        names.append([command.name for command in group.registered_commands])
    assert names[0] == names[1] == names[2]
    assert len(set(names[0])) == len(names[0])
    assert {"materialize", "get-online"} <= set(names[0])  # added by features_store


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_a_group_run_imports_that_groups_modules_only() -> None:
    done = _run_python(
        "import sys\n"
        "from keel.cli.main import main\n"
        "code = main(['data', '--help'])\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('keel.cli.')))\n"
    )
    assert done.returncode == 0, done.stderr
    code, loaded = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert code == "0"
    assert "'keel.cli.data'" in loaded
    for other in ("serve", "deploy", "features", "models", "runs", "demo", "loadtest"):
        assert f"'keel.cli.{other}'" not in loaded


def test_the_console_script_runs_the_entry_point() -> None:
    with open(Path(__file__).parents[2] / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["keel"] == "keel.cli.entry:run"


def test_the_entry_point_freezes_what_the_import_made_and_collects_after() -> None:
    # main is swapped for a probe once keel.cli.main is imported (by the entry point itself).
    done = _run_python(
        "import gc, sys\n"
        "import keel.cli.entry as entry\n"
        "class Probe:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'keel.cli.main':\n"
        "            print('import with gc', gc.isenabled())\n"
        "        return None\n"
        "sys.meta_path.insert(0, Probe())\n"
        "def probe():\n"
        "    print('run with gc', gc.isenabled(), 'frozen', gc.get_freeze_count())\n"
        "    return 3\n"
        "real_import = __import__\n"
        "def patched(name, *args, **kwargs):\n"
        "    module = real_import(name, *args, **kwargs)\n"
        "    if name == 'keel.cli.main':\n"
        "        sys.modules['keel.cli.main'].main = probe\n"
        "    return module\n"
        "import builtins\n"
        "builtins.__import__ = patched\n"
        "entry.run()\n"
    )
    assert done.returncode == 3, done.stderr  # main's exit code is the process's
    lines = done.stdout.splitlines()
    assert lines[0] == "import with gc False"
    words = lines[1].split()
    assert words[:4] == ["run", "with", "gc", "True"]
    assert int(words[-1]) > 10_000  # the CLI's modules, classes and functions


def test_a_user_mistake_through_the_entry_point_is_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from keel.cli.entry import run; run()", "data", "add", "x.csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={name: value for name, value in os.environ.items() if not name.startswith("KEEL_")},
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'x.csv'} does not exist; check the path"
    ]
