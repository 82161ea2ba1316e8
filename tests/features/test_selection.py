"""Feature selection: refs and services -> views to fetch, on-demand views to run, request
fields, hidden inputs and output order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import InvalidInputError
from keel.features.definitions import Aggregation, Entity, FeatureView, Field
from keel.features.ondemand import OnDemandFeatureView, RequestField, compute_online
from keel.features.repo import Definitions
from keel.features.selection import feature_dtypes, select_features, view_outputs
from keel.features.service import FeatureService
from keel.features.sources import ParquetSource

USER = Entity("user", join_keys={"user_id": "int64"})
SOURCE = ParquetSource("data/tx.parquet", event_timestamp="event_ts")
STATS = FeatureView(
    "user_stats",
    entity=USER,
    source=SOURCE,
    features=[Field("amount", "float64"), Field("country", "string")],
    aggregations=[Aggregation("amount", "sum", "7d"), Aggregation("amount", "count", "1d")],
    owner="risk",
)
MERCHANT = FeatureView(
    "merchant",
    entity=Entity("merchant", join_keys={"merchant_id": "string"}),
    source=SOURCE,
    features=[Field("risk", "int32")],
    owner="risk",
)


def share(columns: dict[str, Any]) -> dict[str, Any]:
    return {
        "share": columns["price"] / (columns["amount_sum_7d"] + 1.0),
        "foreign": columns["country"] != "FR",
    }


SHARE = OnDemandFeatureView(
    "share_view",
    inputs=["user_stats:amount_sum_7d", "user_stats:country"],
    request=[RequestField("price", "float64")],
    outputs=[Field("share", "float64"), Field("foreign", "bool")],
    function=share,
    owner="risk",
)
RISKY = OnDemandFeatureView(
    "risky",
    inputs=["merchant:risk"],
    request=[RequestField("price", "float64"), RequestField("channel", "string")],
    outputs=[Field("risky", "bool")],
    function=lambda c: {"risky": c["risk"] * c["price"] > 10},
    owner="risk",
)
SERVICE = FeatureService("fraud", features=["share_view:share", STATS], owner="risk")
DEFS = Definitions(Path("features.py"), (USER,), (STATS, MERCHANT), (SHARE, RISKY), (SERVICE,))


def test_refs_resolve_in_request_order_with_hidden_inputs() -> None:
    selection = select_features(DEFS, ["share_view:share", "user_stats:amount", "merchant"])
    assert selection.order == (
        ("share_view", "share"),
        ("user_stats", "amount"),
        ("merchant", "risk"),
    )
    assert selection.views == {
        "user_stats": ("amount", "amount_sum_7d", "country"),
        "merchant": ("risk",),
    }
    assert selection.hidden == {("user_stats", "amount_sum_7d"), ("user_stats", "country")}
    ((view, outputs),) = selection.on_demand
    assert (view.name, outputs) == ("share_view", ("share",))
    assert [f.name for f in selection.request_fields] == ["price"]


def test_requested_inputs_are_not_hidden_and_duplicates_collapse() -> None:
    refs = ["user_stats:country", "share_view", "user_stats:country", "share_view:share"]
    selection = select_features(DEFS, refs)
    assert selection.order == (
        ("user_stats", "country"),
        ("share_view", "share"),
        ("share_view", "foreign"),
    )
    assert selection.views == {"user_stats": ("country", "amount_sum_7d")}
    assert selection.hidden == {("user_stats", "amount_sum_7d")}


def test_on_demand_views_come_bound_to_their_input_dtypes() -> None:
    ((view, _),) = select_features(DEFS, ["share_view:foreign"]).on_demand
    assert view.input_dtypes == {
        "amount_sum_7d": "float64",
        "country": "string",
        "price": "float64",
    }
    # Bound: a NULL country arrives as None (not NaN), so `!= "FR"` holds as it does offline.
    row = compute_online(view, {"amount_sum_7d": None, "country": None, "price": 1.0})
    assert row == {"share": None, "foreign": True}
    assert SHARE.input_dtypes == {"price": "float64"}  # the definition itself is unchanged


def test_a_service_by_name_or_object() -> None:
    by_name = select_features(DEFS, service="fraud")
    assert by_name.order == (
        ("share_view", "share"),
        ("user_stats", "amount"),
        ("user_stats", "country"),
        ("user_stats", "amount_sum_7d"),
        ("user_stats", "amount_count_1d"),
    )
    assert by_name.hidden == frozenset()
    other = FeatureService("other", features=["risky"], owner="x")
    selection = select_features(DEFS, service=other)
    assert selection.views == {"merchant": ("risk",)}
    assert [(f.name, f.dtype) for f in selection.request_fields] == [
        ("price", "float64"),
        ("channel", "string"),
    ]


def test_request_fields_are_shared_between_on_demand_views() -> None:
    selection = select_features(DEFS, ["risky", "share_view"])
    assert [f.name for f in selection.request_fields] == ["price", "channel"]
    assert [v.name for v, _ in selection.on_demand] == ["risky", "share_view"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "pass exactly one of features="),
        ({"features": ["user_stats"], "service": "fraud"}, "pass exactly one"),
        ({"features": "user_stats"}, "features is 'user_stats'; pass a list"),
        ({"features": []}, "features is \\[\\]; pass a list"),
        (
            {"features": ["nope:x"]},
            "asks for 'nope:x', but there is no feature view 'nope'; the views are "
            "\\['merchant', 'risky', 'share_view', 'user_stats'\\]",
        ),
        (
            {"features": ["user_stats:amt"]},
            "has no feature 'amt'; it has \\['amount', 'country', 'amount_sum_7d', 'amount_c",
        ),
        (
            {"service": "nope"},
            "no feature service 'nope' in features.py; the services are \\['fraud",
        ),
        (
            {"service": FeatureService("s", features=["merchant:x"])},
            "feature service 's' asks for 'merchant:x'",
        ),
    ],
)
def test_unknown_names_list_what_exists(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        select_features(DEFS, **kwargs)


def test_on_demand_inputs_must_be_batch_features() -> None:
    on_odfv = OnDemandFeatureView(
        "nested", inputs=["share_view:share"], outputs=[Field("x", "float64")], function=share
    )
    missing = OnDemandFeatureView(
        "missing", inputs=["user_stats:nope"], outputs=[Field("x", "float64")], function=share
    )
    clash = OnDemandFeatureView(
        "clash",
        inputs=["merchant:risk"],
        request=[RequestField("price", "int64")],
        outputs=[Field("x", "float64")],
        function=share,
    )
    defs = Definitions(Path("f.py"), (), (STATS, MERCHANT), (SHARE, on_odfv, missing, clash))
    with pytest.raises(InvalidInputError, match="'share_view' is not a batch feature view"):
        select_features(defs, ["nested"])
    with pytest.raises(InvalidInputError, match="'user_stats' has no feature 'nope'"):
        select_features(defs, ["missing"])
    with pytest.raises(
        InvalidInputError, match=r"'price' is 'float64' in one .* 'int64' in 'clash'"
    ):
        select_features(defs, ["share_view", "clash"])


def test_feature_dtypes_follow_the_offline_engine() -> None:
    view = FeatureView(
        "v",
        entity=USER,
        source=SOURCE,
        features=[Field("n", "int32"), Field("name", "string")],
        aggregations=[
            Aggregation("n", "sum", "1d"),
            Aggregation("n", "max", "1d"),
            Aggregation("name", "last", "1d"),
            Aggregation("n", "mean", "1d"),
            Aggregation("x", "count", "1d"),
            Aggregation("x", "min", "1d"),
            Aggregation("y", "sum", "1d"),
        ],
        owner="o",
    )
    assert feature_dtypes(view) == {
        "n": "int32",
        "name": "string",
        "n_sum_1d": "int64",
        "n_max_1d": "int32",
        "name_last_1d": "string",
        "n_mean_1d": "float64",
        "x_count_1d": "int64",
    }
    schema = pa.schema([("x", pa.timestamp("us", "UTC")), ("y", pa.float32())])
    assert feature_dtypes(view, schema) == {
        **feature_dtypes(view),
        "x_min_1d": "timestamp",
        "y_sum_1d": "float64",
    }
    assert view_outputs(SHARE) == ("share", "foreign")


REFS = st.sampled_from(
    [
        *("user_stats", "user_stats:amount", "user_stats:country", "user_stats:amount_sum_7d"),
        *("merchant:risk", "share_view", "share_view:foreign", "risky"),
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(REFS, min_size=1, max_size=8))
def test_selection_invariants(refs: list[str]) -> None:
    selection = select_features(DEFS, refs)
    expanded = [
        (view, name)
        for ref in refs
        for view, _, feature in [ref.partition(":")]
        for name in ([feature] if feature else view_outputs(DEFS_BY_NAME[view]))
    ]
    assert selection.order == tuple(dict.fromkeys(expanded))
    running = {view.name: outputs for view, outputs in selection.on_demand}
    for view, name in selection.order:
        if view in running:
            assert name in running[view]
        else:
            assert name in selection.views[view]
            assert (view, name) not in selection.hidden
    for view, name in selection.hidden:
        assert name in selection.views[view]
        assert any(f"{view}:{name}" in DEFS_BY_NAME[v].inputs for v in running)  # type: ignore[union-attr]
    fetched = [(v, n) for v, names in selection.views.items() for n in names]
    assert len(fetched) == len(set(fetched))


DEFS_BY_NAME: dict[str, FeatureView | OnDemandFeatureView] = {
    v.name: v for v in (*DEFS.views, *DEFS.on_demand)
}
