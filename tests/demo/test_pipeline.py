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
    assert "no training-serving skew" in out
    assert "IDENTICAL" in out  # the champion was rebuilt bit for bit by `keel reproduce`
    # The data went through a remote: pushed, then pulled into a fresh clone, same bytes.
    words = " ".join(out.split())  # the console wraps long lines
    assert "Data shared: 4 object(s)" in words  # three tables and the folder's manifest
    assert "pulled 4 (keel data pull) and matched byte for byte, status clean" in words

    import keel
    import keel.data as keel_data

    project = Project(directory, environ={})
    champion = keel.get_model_version("fraud@champion", project=project)
    challenger = keel.get_model_version("fraud@challenger", project=project)
    assert champion.state == "approved"
    assert {champion.version, challenger.version} == {1, 2}
    runs = {r.id: r for r in keel.search_runs("experiment = 'fraud-demo'", project=project)}
    assert len(runs) == 3  # logreg, LightGBM, and the retrained candidate of the canary
    assert {r.params["model"] for r in runs.values()} == {"logreg", "lightgbm"}
    assert (
        runs[champion.run_id or ""].metrics["auc"] >= runs[challenger.run_id or ""].metrics["auc"]
    )
    assert all(r.status == "finished" for r in runs.values())
    assert all(r.tags["keel.trainer"] == "fraud" for r in runs.values())

    # Both were trained by `keel train` through the feature store: each lineage names the
    # committed code, the exact transactions file version, every feature view and the
    # training set.
    data_version = keel_data.resolve("data/transactions.parquet", project=project).sha256
    for version in (1, 2):
        trail = keel.lineage(f"fraud@{version}", project=project)
        assert trail.code is not None
        assert trail.code.commit  # the demo project is a git repo
        assert data_version in {d.ref for d in trail.datasets}
        views = sorted(v.ref.split("@")[0] for v in trail.feature_views)
        assert views == ["amount_ratio", "merchant_risk", "transaction_shape", "user_spending"]
        assert len(trail.training_sets) == 1
    assert (directory / "data.keel").is_file()
    users = keel.models_using(dataset=data_version, project=project)
    assert sorted(v.version for v in users) == [1, 2, 3]

    # Served through the model server: the challenger in shadow on every replayed request,
    # then a canary of fraud@3 decided by the controller (promoted, or rolled back with the
    # failing gate named when the machine is too loaded for the latency gate).
    from keel.deploy.history import history
    from keel.deploy.report import report

    events = history(project, "fraud")
    actions = [e.action for e in events]
    assert actions[:3] == ["deploy", "start_shadow", "start_canary"]
    assert events[2].reason is not None
    assert events[2].reason.endswith("(admin API)")  # the canary was started over HTTP
    assert actions[-1] in ("promote", "advance", "rollback")
    shadow = report(project, "fraud", strategy="shadow").shadow
    assert shadow is not None
    assert shadow.pairs == 300
    # The online store holds exactly the feature versions the champion was trained on.
    from keel.features.store import FeatureStore

    with FeatureStore(project) as store:
        store.load_model("fraud@champion")

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
