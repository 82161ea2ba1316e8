"""Keel's side of the features benchmark; runs inside the project's .venv.

Keel as a user runs it, one project per online store: ``init_project``, a ``features.py``
declaring the entity and the two feature views over the same Parquet files as Feast, registered
with ``apply_definitions`` (what ``keel features apply`` does); the default SQLite online store
(``.keel/online.db``) or Redis picked with ``KEEL_FEATURES_ONLINE_STORE``. Timed, through the
``FeatureStore`` facade: ``get_training_set(...).table``, ``materialize(start, end)`` and
``get_online_features(...).to_dict()``.

    python bench/features/keel_side.py --data DIR --redis redis://127.0.0.1:6379/15 \
        [--phase training|materialize|online|startup ...] --out result.json
"""

from __future__ import annotations

import os
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dataset
from flow import Side, parse_args, run

from common import emit

ENV = "KEEL_FEATURES_ONLINE_STORE"

_FEATURES_PY = """\
from datetime import timedelta

from keel.features.definitions import Entity, FeatureView, Field
from keel.features.sources import ParquetSource

user = Entity("user", join_keys={{"user_id": "int64"}})
{train_view} = FeatureView(
    "{train_view}",
    entity=user,
    source=ParquetSource({activity!r}, event_timestamp="event_ts"),
    features=[Field(name, "float64") for name in {train_features!r}],
    ttl=timedelta(days={ttl_days}),
    owner="bench",
)
{online_view} = FeatureView(
    "{online_view}",
    entity=user,
    source=ParquetSource({profile!r}, event_timestamp="event_ts"),
    features=[Field(name, "int64" if name in {int_features!r} else "float64")
              for name in {online_features!r}],
    owner="bench",
)
"""


def _features_py(data: Path) -> str:
    return _FEATURES_PY.format(
        train_view=dataset.TRAIN_VIEW,
        online_view=dataset.ONLINE_VIEW,
        activity=str(data / "activity.parquet"),
        profile=str(data / "profile.parquet"),
        train_features=dataset.TRAIN_FEATURES,
        online_features=dataset.ONLINE_FEATURES,
        int_features=sorted(dataset.INT_FEATURES),
        ttl_days=dataset.TTL.days,
    )


class KeelRepo:
    def __init__(self, kind: str, folder: Path, data: Path, redis_url: str) -> None:
        from keel.project import Project, init_project

        feature_store, apply_definitions = _facade()

        folder.mkdir(parents=True)
        self.kind = kind
        init_project(folder)
        root = folder
        (root / "features.py").write_text(_features_py(data), "utf-8")
        self.redis_url = redis_url
        # a key prefix of its own, so that its Redis keys are told apart and deleted
        self.prefix = f"bench-{uuid.uuid4().hex[:10]}"
        if kind == "redis":
            os.environ[ENV] = f"{redis_url}?prefix={self.prefix}"
        else:
            os.environ.pop(ENV, None)  # the default: sqlite:///.keel/online.db
        self.root = root
        self.project = Project.discover(root)
        apply_definitions(self.project)
        self.store = feature_store(self.project)
        self.train_refs = [f"{dataset.TRAIN_VIEW}:{name}" for name in dataset.TRAIN_FEATURES]
        self.online_refs = [f"{dataset.ONLINE_VIEW}:{name}" for name in dataset.ONLINE_FEATURES]

    def training_set(self, entity_df: Any) -> Any:
        training = self.store.get_training_set(
            entity_df, features=self.train_refs, timestamp_column="ts"
        )
        return training.table

    def materialize(self) -> None:
        self.store.materialize(
            start=dataset.MATERIALIZE_START,
            end=dataset.MATERIALIZE_END,
            views=[dataset.ONLINE_VIEW],
        )

    def lookup(self, keys: list[int]) -> dict[str, list[Any]]:
        rows = [{"user_id": key} for key in keys]
        result: dict[str, list[Any]] = self.store.get_online_features(
            features=self.online_refs, entity_rows=rows
        ).to_dict()
        return result

    def online_file(self) -> Path | None:
        return self.root / ".keel" / "online.db" if self.kind == "sqlite" else None

    def close(self) -> int:
        self.store.close()
        if self.kind != "redis":
            return 0
        from keel.features.online import open_online_store

        online = open_online_store(os.environ[ENV])
        try:
            for view in (dataset.TRAIN_VIEW, dataset.ONLINE_VIEW):
                online.delete_view(view)
        finally:
            online.close()
        return _sweep(self.redis_url, self.prefix)


def _facade() -> tuple[Any, Any]:
    """``keel.features.FeatureStore`` and ``apply_definitions``; from their modules until the
    package re-exports them (the same objects)."""
    try:
        from keel.features import FeatureStore, apply_definitions
    except ImportError:
        from keel.features.registry import apply_definitions
        from keel.features.store import FeatureStore
    return FeatureStore, apply_definitions


def _sweep(redis_url: str, prefix: str) -> int:
    """Delete whatever is left under ``prefix`` (the store's catalog hashes); returns the keys
    still there afterwards (0 unless something else writes under the prefix)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        pattern = f"{prefix}:*"
        for key in client.scan_iter(pattern):
            client.delete(key)
        return sum(1 for _ in client.scan_iter(pattern))
    finally:
        client.close()


def _startup_snippets(folder: Path) -> tuple[str, str]:
    os.environ.pop(ENV, None)
    construct = (
        "import keel\nfrom keel.features.store import FeatureStore\n"
        "from keel.project import Project\n"
        f"FeatureStore(Project.discover({str(folder)!r}))"
    )
    return "import keel", construct


def main() -> None:
    args = parse_args()
    side = Side(
        name="keel",
        version=version("keel"),
        open_repo=KeelRepo,
        startup_snippets=_startup_snippets,
        notes={"online_store_default": "sqlite:///.keel/online.db", "pandas": version("pandas")},
    )
    emit(args.out, run(side, args))


if __name__ == "__main__":
    main()
