from __future__ import annotations

from pathlib import Path

import pytest

from keel.cli.main import main


def test_init_creates_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "p"), "--name", "fraud"]) == 0
    assert "project: fraud" in (tmp_path / "p" / "keel.yaml").read_text()
    assert "Created" in capsys.readouterr().out


def test_user_mistake_is_one_line_and_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["init", str(tmp_path)])
    capsys.readouterr()
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # one message (rich may wrap a long line)


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    from keel.errors import ConfigError

    main(["init", str(tmp_path)])
    with pytest.raises(ConfigError):
        main(["--debug", "init", str(tmp_path)])


def test_bad_config_is_reported_by_any_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keel.yaml").write_text("metadata:\n  url: mysql://nope\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_PROJECT_DIR", raising=False)
    assert main(["models", "list"]) == 2
    err = capsys.readouterr().err
    assert "metadata.url" in err
    assert "keel.yaml" in err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--bogus"]) == 2
    assert "--bogus" in capsys.readouterr().err
