from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import load_config
from keel.errors import ConfigError
from keel.project import Project, init_project


def write(root: Path, text: str) -> None:
    (root / "keel.yaml").write_text(text, encoding="utf-8")


def test_defaults_without_file(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={})
    assert config.metadata.url == "sqlite:///.keel/keel.db"
    assert config.artifacts.url == ".keel/artifacts"
    assert config.registry.require_approval == []


def test_init_writes_commented_defaults_that_load(tmp_path: Path) -> None:
    file = init_project(tmp_path / "p", name="fraud")
    text = file.read_text()
    assert text.count("#") > 10
    config = load_config(file.parent, environ={})
    assert config.project == "fraud"
    assert config == load_config(file.parent, environ={}).model_copy()
    assert ".keel/" in (file.parent / ".gitignore").read_text().splitlines()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    init_project(tmp_path)
    with pytest.raises(ConfigError, match=r"already exists.*--force"):
        init_project(tmp_path)
    init_project(tmp_path, force=True)


def test_precedence_file_then_env_then_arguments(tmp_path: Path) -> None:
    write(tmp_path, "metadata:\n  url: sqlite:///from-file.db\nuser: file-user\n")
    assert load_config(tmp_path, environ={}).metadata.url == "sqlite:///from-file.db"
    env = {"KEEL_METADATA_URL": "sqlite:///from-env.db", "KEEL_USER": "env-user"}
    config = load_config(tmp_path, environ=env)
    assert (config.metadata.url, config.user) == ("sqlite:///from-env.db", "env-user")
    config = load_config(tmp_path, environ=env, overrides={"metadata.url": "sqlite:///arg.db"})
    assert (config.metadata.url, config.user) == ("sqlite:///arg.db", "env-user")


def test_env_lists_and_numbers(tmp_path: Path) -> None:
    env = {
        "KEEL_REGISTRY_REQUIRE_APPROVAL": "champion, prod",
        "KEEL_TRACKING_METRIC_BATCH_SIZE": "50",
        "UNRELATED": "x",
    }
    config = load_config(tmp_path, environ=env)
    assert config.registry.require_approval == ["champion", "prod"]
    assert config.tracking.metric_batch_size == 50


def test_error_names_key_file_and_expected_form(tmp_path: Path) -> None:
    write(tmp_path, "metadata:\n  url: mysql://x\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    message = str(info.value)
    assert "keel.yaml" in message
    assert "metadata.url" in message
    assert "postgresql+psycopg://" in message
    assert "mysql://x" in message


def test_error_names_environment_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KEEL_TRACKING_METRIC_BATCH_SIZE"):
        load_config(tmp_path, environ={"KEEL_TRACKING_METRIC_BATCH_SIZE": "many"})


def test_unknown_key_is_refused_with_its_name(tmp_path: Path) -> None:
    write(tmp_path, "metadata:\n  uri: sqlite:///x.db\n")
    with pytest.raises(ConfigError, match=r"unknown key 'metadata\.uri'"):
        load_config(tmp_path, environ={})


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "metadata:\n  url: [unclosed\n")
    with pytest.raises(ConfigError, match=r"keel\.yaml line \d+: not valid YAML"):
        load_config(tmp_path, environ={})


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path, environ={})


def test_discover_walks_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init_project(tmp_path, name="up")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    monkeypatch.delenv("KEEL_PROJECT_DIR", raising=False)
    assert Project.discover(nested).root == tmp_path.resolve()
    monkeypatch.setenv("KEEL_PROJECT_DIR", str(nested))
    assert Project.discover().root == nested.resolve()


def test_relative_store_paths_resolve_against_root(tmp_path: Path) -> None:
    project = Project(tmp_path, environ={})
    assert project.metadata.url == f"sqlite:///{(tmp_path / '.keel/keel.db').resolve()}"
    assert project.artifacts.url == str((tmp_path / ".keel/artifacts").resolve())
