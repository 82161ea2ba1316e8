"""Concurrent registrations and alias moves from separate processes lose nothing.

8 processes (spawned: nothing inherited) each register 5 versions of one model and move its
'champion' alias to every version they register, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import itertools
import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import select

from keel.metadata.schema import model_versions
from keel.project import Project
from keel.registry import alias_history, get_model_version, list_versions

WORKERS = 8
EACH = 5


def predict(frame: object) -> list[int]:
    return [0] * len(frame)  # type: ignore[arg-type]


def _worker(root: str, metadata_url: str, worker: int) -> list[int]:
    """Runs in a fresh process: register EACH versions, moving 'champion' after each one."""
    from keel.registry import register_model_version, set_alias

    project = Project(root, overrides={"metadata.url": metadata_url}, environ={})
    numbers = []
    try:
        for i in range(EACH):
            mv = register_model_version(project, predict, "shared", flavor="pyfunc")
            set_alias(
                project,
                "shared",
                "champion",
                mv.version,
                reason=f"worker {worker} move {i}",
                author=f"worker-{worker}",
            )
            numbers.append(mv.version)
    finally:
        project.close()
    return numbers


@pytest.mark.slow
def test_concurrent_registrations_and_alias_moves(project: Project, project_dir: Path) -> None:
    url = project.config.metadata.url
    assert project.metadata.dialect  # connect and migrate here, not in 8 racing processes
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as pool:
        results = pool.starmap(_worker, [(str(project_dir), url, w) for w in range(WORKERS)])

    everyone = sorted(n for numbers in results for n in numbers)
    assert everyone == list(range(1, WORKERS * EACH + 1))  # no duplicates, no gaps
    for numbers in results:
        assert numbers == sorted(numbers)  # each process sees its own versions increase
    with project.metadata.read() as conn:
        stored = conn.execute(select(model_versions.c.version)).scalars().all()
    assert sorted(stored) == everyone
    assert [v.version for v in list_versions(project, "shared")] == everyone

    history = alias_history(project, "shared", "champion")
    assert len(history) == WORKERS * EACH  # every move recorded
    assert sorted(c.to_version for c in history if c.to_version is not None) == everyone
    assert history[0].from_version is None
    for previous, change in itertools.pairwise(history):
        assert change.from_version == previous.to_version  # a consistent chain
    reasons = {c.reason for c in history}
    assert reasons == {f"worker {w} move {i}" for w in range(WORKERS) for i in range(EACH)}
    assert get_model_version(project, "shared@champion").version == history[-1].to_version
