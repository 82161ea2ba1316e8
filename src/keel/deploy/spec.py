"""What a deployment is: the spec of one endpoint, and which variant serves a given unit.

A spec is a plain value (frozen dataclasses, JSON via ``to_dict``/``from_dict``) so the metadata
store, the server replicas and the history all hold the same thing. Assignment is a pure function
of the spec and the unit (the entity key), so every replica sends a unit to the same variant
without talking to the others.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keel.errors import InvalidInputError

STRATEGIES = ("single", "shadow", "canary", "ab")
CANARY_STATUSES = ("running", "paused", "promoted", "rolled_back")
DEFAULT_PLAN: tuple[float, ...] = (1, 5, 10, 25, 50, 100)
DEFAULT_HOLD_S = 86_400.0
DEFAULT_MIN_SAMPLE = 500
# Variant names with a fixed meaning; A/B arms must use other names.
RESERVED_VARIANTS = frozenset({"primary", "shadow", "canary"})
_ARM = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class CanaryState:
    """A canary ramp: ``plan`` in percent of units, ``step`` the index of the current share."""

    plan: tuple[float, ...]
    step: int
    hold_s: float
    min_sample: int
    step_started_at: int  # epoch ms
    status: str = "running"
    salt: str = ""

    @property
    def percent(self) -> float:
        return self.plan[self.step]

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": [_number(p) for p in self.plan],
            "step": self.step,
            "hold_s": _number(self.hold_s),
            "min_sample": self.min_sample,
            "step_started_at": self.step_started_at,
            "status": self.status,
            "salt": self.salt,
        }


@dataclass(frozen=True)
class ABState:
    """An A/B test: arm name -> model reference, arm name -> weight (summing to 1), and salt."""

    arms: dict[str, str]
    weights: dict[str, float]
    salt: str

    def to_dict(self) -> dict[str, Any]:
        return {"arms": dict(self.arms), "weights": dict(self.weights), "salt": self.salt}


@dataclass(frozen=True)
class DeploymentSpec:
    """Which model versions serve an endpoint and how traffic is split between them.

    >>> spec = DeploymentSpec(primary="fraud@3")
    >>> spec.to_dict()["strategy"], assign(spec, "user-1")
    ('single', 'primary')
    """

    primary: str
    strategy: str = "single"
    candidate: str | None = None
    canary: CanaryState | None = None
    ab: ABState | None = None

    def model_for(self, variant: str) -> str:
        """The model reference ("name@N") that serves ``variant``."""
        if variant == "primary":
            return self.primary
        if variant in ("shadow", "canary") and self.candidate is not None:
            return self.candidate
        if self.ab is not None and variant in self.ab.arms:
            return self.ab.arms[variant]
        raise InvalidInputError(
            f"variant {variant!r} is not part of this {self.strategy} deployment; "
            f"its variants are {', '.join(self.variants())}"
        )

    def variants(self) -> list[str]:
        """Every variant this spec serves (the shadow included)."""
        if self.strategy == "ab" and self.ab is not None:
            return list(self.ab.arms)
        if self.strategy in ("shadow", "canary"):
            return ["primary", self.strategy]
        return ["primary"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary": self.primary,
            "strategy": self.strategy,
            "candidate": self.candidate,
            "canary": None if self.canary is None else self.canary.to_dict(),
            "ab": None if self.ab is None else self.ab.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentSpec:
        """The spec stored by ``to_dict``, validated (so a hand-edited row cannot slip through)."""
        canary = data.get("canary")
        ab = data.get("ab")
        spec = cls(
            primary=str(data["primary"]),
            strategy=str(data.get("strategy", "single")),
            candidate=data.get("candidate"),
            canary=None if canary is None else _canary_from(canary),
            ab=None if ab is None else _ab_from(ab),
        )
        validate_spec(spec)
        return spec


def _canary_from(data: Mapping[str, Any]) -> CanaryState:
    return CanaryState(
        plan=tuple(float(p) for p in data["plan"]),
        step=int(data["step"]),
        hold_s=float(data["hold_s"]),
        min_sample=int(data["min_sample"]),
        step_started_at=int(data["step_started_at"]),
        status=str(data.get("status", "running")),
        salt=str(data.get("salt", "")),
    )


def _ab_from(data: Mapping[str, Any]) -> ABState:
    arms = {str(k): str(v) for k, v in dict(data["arms"]).items()}
    weights = {str(k): float(v) for k, v in dict(data["weights"]).items()}
    return ABState(arms=arms, weights=weights, salt=str(data["salt"]))


def validate_spec(spec: DeploymentSpec) -> None:
    """Raise InvalidInputError if the parts of ``spec`` do not fit its strategy."""
    if spec.strategy not in STRATEGIES:
        raise InvalidInputError(
            f"strategy {spec.strategy!r} is unknown; use one of {', '.join(STRATEGIES)}"
        )
    needs_candidate = spec.strategy in ("shadow", "canary")
    if needs_candidate != (spec.candidate is not None):
        raise InvalidInputError(
            f"a {spec.strategy} deployment {'needs' if needs_candidate else 'has no'} candidate"
        )
    if (spec.strategy == "canary") != (spec.canary is not None):
        raise InvalidInputError("canary settings belong to a canary deployment only")
    if (spec.strategy == "ab") != (spec.ab is not None):
        raise InvalidInputError("A/B settings belong to an A/B deployment only")
    if spec.canary is not None:
        validate_plan(spec.canary.plan)
        if not 0 <= spec.canary.step < len(spec.canary.plan):
            raise InvalidInputError(f"canary step {spec.canary.step} is outside its plan")
        if spec.canary.status not in CANARY_STATUSES:
            raise InvalidInputError(
                f"canary status {spec.canary.status!r} is unknown; "
                f"use one of {', '.join(CANARY_STATUSES)}"
            )
    if spec.ab is not None:
        validate_weights(spec.ab.arms, spec.ab.weights)


def validate_plan(plan: Sequence[float]) -> tuple[float, ...]:
    """Return ``plan`` as a tuple if it is a strictly increasing ramp ending at 100 percent.

    >>> validate_plan([1, 10, 100])
    (1.0, 10.0, 100.0)
    """
    values = tuple(float(p) for p in plan)
    shown = ",".join(str(_number(p)) for p in values)
    if not values or any(not (0 < p <= 100) or math.isnan(p) for p in values):
        raise InvalidInputError(
            f"canary plan [{shown}] must hold percentages in (0, 100]; e.g. 1,5,10,25,50,100"
        )
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise InvalidInputError(
            f"canary plan [{shown}] is not strictly increasing; list each share once, "
            "smallest first, e.g. 1,5,10,25,50,100"
        )
    if values[-1] != 100:
        raise InvalidInputError(
            f"canary plan [{shown}] must end at 100 (the promotion); append 100"
        )
    return values


def validate_arms(arms: Mapping[str, str]) -> None:
    if len(arms) < 2:
        raise InvalidInputError(
            f"an A/B test needs at least two arms, got {sorted(arms)}; "
            "e.g. control=fraud@3 treatment=fraud@4"
        )
    for arm in arms:
        if not _ARM.fullmatch(arm) or arm in RESERVED_VARIANTS:
            raise InvalidInputError(
                f"arm name {arm!r} is invalid: use lowercase letters, digits, '_' or '-', "
                "starting with a letter, and not primary/shadow/canary (e.g. 'treatment')"
            )


def validate_weights(arms: Mapping[str, str], weights: Mapping[str, float]) -> None:
    """Raise unless ``weights`` names exactly the arms, each in [0, 1], summing to 1."""
    validate_arms(arms)
    if set(weights) != set(arms):
        raise InvalidInputError(
            f"weights name arms {sorted(weights)} but the arms are {sorted(arms)}; "
            "give one weight per arm"
        )
    if any(not (0 <= w <= 1) or math.isnan(w) for w in weights.values()):
        raise InvalidInputError(f"weights {dict(weights)} must each lie between 0 and 1")
    total = sum(weights.values())
    if abs(total - 1) > _WEIGHT_TOLERANCE:
        raise InvalidInputError(
            f"weights {dict(weights)} sum to {total:g}, not 1; e.g. 0.5 and 0.5 for two arms"
        )


def unit_position(salt: str, unit: str) -> float:
    """Where ``unit`` falls in [0, 1) for ``salt``: the first 8 bytes of sha256(salt:unit)."""
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(spec: DeploymentSpec, unit: str) -> str:
    """The variant that answers requests for ``unit`` (the entity key): sticky, no state.

    Canary: units whose position falls below the current share go to "canary", so a unit that
    joined the canary stays in it as the ramp grows. A/B: the arm (arms in name order) whose
    cumulative weight range holds the position. Single and shadow: "primary" (the shadow is
    sent a copy separately).

    >>> assign(DeploymentSpec(primary="fraud@3"), "user-42")
    'primary'
    """
    if spec.strategy == "canary" and spec.canary is not None:
        position = unit_position(spec.canary.salt, unit)
        return "canary" if position < spec.canary.percent / 100 else "primary"
    if spec.strategy == "ab" and spec.ab is not None:
        position = unit_position(spec.ab.salt, unit)
        cumulative = 0.0
        # Sorted, so the ranges never depend on how a store orders the JSON keys.
        arms = sorted(spec.ab.arms)
        for arm in arms:
            cumulative += spec.ab.weights[arm]
            if position < cumulative:
                return arm
        # Rounding can leave the sum a hair under 1: the last arm with weight takes the rest.
        return next(arm for arm in reversed(arms) if spec.ab.weights[arm] > 0)
    return "primary"


def _number(value: float) -> float | int:
    """Whole numbers as ints, so stored plans read 1,5,10 rather than 1.0,5.0,10.0."""
    return int(value) if float(value).is_integer() else value
