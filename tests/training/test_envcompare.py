"""Recorded against current environments, and building one with the recorded versions."""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keel
from keel.tracking.environment import capture_environment
from keel.tracking.records import EnvironmentRecord
from keel.training.envcompare import (
    EnvironmentBuildError,
    build_environment,
    compare_environments,
    environment_of,
    requirements,
)


def env(packages: dict[str, str], python: str = "3.11.7") -> EnvironmentRecord:
    return EnvironmentRecord("x", python, "Linux-x86_64", packages)


def test_every_added_removed_and_changed_package_is_reported() -> None:
    old = env({"numpy": "2.4.0", "pandas": "3.0.0", "six": "1.16.0", "rich": "14.0.0"})
    new = env({"numpy": "2.4.1", "pandas": "3.0.0", "rich": "14.0.0", "torch": "2.9.0"}, "3.11.9")
    diff = compare_environments(old, new)
    assert [(c.name, c.kind, c.recorded, c.current) for c in diff.changes] == [
        ("numpy", "changed", "2.4.0", "2.4.1"),
        ("six", "removed", "1.16.0", None),
        ("torch", "added", None, "2.9.0"),
    ]
    assert [c.name for c in diff.of_kind("changed")] == ["numpy"]
    assert (diff.recorded_python, diff.current_python) == ("3.11.7", "3.11.9")
    assert not diff.identical
    assert diff.changes[1].describe() == "six 1.16.0 -> (none)"


def test_the_same_environment_is_identical() -> None:
    current = capture_environment()
    diff = compare_environments(current, current)
    assert diff.identical
    assert diff.changes == []


packages = st.dictionaries(
    st.sampled_from(["numpy", "pandas", "scipy", "rich", "six", "torch", "lightgbm"]),
    st.sampled_from(["1.0", "1.1", "2.0"]),
)


@given(packages, packages)
def test_changes_are_exactly_the_differences(old: dict[str, str], new: dict[str, str]) -> None:
    diff = compare_environments(env(old), env(new))
    # Replaying the changes on the recorded packages gives the current ones...
    replayed = dict(old)
    for change in diff.changes:
        if change.current is None:
            del replayed[change.name]
        else:
            replayed[change.name] = change.current
    assert replayed == new
    # ... and no package that is the same on both sides is listed.
    listed = {c.name for c in diff.changes}
    assert all(old[name] == new[name] for name in set(old) & set(new) - listed)
    assert diff.identical == (old == new)


def test_environment_of_another_interpreter_lists_its_packages() -> None:
    listed = environment_of(sys.executable)
    here = capture_environment()
    assert listed.python_version == here.python_version
    for name in ("numpy", "pandas", "keel", "scikit-learn"):
        assert listed.packages[name] == here.packages[name]
    assert compare_environments(here, listed).changes == []


def test_requirements_pin_every_recorded_version_and_install_local_packages_from_their_folder() -> (
    None
):
    recorded = env({"numpy": "1.0.0", "pip": "24.0", "keel": version("keel"), "zzz-absent": "3"})
    lines = requirements(recorded)
    assert "numpy==1.0.0" in lines
    assert "zzz-absent==3" in lines
    assert not any(line.startswith("pip") for line in lines)  # each venv brings its own
    # Keel is installed here from its source folder: no index holds that version.
    (keel_line,) = [line for line in lines if line.startswith("-e ")]
    assert keel_line == f"-e {Path(keel.__file__).parents[2].as_uri()}"  # editable here
    # At another version, the folder is not that version: pin it like any package.
    assert "keel==0.0.1" in requirements(env({"keel": "0.0.1"}))


def test_a_version_no_index_holds_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No index at all: what happens offline, without waiting for a network timeout.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    recorded = env({"keel-no-such-package": "9.9.9"}, sys.version.split()[0])
    with pytest.raises(EnvironmentBuildError, match="install the recorded packages") as caught:
        build_environment(recorded, tmp_path / "venv")
    message = str(caught.value)
    assert "keel-no-such-package" in message
    assert "reproduce without --env" in message
    assert (tmp_path / "venv" / "keel-requirements.txt").read_text() == (
        "keel-no-such-package==9.9.9\n"
    )


def test_a_built_environment_is_isolated_from_this_one(tmp_path: Path) -> None:
    recorded = env({"pip": "24.0"}, sys.version.split()[0])  # only the installer: nothing to get
    python = build_environment(recorded, tmp_path / "venv")
    built = environment_of(python)
    assert python.is_file()
    assert built.python_version == recorded.python_version
    assert built.packages == {}  # none of this interpreter's packages leak in
    assert compare_environments(recorded, built).of_kind("removed")[0].name == "pip"
