"""The parity check of an on-demand feature view and the synthetic rows it runs on.

`check_parity` runs a view vectorized (offline) and row by row (online) over the same rows and
reports where the two disagree; `synthetic_table` builds seeded random rows with NULLs for a
view's input dtypes, so `keel features apply` can check a view before any data exists. Kept
apart from `keel.features.ondemand`, which re-exports these names.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.features.ondemand import OnDemandFeatureView


@dataclass(frozen=True)
class ParityMismatch:
    """One output of one row where the two paths disagree (``row`` indexes the input table)."""

    row: int
    output: str
    offline: Any
    online: Any
    inputs: dict[str, Any]


@dataclass(frozen=True)
class ParityReport:
    """What `check_parity` found: ``mismatches`` counts rows per output, ``examples`` holds
    up to three rows per output."""

    view: str
    rows: int
    mismatches: dict[str, int]
    examples: tuple[ParityMismatch, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(self.mismatches.values())

    def describe(self) -> str:
        if self.ok:
            return f"on-demand feature view {self.view!r}: both paths agree on {self.rows} rows"
        first = self.examples[0]
        counts = ", ".join(f"{n}: {c}" for n, c in self.mismatches.items() if c)
        return (
            f"on-demand feature view {self.view!r} gives other values online (one row at a "
            f"time) than offline (vectorized) ({counts} of {self.rows} rows); first: row "
            f"{first.row}, {first.output!r} offline {first.offline!r} vs online "
            f"{first.online!r} for inputs {first.inputs}"
        )


def check_parity(
    view: OnDemandFeatureView,
    table: pa.Table,
    *,
    rows: int | None = 1000,
    rel_tol: float = 0.0,
    seed: int = 0,
) -> ParityReport:
    """Run ``view`` vectorized and row by row over ``table`` (a seeded sample of ``rows`` rows
    when it has more; None: all) and compare each output: equal values, NULL == NULL, floats
    within ``rel_tol`` (0: exactly equal).

    >>> check_parity(ratio, training_set).ok  # doctest: +SKIP
    True
    """
    # Imported here: keel.features.ondemand re-exports this module's names at its top.
    from keel.features.ondemand import compute_offline, compute_online

    indices = list(range(table.num_rows))
    if rows is not None and table.num_rows > rows:
        indices = sorted(random.Random(seed).sample(indices, rows))
        table = table.take(indices)
    table = table.select([c for c in view.columns if c in table.column_names])
    offline = compute_offline(view, table).to_pydict()
    mismatches = dict.fromkeys(view.output_names, 0)
    examples: list[ParityMismatch] = []
    for position, values in enumerate(table.to_pylist()):
        online = compute_online(view, values)
        for name in view.output_names:
            want, got = offline[name][position], online[name]
            if _same(want, got, rel_tol):
                continue
            mismatches[name] += 1
            if mismatches[name] <= 3:
                examples.append(ParityMismatch(indices[position], name, want, got, values))
    return ParityReport(view.name, len(indices), mismatches, tuple(examples))


def _same(a: Any, b: Any, rel_tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or (rel_tol > 0 and math.isclose(a, b, rel_tol=rel_tol))
    return type(a) is type(b) and a == b


def synthetic_table(dtypes: Mapping[str, str], rows: int = 64, *, seed: int = 0) -> pa.Table:
    """``rows`` seeded random rows for the columns ``dtypes`` (name -> dtype), with NULLs: row
    0 is all NULL, row 1 has none, others are NULL with probability 1/6 per value.

    >>> synthetic_table({"amount": "float64", "country": "string"}).num_rows
    64
    """
    import pyarrow as pa

    from keel.features.offline.frames import arrow_type

    rng = np.random.default_rng(seed)
    columns = {}
    for name, dtype in dtypes.items():
        mask = rng.random(rows) < 1 / 6
        mask[:2] = (True, False)
        values = _random_values(rng, dtype, rows)
        columns[name] = pa.array(values, type=arrow_type(dtype), mask=mask)
    return pa.table(columns)


def _random_values(rng: np.random.Generator, dtype: str, rows: int) -> Any:
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), rows, dtype=dtype)
    if dtype.startswith("float"):
        return (rng.standard_normal(rows) * 100).astype(dtype)
    if dtype == "bool":
        return rng.random(rows) < 0.5
    if dtype in ("string", "binary"):
        words = ["", "a", "keel", "Zürich", "x y", "42", "NULL"]
        text = [words[i] for i in rng.integers(0, len(words), rows)]
        return text if dtype == "string" else [t.encode() for t in text]
    days = rng.integers(0, 20_000, rows)  # from 1970 to 2024
    if dtype == "date":
        return days.astype("datetime64[D]")
    return (days * 86_400_000_000 + rng.integers(0, 86_400_000_000, rows)).astype("datetime64[us]")
