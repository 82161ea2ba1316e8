"""Feature services: refs, shape checks and versions."""

from __future__ import annotations

from typing import Any

import pytest

from keel.errors import InvalidInputError
from keel.features.definitions import Entity, FeatureView, Field
from keel.features.ondemand import OnDemandFeatureView
from keel.features.service import FeatureService
from keel.features.sources import ParquetSource
from keel.features.versioning import canonical_service, service_version, versioned

USER = Entity("user", join_keys={"user_id": "int64"})
STATS = FeatureView(
    "user_stats",
    entity=USER,
    source=ParquetSource("data/tx.parquet", event_timestamp="event_ts"),
    features=[Field("amount", "float64")],
    owner="risk",
)
DOUBLED = OnDemandFeatureView(
    "doubled",
    inputs=["user_stats:amount"],
    outputs=[Field("twice", "float64")],
    function=lambda c: {"twice": c["amount"] * 2},
)


def test_refs_keep_their_order_and_views_become_names() -> None:
    service = FeatureService("fraud", features=[STATS, "doubled:twice", DOUBLED], owner="risk")
    assert service.refs == ("user_stats", "doubled:twice", "doubled")
    assert service.features == (STATS, "doubled:twice", DOUBLED)
    assert canonical_service(service) == {
        "kind": "service",
        "name": "fraud",
        "features": ["user_stats", "doubled:twice", "doubled"],
        "owner": "risk",
        "tags": {},
        "description": "",
    }


def test_version_follows_the_refs_not_the_metadata() -> None:
    base = FeatureService("fraud", features=["user_stats:amount"], owner="risk")
    same = FeatureService(
        "fraud", features=["user_stats:amount"], owner="ops", description="x", tags={"a": "b"}
    )
    assert service_version(base) == service_version(same)
    assert versioned(base) == ("service", service_version(base), canonical_service(base))
    more = FeatureService("fraud", features=["user_stats:amount", "doubled"], owner="risk")
    assert service_version(more) != service_version(base)
    renamed = FeatureService("fraud2", features=["user_stats:amount"], owner="risk")
    assert service_version(renamed) != service_version(base)
    assert len(service_version(base)) == 64


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ([], "'fraud' has no features"),
        ("user_stats", "pass features as a list"),
        (["user_stats", "user_stats"], "lists 'user_stats' twice"),
        (["a:b:c"], "feature ref 'a:b:c'; write 'view:feature' or 'view'"),
        ([":x"], "feature ref ':x'"),
        (["v:"], "name the feature after ':'"),
        ([3], "feature ref 3 is a int"),
        ([""], "feature ref ''"),
    ],
)
def test_bad_services(features: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        FeatureService("fraud", features=features)


def test_bad_names_and_tags() -> None:
    with pytest.raises(InvalidInputError, match="feature service name ''"):
        FeatureService("", features=["v"])
    with pytest.raises(InvalidInputError, match="'fraud' has a value that is not plain JSON"):
        canonical_service(FeatureService("fraud", features=["v"], tags={"x": object()}))  # type: ignore[dict-item]
