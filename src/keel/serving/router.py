"""Deployment-aware routing: which loaded model answers each row sent to an endpoint.

An endpoint's deployment comes from the metadata store (`keel deploy`) when one exists for its
name, else from its keel.yaml config (the primary only). Every variant's model is loaded once,
artifact verified, and the state is re-read every ``refresh_s`` seconds so that several replicas
and a restarted server agree. A changed spec has its new models loaded *before* the route is
swapped, so requests during a switch are answered by the old route or the new one, never by a
half-loaded one; a spec whose models fail to load leaves the old route serving.

Each row belongs to a *unit*: the JSON of its entity key values (typed, so user 7 and user "7"
differ), else of its ``unit`` field, else its request id (then nothing is sticky). The unit's
variant is ``keel.deploy.spec.assign(spec, unit)``.

    router = Router(registry, refresh_s=5.0)
    router.load()
    route = router.route("fraud")
    route.assign([{"user_id": 7}], ["r1"])       # ['canary'] or ['primary']
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.config import EndpointConfig
from keel.deploy.spec import DeploymentSpec, assign
from keel.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from keel.serving.endpoints import Endpoint, EndpointRegistry

logger = logging.getLogger("keel.serving.router")

PRIMARY = "primary"
SHADOW = "shadow"
UNIT_FIELD = "unit"
DEFAULT_REFRESH_S = 5.0


@dataclass(frozen=True)
class Route:
    """The deployment in force on one endpoint with every variant's model loaded.

    ``models`` maps each variant (``primary`` always, plus ``shadow``, ``canary`` or the A/B
    arms) to its loaded endpoint; ``source`` is ``"deployment"`` or ``"config"``.
    """

    name: str
    spec: DeploymentSpec
    models: Mapping[str, Endpoint]
    source: str

    @property
    def primary(self) -> Endpoint:
        return self.models[PRIMARY]

    @property
    def shadow(self) -> Endpoint | None:
        """The candidate receiving copies of the traffic, if the strategy is shadow."""
        return self.models.get(SHADOW) if self.spec.strategy == SHADOW else None

    def assign(self, rows: Sequence[Mapping[str, Any]], request_ids: Sequence[str]) -> list[str]:
        """The variant answering each row (see the module docstring for the unit)."""
        return self.assign_units(rows, request_ids)[0]

    def assign_units(
        self, rows: Sequence[Mapping[str, Any]], request_ids: Sequence[str]
    ) -> tuple[list[str], list[str] | None]:
        """The variant answering each row and, when the deployment splits traffic (canary,
        A/B), each row's unit — logged so an analysis can count and compare units."""
        if self.spec.strategy in ("single", SHADOW):
            return [PRIMARY] * len(rows), None  # nothing to hash: the primary answers all
        keys = self.primary.keys
        units = [
            unit_of(row, keys, request_id)
            for row, request_id in zip(rows, request_ids, strict=True)
        ]
        return [assign(self.spec, unit) for unit in units], units


def unit_of(row: Mapping[str, Any], keys: Sequence[str], request_id: str) -> str:
    """The unit a row belongs to: its entity keys, else its ``unit`` field, else the request.

    >>> unit_of({"user_id": 7, "amount": 3.0}, ["user_id"], "r1")
    '[7]'
    >>> unit_of({"unit": "u-9"}, [], "r1"), unit_of({"a": 1}, [], "r1")
    ('["u-9"]', 'r1')
    """
    if keys:
        return json.dumps([row.get(key) for key in keys], separators=(",", ":"), default=str)
    if UNIT_FIELD in row:
        return json.dumps([row[UNIT_FIELD]], separators=(",", ":"), default=str)
    return request_id


def split(variants: Sequence[str]) -> dict[str, list[int]]:
    """Row positions per variant, variants in order of first appearance.

    >>> split(["primary", "canary", "primary"])
    {'primary': [0, 2], 'canary': [1]}
    """
    groups: dict[str, list[int]] = {}
    for i, variant in enumerate(variants):
        groups.setdefault(variant, []).append(i)
    return groups


class Router:
    """The routes of a registry's endpoints, kept in step with the deployment state.

    ``deployments=False`` ignores the metadata store's deployment state (config only).
    """

    def __init__(
        self,
        registry: EndpointRegistry,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        deployments: bool = True,
    ) -> None:
        if not refresh_s > 0:  # also refuses NaN
            raise InvalidInputError(
                f"refresh_s {refresh_s!r} must be a number of seconds > 0, e.g. 5"
            )
        self.registry = registry
        self.refresh_s = refresh_s
        self.deployments = deployments
        self._routes: dict[str, Route] = {}
        self._refreshing = threading.Lock()

    def load(self) -> None:
        """Load every endpoint's route; the registry is ready once all have loaded."""
        for name in self.registry.configs:
            self._install(self._build(name, *self._desired(name), self._routes.get(name)))
        self.registry.ready = True

    def route(self, name: str) -> Route:
        """The route of ``name``; NotFoundError (or StateError while loading) otherwise."""
        found = self._routes.get(name)
        if found is not None:
            return found
        # A registry loaded without the router serves its config's primary only.
        endpoint = self.registry.get(name)
        spec = DeploymentSpec(primary=endpoint.model_ref)
        return Route(name, spec, {PRIMARY: endpoint}, "config")

    def refresh(self) -> list[str]:
        """Re-read every endpoint's deployment and switch those that changed; their names.

        A failure (store unreachable, a model that does not load) keeps the route in force
        and is logged: serving goes on, and the next refresh tries again.
        """
        with self._refreshing:  # the periodic refresh and an admin change, one at a time
            return self._refresh_all()

    def _refresh_all(self) -> list[str]:
        changed = []
        for name in self.registry.configs:
            current = self._routes.get(name)
            try:
                spec, source = self._desired(name)
                if current is not None and (current.spec, current.source) == (spec, source):
                    continue
                self._install(self._build(name, spec, source, current))
            except Exception:  # any failure must leave the serving route untouched
                logger.exception("could not refresh the deployment of endpoint %r", name)
                continue
            logger.info("endpoint %r now serves %s", name, spec.to_dict())
            changed.append(name)
        return changed

    def shadows(self) -> list[Endpoint]:
        """The shadow candidates of every endpoint now routed."""
        return [route.shadow for route in self._routes.values() if route.shadow is not None]

    async def run(self, after_refresh: Callable[[], None] | None = None) -> None:
        """Refresh every ``refresh_s`` seconds until cancelled (the app's lifespan task),
        calling ``after_refresh`` when a refresh changed a route. Each refresh runs on a
        worker thread: reading the deployment and loading a new model must not stall the
        requests this event loop is serving."""
        while True:
            await asyncio.sleep(self.refresh_s)
            if await asyncio.to_thread(self.refresh) and after_refresh is not None:
                after_refresh()

    def _desired(self, name: str) -> tuple[DeploymentSpec, str]:
        if self.deployments:
            from keel.deploy.state import get_deployment

            try:
                return get_deployment(self.registry.project, name).spec, "deployment"
            except NotFoundError:
                pass
        return DeploymentSpec(primary=self.registry.configs[name].model), "config"

    def _build(self, name: str, spec: DeploymentSpec, source: str, current: Route | None) -> Route:
        # Reuse what is loaded already: a canary step or a stop changes shares, not models.
        loaded = {e.model_ref: e for e in (current.models.values() if current else ())}
        features = self.registry.configs[name].features
        models: dict[str, Endpoint] = {}
        for variant in dict.fromkeys([PRIMARY, *spec.variants()]):
            ref = spec.model_for(variant)
            if ref not in loaded:
                config = EndpointConfig(model=ref, features=features)
                loaded[ref] = self.registry.load_endpoint(name, config)
            models[variant] = loaded[ref]
        return Route(name, spec, models, source)

    def _install(self, route: Route) -> None:
        # One assignment each: a request sees the old route or the new one, never a mix.
        self._routes[route.name] = route
        self.registry.endpoints[route.name] = route.primary
