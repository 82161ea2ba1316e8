"""The contract every offline engine implements (DuckDB now, Spark next)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.features.offline.spec import JoinRequest


class OfflineEngine(Protocol):
    """Builds point-in-time-correct training sets.

    ``get_training_set`` must return the entity frame's columns unchanged followed by every
    requested feature, with exactly one row per entity row in input order, following the
    semantics in `keel.features.offline.spec`; every engine gives identical tables for the
    same request. Bad input raises `keel.errors.InvalidInputError` before any join runs.
    """

    def get_training_set(self, request: JoinRequest) -> pa.Table: ...
