"""Feature definitions and their versions: shape checks, windows, stable hashing."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.errors import InvalidInputError
from keel.features.definitions import Aggregation, Entity, FeatureView, Field, parse_window
from keel.features.sources import DatasetSource, ParquetSource
from keel.features.versioning import canonical_definition, view_version

USER = Entity("user", join_keys={"user_id": "int64"})
SOURCE = ParquetSource("data/tx.parquet", event_timestamp="event_ts")


def make_view(**changes: object) -> FeatureView:
    args: dict[str, object] = {
        "entity": USER,
        "source": SOURCE,
        "features": [Field("amount", "float64", default=0.0)],
        "aggregations": [Aggregation("amount", "sum", "7d")],
        "ttl": "30d",
        "owner": "risk",
        "tags": {"team": "risk"},
    }
    args.update(changes)
    return FeatureView("user_stats", **args)  # type: ignore[arg-type]


def test_windows_parse_and_name_aggregations() -> None:
    assert parse_window("1h") == timedelta(hours=1)
    assert parse_window("30d") == timedelta(days=30)
    assert parse_window(timedelta(minutes=5)) == timedelta(minutes=5)
    assert Aggregation("amount", "count", "1d").output_name == "amount_count_1d"
    assert Aggregation("amount", "mean", timedelta(hours=2)).output_name == "amount_mean_2h"
    assert Aggregation("amount", "max", "7d", name="top").output_name == "top"
    assert make_view().ttl_delta == timedelta(days=30)


@pytest.mark.parametrize("bad", ["7", "-1d", "1y", timedelta(0), 5])
def test_bad_windows_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="positive timedelta or a string"):
        Aggregation("amount", "sum", bad)  # type: ignore[arg-type]


def test_shape_errors_name_the_problem() -> None:
    with pytest.raises(InvalidInputError, match="entity 'user' has no join keys"):
        Entity("user", join_keys={})
    with pytest.raises(InvalidInputError, match="join key 'user_id' of entity 'user' has dtype"):
        Entity("user", join_keys={"user_id": "long"})
    with pytest.raises(InvalidInputError, match="field 'amount' has dtype 'double'"):
        Field("amount", "double")
    with pytest.raises(InvalidInputError, match="uses function 'median'"):
        Aggregation("amount", "median", "1d")
    with pytest.raises(InvalidInputError, match="'user_stats' has no features or aggregations"):
        make_view(features=[], aggregations=[])
    with pytest.raises(InvalidInputError, match="declares feature 'amount' twice"):
        make_view(features=[Field("amount", "float64")] * 2)
    with pytest.raises(InvalidInputError, match="not a project path"):
        DatasetSource("s3://bucket/tx.parquet", event_timestamp="ts")


def test_version_is_stable_and_sensitive() -> None:
    base = view_version(make_view())
    assert base == view_version(make_view())
    assert len(base) == 64
    changed = [
        make_view(ttl="29d"),
        make_view(features=[Field("amount", "float64", default=1.0)]),
        make_view(aggregations=[Aggregation("amount", "sum", "1d")]),
        make_view(source=ParquetSource("data/tx.parquet", "event_ts", time_zone="UTC")),
        make_view(entity=Entity("user", join_keys={"user_id": "string"})),
    ]
    versions = {view_version(v) for v in changed}
    assert base not in versions
    assert len(versions) == len(changed)


def test_transformation_source_is_part_of_the_version() -> None:
    def double(x: int) -> int:
        return x * 2

    def triple(x: int) -> int:
        return x * 3

    view = make_view()
    assert view_version(view, [double]) != view_version(view, [triple])
    assert view_version(view, [double]) != view_version(view)
    with pytest.raises(InvalidInputError, match="cannot be read"):
        view_version(view, [len])


def test_version_is_the_same_in_a_fresh_process(tmp_path: Path) -> None:
    script = (
        "from tests.features.test_definitions import make_view\n"
        "from keel.features.versioning import view_version\n"
        "print(view_version(make_view()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert out.stdout.strip() == view_version(make_view())


def test_non_json_defaults_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="not plain JSON"):
        canonical_definition(make_view(features=[Field("amount", "float64", default=object())]))


@given(
    st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=4),
)
def test_tag_order_does_not_change_the_version(tags: dict[str, str]) -> None:
    reversed_tags = dict(reversed(list(tags.items())))
    assert view_version(make_view(tags=tags)) == view_version(make_view(tags=reversed_tags))
