"""The training-set fingerprint: the same inputs give the same hash, any change a new one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.features.offline import FeatureInput, JoinRequest, ViewInput, fingerprint, table_hash

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SOURCE = pd.DataFrame({"user_id": [1], "event_ts": [T0], "x": [1.0]})
VIEW = ViewInput(
    "v", ("user_id",), "data/v/*.parquet", "event_ts", features=(FeatureInput("x", "float64"),)
)


def frame(n: int = 1000) -> pd.DataFrame:
    return pd.DataFrame(
        {"user_id": range(n), "ts": [T0 + timedelta(seconds=i) for i in range(n)], "y": 0.5}
    )


def fp(entities: object, **options: object) -> str:
    versions = options.pop("versions", {"v": "1"})
    datasets = options.pop("datasets", {"data/v": "abc"})
    request = JoinRequest(entities, (VIEW,), timestamp_column="ts", **options)  # type: ignore[arg-type]
    return fingerprint(request, versions, datasets)  # type: ignore[arg-type]


def test_same_content_same_fingerprint_whatever_the_form_or_chunking() -> None:
    table = pa.Table.from_pandas(frame(), preserve_index=False)
    chunked = pa.concat_tables([table.slice(0, 10), table.slice(10)])
    indexed = frame().set_index(pd.RangeIndex(5, 1005))
    assert fp(frame()) == fp(table) == fp(chunked) == fp(indexed)
    assert len(fp(frame())) == 64


def test_a_change_anywhere_changes_the_fingerprint() -> None:
    base = fp(frame())
    changed = frame()
    changed.loc[999, "y"] = 0.25  # the last row: every row is hashed, not a sample
    others = {
        fp(changed),
        fp(frame(999)),
        fp(frame(), versions={"v": "2"}),
        fp(frame(), datasets={"data/v": "abd"}),
        fp(frame(), as_known_at=False),
        fp(frame(), full_feature_names=True),
    }
    assert base not in others
    assert len(others) == 6


def test_in_memory_sources_are_part_of_the_fingerprint() -> None:
    def with_source(source: pd.DataFrame) -> str:
        view = ViewInput("v", ("user_id",), source, "event_ts", features=VIEW.features)
        return fingerprint(JoinRequest(frame(), (view,), timestamp_column="ts"), {}, {})

    assert with_source(SOURCE) == with_source(SOURCE.copy())
    assert with_source(SOURCE) != with_source(SOURCE.assign(x=2.0))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=30), st.integers(1, 7))
def test_table_hash_ignores_chunking(values: list[int | None], size: int) -> None:
    table = pa.table({"a": pa.array(values, pa.int64())})
    pieces = [table.slice(i, size) for i in range(0, len(values), size)] or [table]
    assert table_hash(pa.concat_tables(pieces)) == table_hash(table)
