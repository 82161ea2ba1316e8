"""The demo end to end, small: it must leave a champion with full lineage behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.cli.main import main
from keel.errors import InvalidInputError
from keel.project import Project


@pytest.mark.slow
def test_demo_trains_registers_and_promotes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "demo"
    assert main(["demo", "--dir", str(directory), "--rows", "40000", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "fraud@" in out
    assert "champion" in out

    import keel
    import keel.data as keel_data

    project = Project(directory, environ={})
    champion = keel.get_model_version("fraud@champion", project=project)
    challenger = keel.get_model_version("fraud@challenger", project=project)
    assert champion.state == "approved"
    assert {champion.version, challenger.version} == {1, 2}
    runs = {r.id: r for r in keel.search_runs("experiment = 'fraud-demo'", project=project)}
    assert (
        runs[champion.run_id or ""].metrics["auc"] >= runs[challenger.run_id or ""].metrics["auc"]
    )
    assert all(r.status == "finished" for r in runs.values())

    trail = keel.lineage("fraud@champion", project=project)
    assert trail.code is not None
    assert trail.code.commit  # the demo project is a git repo
    assert len(trail.datasets) == 1
    dataset = trail.datasets[0].ref
    # The run recorded exactly the version `keel data add` gave the data folder.
    assert dataset == keel_data.resolve("data", project=project).sha256
    assert (directory / "data.keel").is_file()
    users = keel.models_using(dataset=dataset, project=project)
    assert sorted(v.version for v in users) == [1, 2]

    # The champion predicts from the registry exactly like the run's evaluation did.
    model = keel.load_model("fraud@champion", project=project)
    import pandas as pd

    frame = pd.DataFrame({c["name"]: [0] for c in (champion.signature or {})["inputs"]["columns"]})
    assert model.predict_proba(frame).shape == (1, 2)
    project.close()


def test_demo_refuses_a_foreign_folder(tmp_path: Path) -> None:
    from keel.demo.pipeline import prepare_directory

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="not made by `keel demo`"):
        prepare_directory(tmp_path)
    assert (tmp_path / "precious.txt").exists()
