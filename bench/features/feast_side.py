"""Feast's side of the features benchmark; runs inside .bench/feast-venv
(bench/requirements-feast.txt).

Feast as its quickstart sets it up, one repository per online store: a feature_store.yaml with
the local provider, the DuckDB offline store (feast[duckdb]) and an SQLite file or Redis
(feast[redis]) online store, a file registry; the entity and the two feature views declared in
Python over the same Parquet files as Keel and registered with ``FeatureStore.apply``. Timed:
``get_historical_features(...).to_arrow()``, ``materialize(start, end)`` and
``get_online_features(...).to_dict()``.

    python bench/features/feast_side.py --data DIR --redis redis://127.0.0.1:6379/14 \
        [--phase training|materialize|online|startup ...] --out result.json
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dataset
from flow import Side, parse_args, run

from common import emit

_YAML = """\
project: {project}
registry: registry.db
provider: local
offline_store:
  type: duckdb
online_store:
{online}
entity_key_serialization_version: 3
"""


def _online_yaml(kind: str, folder: Path, redis_url: str) -> str:
    if kind == "sqlite":
        return f"  type: sqlite\n  path: {folder / 'online.db'}"
    split = urlsplit(redis_url)
    db = split.path.strip("/") or "0"
    return f'  type: redis\n  connection_string: "{split.hostname}:{split.port or 6379},db={db}"'


def _definitions(data: Path) -> list[Any]:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    activity = FeatureView(
        name=dataset.TRAIN_VIEW,
        entities=[user],
        ttl=dataset.TTL,
        schema=[Field(name=name, dtype=Float64) for name in dataset.TRAIN_FEATURES],
        source=FileSource(path=str(data / "activity.parquet"), timestamp_field="event_ts"),
    )
    profile = FeatureView(
        name=dataset.ONLINE_VIEW,
        entities=[user],
        ttl=timedelta(0),  # Feast's "no ttl"
        schema=[
            Field(name=name, dtype=Int64 if name in dataset.INT_FEATURES else Float64)
            for name in dataset.ONLINE_FEATURES
        ],
        source=FileSource(path=str(data / "profile.parquet"), timestamp_field="event_ts"),
    )
    return [user, activity, profile]


class FeastRepo:
    def __init__(self, kind: str, folder: Path, data: Path, redis_url: str) -> None:
        from feast import FeatureStore

        folder.mkdir(parents=True)
        self.kind = kind
        self.folder = folder
        self.redis_url = redis_url
        # a project name of its own, so that its Redis keys are told apart and deleted
        self.project = f"bench_{uuid.uuid4().hex[:10]}"
        online = _online_yaml(kind, folder, redis_url)
        text = _YAML.format(project=self.project, online=online)
        (folder / "feature_store.yaml").write_text(text, "utf-8")
        self.store = FeatureStore(repo_path=str(folder))
        self.store.apply(_definitions(data))
        self.train_refs = [f"{dataset.TRAIN_VIEW}:{name}" for name in dataset.TRAIN_FEATURES]
        self.online_refs = [f"{dataset.ONLINE_VIEW}:{name}" for name in dataset.ONLINE_FEATURES]

    def training_set(self, entity_df: Any) -> Any:
        job = self.store.get_historical_features(entity_df=entity_df, features=self.train_refs)
        return job.to_arrow()

    def materialize(self) -> None:
        self.store.materialize(
            start_date=dataset.MATERIALIZE_START,
            end_date=dataset.MATERIALIZE_END,
            feature_views=[dataset.ONLINE_VIEW],
        )

    def lookup(self, keys: list[int]) -> dict[str, list[Any]]:
        rows = [{"user_id": key} for key in keys]
        result: dict[str, list[Any]] = self.store.get_online_features(
            features=self.online_refs, entity_rows=rows
        ).to_dict()
        return result

    def online_file(self) -> Path | None:
        return self.folder / "online.db" if self.kind == "sqlite" else None

    def close(self) -> int:
        if self.kind != "redis":
            return 0
        self.store.teardown()  # deletes the project's keys (a SCAN over its suffix)
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            return sum(1 for _ in client.scan_iter(b"*" + self.project.encode()))
        finally:
            client.close()


def _startup_snippets(folder: Path) -> tuple[str, str]:
    return "import feast", f"import feast\nfeast.FeatureStore(repo_path={str(folder)!r})"


def main() -> None:
    args = parse_args()
    side = Side(
        name="feast",
        version=version("feast"),
        open_repo=FeastRepo,
        startup_snippets=_startup_snippets,
        notes={"offline_store": "duckdb", "pandas": version("pandas")},
    )
    emit(args.out, run(side, args))


if __name__ == "__main__":
    main()
