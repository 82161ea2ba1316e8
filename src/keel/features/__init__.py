"""The feature store: declarative feature views, point-in-time-correct training sets and online
serving from one definition, so training and serving compute features the same way.

Backends live below: ``keel.features.offline`` (engines that build training sets: DuckDB, later
Spark) and ``keel.features.online`` (stores that serve the latest values: SQLite, Redis).
Importing this package imports nothing heavy.
"""

from __future__ import annotations
