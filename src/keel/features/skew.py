"""Training-serving skew: logged served vectors recomputed through the offline path.

`check_skew` takes the vectors online lookups logged (see `keel.features.served_log`), builds a
training set from them — the logged entity fields as the entity frame, the request time as its
timestamp, the logged features — and compares each value with the one served: NULL equals NULL,
NaN equals NaN, floats agree within ``rel_tol``, anything else must be equal. The offline value
is the point-in-time join's "as known at the request time", so a served value that came from
a row ingested before the request, materialized or pushed, equals it; a difference means the two
paths compute the feature differently (a transformation, a time zone, a default, a type).

Some differences are legitimate and show up too; each example row says when and what was
served, with the version of the value, to tell them apart:

- **Late data.** A row with an event time before the request but ingested after it is in the
  offline result when the source has no created (ingestion) timestamp, yet it was not served.
  Declaring ``created_timestamp`` on the source makes the offline path ignore it, as serving did.
- **Materialization lag.** A row ingested before the request but not yet materialized was not
  served (the previous value or the default was); the check reports that staleness as skew.
- **Changed definitions.** The offline path uses today's definitions; values served under an
  older version (see the example's ``version``) differ when the change changed values. Check a
  range after the change (``since=``).
- **Rewritten history.** Source files replaced or deleted after the request, and requests made
  with an explicit past ``request_time`` (the online store holds only the newest row, so it
  serves the default where the offline join finds an older value).

    report = check_skew(store, since=datetime(2026, 3, 1, tzinfo=UTC))
    report.ok, [(f.feature, f.mismatches, f.rate) for f in report.features]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError
from keel.features.served_log import REQUEST_TIME, RESERVED, SERVED, VERSIONS, epoch_us

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.features.store import FeatureStore


@dataclass(frozen=True)
class SkewExample:
    """A row where the served and the recomputed value of a feature differ."""

    entity: dict[str, Any]
    request_time: datetime
    served: Any
    offline: Any
    version: str | None  # the view version the served value was written under (None: default)


@dataclass(frozen=True)
class FeatureSkew:
    """One feature: how many logged rows served it and how many of them differ offline."""

    feature: str  # the served column
    view: str  # the view (or on-demand view) that gives it
    rows: int
    mismatches: int
    examples: tuple[SkewExample, ...] = ()

    @property
    def rate(self) -> float:
        return self.mismatches / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class SkewReport:
    """What `check_skew` found over ``rows`` logged rows (those serving a checked feature),
    feature by feature.

    >>> report = check_skew(store)  # doctest: +SKIP
    >>> report.ok, report.features[0].rate  # doctest: +SKIP
    (True, 0.0)
    """

    rows: int
    features: tuple[FeatureSkew, ...]

    @property
    def ok(self) -> bool:
        return not any(f.mismatches for f in self.features)

    @property
    def max_rate(self) -> float:
        return max((f.rate for f in self.features), default=0.0)


def check_skew(
    store: FeatureStore,
    served: pa.Table | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    features: Sequence[str] | None = None,
    rel_tol: float = 1e-9,
    examples: int = 5,
) -> SkewReport:
    """Recompute logged served vectors offline and count the values that differ.

    ``served`` defaults to the project's served-feature log read over ``[since, until)``
    (`read_served`); a table given instead is filtered to that range. It has the columns
    `read_served` gives; without a ``served`` column, name the features as ``"view:feature"``
    refs in ``features``. ``features`` (names or refs) limits the check to those features.
    ``examples`` rows per feature are kept.

    >>> check_skew(store, features=["spend"]).features[0].mismatches  # doctest: +SKIP
    0
    """
    import pyarrow as pa

    from keel.features.served_log import read_served

    if rel_tol < 0 or examples < 0:
        raise InvalidInputError(f"rel_tol={rel_tol} and examples={examples} must be >= 0")
    if served is None:
        served = read_served(store.project, since, until)
    else:
        served = _in_range(served, since, until)
    refs_per_row = _refs_per_row(served, features)
    wanted = _wanted(features, refs_per_row)
    feature_columns = {ref.partition(":")[2] for refs in refs_per_row for ref in refs}
    entity = [
        name for name in served.column_names if name not in RESERVED and name not in feature_columns
    ]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, refs in enumerate(refs_per_row):
        chosen = tuple(r for r in refs if wanted is None or r in wanted)
        if chosen:
            groups.setdefault(chosen, []).append(i)
    counts: dict[str, list[Any]] = {}  # ref -> [rows, mismatches, examples]
    for refs, indices in groups.items():
        rows = served.take(pa.array(indices, pa.int64()))
        offline = _recompute(store, rows, entity, refs)
        for ref in refs:
            name = ref.partition(":")[2]
            tally = counts.setdefault(ref, [0, 0, []])
            tally[0] += rows.num_rows
            got, want = rows.column(name).to_pylist(), offline.column(name).to_pylist()
            for i, (a, b) in enumerate(zip(got, want, strict=True)):
                if same_value(a, b, rel_tol):
                    continue
                tally[1] += 1
                if len(tally[2]) < examples:
                    tally[2].append(_example(rows, i, entity, ref, a, b))
    return SkewReport(
        sum(len(indices) for indices in groups.values()),
        tuple(
            FeatureSkew(ref.partition(":")[2], ref.partition(":")[0], n, bad, tuple(found))
            for ref, (n, bad, found) in sorted(counts.items())
        ),
    )


def same_value(a: Any, b: Any, rel_tol: float = 0.0) -> bool:
    """The comparison `check_skew` uses: NULL == NULL, NaN == NaN, numbers (not booleans)
    within ``rel_tol``, other values equal.

    >>> same_value(0.1 + 0.2, 0.3, 1e-9), same_value(float("nan"), float("nan"))
    (True, True)
    """
    if a is None or b is None:
        return a is None and b is None
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        if isinstance(a, bool) != isinstance(b, bool):
            return False
        if isinstance(a, float) or isinstance(b, float):
            x, y = float(a), float(b)
            if math.isnan(x) or math.isnan(y):
                return math.isnan(x) and math.isnan(y)
            return x == y or math.isclose(x, y, rel_tol=rel_tol, abs_tol=0.0)
    return bool(a == b)


def _in_range(table: pa.Table, since: datetime | None, until: datetime | None) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    if REQUEST_TIME not in table.column_names:
        raise InvalidInputError(
            f"the served table has no {REQUEST_TIME!r} column (it has {table.column_names}); "
            "pass a table read_served gives, or add the request times as timestamps"
        )

    def micros() -> pa.ChunkedArray:
        return table[REQUEST_TIME].cast(pa.timestamp("us", "UTC")).cast(pa.int64())

    if since is not None:
        table = table.filter(pc.greater_equal(micros(), epoch_us(since, "since")))
    if until is not None:
        table = table.filter(pc.less(micros(), epoch_us(until, "until")))
    return table


def _refs_per_row(served: pa.Table, features: Sequence[str] | None) -> list[tuple[str, ...]]:
    if SERVED in served.column_names:
        return [tuple(refs or ()) for refs in served.column(SERVED).to_pylist()]
    refs = tuple(features or ())
    if not refs or any(":" not in ref for ref in refs):
        raise InvalidInputError(
            f"the served table has no {SERVED!r} column saying which features each row served; "
            "pass features=['view:feature', ...] naming its feature columns"
        )
    missing = [ref for ref in refs if ref.partition(":")[2] not in served.column_names]
    if missing:
        raise InvalidInputError(f"the served table has no column for {missing}")
    return [refs] * served.num_rows


def _wanted(features: Sequence[str] | None, refs_per_row: list[tuple[str, ...]]) -> set[str] | None:
    if features is None:
        return None
    logged = {ref for refs in refs_per_row for ref in refs}
    wanted = set()
    for name in features:
        found = {ref for ref in logged if name in (ref, ref.partition(":")[2])}
        if not found:
            raise InvalidInputError(
                f"feature {name!r} was not served in the checked range; logged features are "
                f"{sorted(logged)}"
            )
        wanted |= found
    return wanted


def _recompute(
    store: FeatureStore, rows: pa.Table, entity: list[str], refs: tuple[str, ...]
) -> pa.Table:
    from keel.features.training_build import build_training_set

    # Entity fields another call logged are null here; a null-typed column would only
    # confuse the join, so each group passes the fields its own rows carry.
    columns = [name for name in entity if rows.column(name).null_count < rows.num_rows] + [
        REQUEST_TIME
    ]
    # build_training_set, not get_training_set: a check run inside a tracked run must not
    # record the logged requests as that run's training inputs.
    training = build_training_set(
        store,
        rows.select(columns),
        store.select(list(refs)),
        timestamp_column=REQUEST_TIME,
        entity_keys={},
        as_known_at=True,
        full_feature_names=False,
    )
    return training.table


def _example(
    rows: pa.Table, i: int, entity: list[str], ref: str, served: Any, offline: Any
) -> SkewExample:
    view = ref.partition(":")[0]
    keys = {name: rows.column(name)[i].as_py() for name in entity}
    versions = dict(rows.column(VERSIONS)[i].as_py() or []) if VERSIONS in rows.column_names else {}
    return SkewExample(
        {k: v for k, v in keys.items() if v is not None},
        rows.column(REQUEST_TIME)[i].as_py(),
        served,
        offline,
        versions.get(view),
    )
