"""The data settings remembered between commands (keel.config_file): read back only for the
exact inputs they were validated from, never holding a remote's address or options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keel.config_file import SNAPSHOT_FILE, DataSettings
from keel.errors import ConfigError
from keel.project import Project, init_project

SECRET = "s3cr3t-value"
YAML = f"""\
project: demo
data:
  cache: .keel/objects
  link: [hardlink, copy]
  jobs: 3
  remote: store
  remotes:
    store:
      url: s3://bucket/prefix
      options: {{key: someone, secret: {SECRET}}}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    init_project(tmp_path)
    (tmp_path / "keel.yaml").write_text(YAML, "utf-8")
    return tmp_path


def _snapshot(root: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((root / ".keel" / SNAPSHOT_FILE).read_text("utf-8"))
    return loaded


def test_a_validated_configuration_is_remembered_without_remote_addresses(root: Path) -> None:
    project = Project(root, environ={})
    want = DataSettings(".keel/objects", ("hardlink", "copy"), 3, "store", ("store",))
    assert project.data_settings == want
    text = (root / ".keel" / SNAPSHOT_FILE).read_text("utf-8")
    for leaked in (SECRET, "s3://", "someone"):
        assert leaked not in text
    again = Project(root, environ={})
    assert "config" not in again.__dict__  # read back, nothing validated
    assert again.data_settings == want


def test_a_later_command_reads_the_settings_without_pydantic_or_yaml(tmp_path: Path) -> None:
    """Without a remote to ask (which needs its address, so the whole configuration)."""
    root = tmp_path
    init_project(root)
    Project(root)  # validates and remembers
    script = (
        "import sys\n"
        "from keel.cli.main import main\n"
        "code = main(['data', 'status'])\n"
        "print(code, 'pydantic' in sys.modules, 'yaml' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == "0 False False", done.stdout + done.stderr


def test_a_changed_keel_yaml_is_validated_again(root: Path) -> None:
    Project(root, environ={})
    (root / "keel.yaml").write_text(YAML.replace("jobs: 3", "jobs: 5"), "utf-8")
    assert Project(root, environ={}).data_settings.jobs == 5
    assert _snapshot(root)["data"] == {
        "cache": ".keel/objects",
        "link": ["hardlink", "copy"],
        "jobs": 5,
        "remote": "store",
        "remote_names": ["store"],
    }
    (root / "keel.yaml").write_text(YAML.replace("jobs: 3", "jobs: 0"), "utf-8")
    with pytest.raises(ConfigError, match=r"data\.jobs"):
        Project(root, environ={})  # a mistake surfaces at once, not at first use


def test_the_environment_is_an_input(root: Path) -> None:
    assert Project(root, environ={}).data_settings.jobs == 3
    assert Project(root, environ={"KEEL_DATA_JOBS": "7"}).data_settings.jobs == 7
    assert Project(root, environ={}).data_settings.jobs == 3
    with pytest.raises(ConfigError, match="KEEL_DATA_JOBS"):
        Project(root, environ={"KEEL_DATA_JOBS": "many"})


def test_a_damaged_snapshot_is_ignored_and_rewritten(root: Path) -> None:
    Project(root, environ={})
    (root / ".keel" / SNAPSHOT_FILE).write_text('{"fingerprint": ', "utf-8")
    project = Project(root, environ={})
    assert "config" in project.__dict__  # validated again
    assert project.data_settings.cache == ".keel/objects"
    assert "config" not in Project(root, environ={}).__dict__


def test_overrides_are_neither_read_from_nor_written_to_the_snapshot(root: Path) -> None:
    Project(root, environ={})
    before = (root / ".keel" / SNAPSHOT_FILE).read_text("utf-8")
    project = Project(root, environ={}, overrides={"data.jobs": 9})
    assert project.data_settings.jobs == 9
    assert (root / ".keel" / SNAPSHOT_FILE).read_text("utf-8") == before
    assert Project(root, environ={}).data_settings.jobs == 3


def test_nothing_is_written_without_a_keel_folder(tmp_path: Path) -> None:
    (tmp_path / "keel.yaml").write_text(YAML, "utf-8")
    assert Project(tmp_path, environ={}).data_settings.jobs == 3
    assert not (tmp_path / ".keel").exists()


def test_a_remembered_configuration_is_not_written_again_when_loaded_in_full(root: Path) -> None:
    Project(root, environ={})
    project = Project(root, environ={})  # read back
    (root / ".keel" / SNAPSHOT_FILE).unlink()
    assert project.config.data.jobs == 3  # the full configuration, loaded on first use
    assert not (root / ".keel" / SNAPSHOT_FILE).exists()
