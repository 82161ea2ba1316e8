"""Training sets through the feature store: the point-in-time join of the selected features,
on-demand features computed by the same function serving uses, and the fingerprint that names
the result in a model's lineage.

When a run is active (``keel.start_run``) the training set is recorded as the run's inputs:
``training_set`` (the fingerprint), ``feature_view`` (``view@version`` for each view used) and
``dataset`` (each Keel dataset version a view read), so `keel lineage` walks from a model to the
exact feature definitions and data it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from keel.features.offline.spec import JoinRequest
    from keel.tracking.run import Run


@dataclass(frozen=True)
class TrainingSet:
    """A training set: ``table`` (the entity frame's columns, then the features, one row per
    entity row in input order), its ``fingerprint``, and the versions it was built from.

    >>> training = store.get_training_set(entities, service="fraud")  # doctest: +SKIP
    >>> X = training.to_pandas()                                        # doctest: +SKIP
    """

    table: pa.Table
    fingerprint: str
    feature_versions: Mapping[str, str]  # view (or on-demand view) -> version
    dataset_versions: Mapping[str, str] = field(default_factory=dict)  # dataset path -> sha256
    features: tuple[str, ...] = ()  # the feature columns, in request order

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)

    def to_pandas(self) -> pd.DataFrame:
        frame: pd.DataFrame = self.table.to_pandas()
        return frame

    def log_to(self, run: Run) -> None:
        """Record this training set, its feature versions and datasets as ``run``'s inputs."""
        details: dict[str, Any] = {
            "rows": self.num_rows,
            "features": list(self.features),
            "feature_versions": dict(self.feature_versions),
            "dataset_versions": dict(self.dataset_versions),
        }
        run.log_input("training_set", self.fingerprint, details=details)
        for view, version in sorted(self.feature_versions.items()):
            run.log_input("feature_view", f"{view}@{version}", name=view)
        for path, sha in sorted(self.dataset_versions.items()):
            run.log_input("dataset", sha, name=path)


def fingerprint_of(
    request: JoinRequest, feature_versions: Mapping[str, str], datasets: Mapping[str, str]
) -> str:
    from keel.features.offline.fingerprint import fingerprint

    return fingerprint(request, feature_versions, datasets)
