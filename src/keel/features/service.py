"""Feature services: the named set of features a model consumes.

    fraud_features = FeatureService(
        "fraud_features",
        features=["user_stats:amount_sum_7d", merchant_stats, "amount_ratio"],
        owner="risk-team",
    )

A ref is ``"view:feature"`` (one feature), ``"view"`` (every feature of the view, its
aggregations and on-demand outputs included) or a view object (the same as its name).
`keel features apply` checks every ref against the definitions and registers the service with
a version of its refs; `keel.features.selection.select_features` turns it into work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from keel.errors import InvalidInputError
from keel.features.definitions import FeatureView, _check_name
from keel.features.ondemand import OnDemandFeatureView, split_ref

FeatureRef = str | FeatureView | OnDemandFeatureView


@dataclass(frozen=True, eq=False)
class FeatureService:
    """A named, versioned list of feature refs; ``owner`` is required at apply.

    >>> FeatureService("fraud", features=["user_stats:amount", "amount_ratio"],
    ...                owner="risk-team").refs
    ('user_stats:amount', 'amount_ratio')
    """

    name: str
    features: Sequence[FeatureRef]
    owner: str | None = None
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"feature service {_check_name('feature service', self.name)!r}"
        if isinstance(self.features, str | FeatureView | OnDemandFeatureView):
            raise InvalidInputError(f"{where}: pass features as a list, e.g. [{self.features!r}]")
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "tags", dict(self.tags))
        if not self.features:
            raise InvalidInputError(f"{where} has no features; list refs such as 'view:feature'")
        refs = self.refs
        for ref in refs:
            split_ref(ref, where)
        twice = sorted({r for r in refs if refs.count(r) > 1})
        if twice:
            raise InvalidInputError(f"{where} lists {twice[0]!r} twice; list it once")

    @property
    def refs(self) -> tuple[str, ...]:
        """The features as ref strings, in declared order (a view object becomes its name)."""
        return tuple(_ref(item) for item in self.features)


def _ref(item: object) -> str:
    if isinstance(item, FeatureView | OnDemandFeatureView):
        return item.name
    if isinstance(item, str):
        return item
    raise InvalidInputError(
        f"feature ref {item!r} is a {type(item).__name__}; pass 'view:feature', 'view' or a "
        "FeatureView / OnDemandFeatureView"
    )
