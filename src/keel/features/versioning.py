"""A feature view's version: the sha256 of its canonical definition and transformation source.

Only what changes the values counts: entity keys, source, features, aggregations, ttl and the
transformation's code. Owner, descriptions and tags are metadata: changing them updates the
registered definition in place, so a model trained on the values is not told its features
changed when only their documentation did. An on-demand view's version covers its inputs,
request fields, outputs and its function's source (decorators left out); a feature service's
covers its feature refs.

The canonical form is JSON with sorted keys and fixed separators, durations in seconds and
defaults as JSON values, so the same definition gives the same version in every process, on
every machine and across Python runs (no ``hash()``, no ``repr`` of objects with addresses).
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from keel.core.hashing import sha256_bytes
from keel.errors import InvalidInputError
from keel.features.definitions import FeatureView

if TYPE_CHECKING:
    from keel.features.ondemand import OnDemandFeatureView
    from keel.features.service import FeatureService


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def canonical_definition(view: FeatureView) -> dict[str, Any]:
    """The view as plain JSON values: what is hashed into its version and stored per version.

    >>> canonical_definition(user_stats)["entity"]  # doctest: +SKIP
    {'name': 'user', 'join_keys': [['user_id', 'int64']], 'description': ''}
    """
    definition = {
        "name": view.name,
        "entity": {
            "name": view.entity.name,
            "join_keys": [[k, t] for k, t in view.entity.join_keys.items()],
            "description": view.entity.description,
        },
        "source": view.source.describe(),
        "features": [
            {"name": f.name, "dtype": f.dtype, "default": f.default, "description": f.description}
            for f in view.fields
        ],
        "aggregations": [
            {
                "name": a.output_name,
                "column": a.column,
                "function": a.function,
                "window_seconds": _seconds(a.window_delta),
                "default": a.default,
            }
            for a in view.aggregation_list
        ],
        "ttl_seconds": _seconds(view.ttl_delta),
        "owner": view.owner,
        "tags": dict(sorted(view.tags.items())),
        "description": view.description,
    }
    _check_json(view.name, definition)
    return definition


def _columns(items: Iterable[Any]) -> list[dict[str, Any]]:
    return [{"name": i.name, "dtype": i.dtype, "description": i.description} for i in items]


def canonical_on_demand(view: OnDemandFeatureView) -> dict[str, Any]:
    """An on-demand view as plain JSON values, its function's source included (from the
    ``def`` line), so the version follows the code and `diff` shows how it changed.

    >>> canonical_on_demand(ratio)["inputs"]  # doctest: +SKIP
    ['user_stats:amount_sum_7d']
    """
    definition = {
        "kind": "on_demand",
        "name": view.name,
        "inputs": list(view.inputs),
        "request": _columns(view.request),
        "outputs": _columns(view.outputs),
        "function": getattr(view.function, "__name__", None),
        "source": _source_of(view.name, view.function),
        "owner": view.owner,
        "tags": dict(sorted(view.tags.items())),
        "description": view.description,
    }
    _check_json(view.name, definition)
    return definition


def canonical_service(service: FeatureService) -> dict[str, Any]:
    """A feature service as plain JSON values: its feature refs, in declared order."""
    definition = {
        "kind": "service",
        "name": service.name,
        "features": list(service.refs),
        "owner": service.owner,
        "tags": dict(sorted(service.tags.items())),
        "description": service.description,
    }
    _check_json(service.name, definition)
    return definition


def _check_json(name: str, definition: dict[str, Any]) -> None:
    try:
        json.dumps(definition, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"definition {name!r} has a value that is not plain JSON ({exc}); use numbers, "
            "strings, booleans or None for defaults and tags"
        ) from exc


def canonical_json(definition: dict[str, Any]) -> str:
    """The one byte-stable JSON text of a definition."""
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Keys of a canonical definition that document a view without changing its values.
METADATA_KEYS = ("owner", "description", "tags")


def semantic_definition(definition: Any) -> Any:
    """``definition`` without its metadata: owner, tags and every description.

    >>> semantic_definition({"name": "v", "owner": "risk", "ttl_seconds": 60.0})
    {'name': 'v', 'ttl_seconds': 60.0}
    """
    if isinstance(definition, dict):
        return {
            key: semantic_definition(value)
            for key, value in definition.items()
            if key not in METADATA_KEYS
        }
    if isinstance(definition, list):
        return [semantic_definition(item) for item in definition]
    return definition


def definition_version(
    name: str, definition: dict[str, Any], transformations: Iterable[Callable[..., Any]] = ()
) -> str:
    """sha256 (hex) of a canonical definition's semantic part plus its transformations' code."""
    text = canonical_json(semantic_definition(definition))
    for function in transformations:
        text += "\n" + _source_of(name, function)
    return sha256_bytes(text.encode("utf-8"))


def view_version(view: FeatureView, transformations: Iterable[Callable[..., Any]] = ()) -> str:
    """sha256 (hex) of the view's semantic definition plus the source code of its
    transformations (see the module docstring for what counts).

    >>> view_version(user_stats)  # doctest: +SKIP
    '3f1c...'
    """
    return definition_version(view.name, canonical_definition(view), transformations)


def on_demand_version(view: OnDemandFeatureView) -> str:
    """sha256 (hex) of the on-demand view's semantic definition, its function's source
    included."""
    return definition_version(view.name, canonical_on_demand(view))


def service_version(service: FeatureService) -> str:
    """sha256 (hex) of the service's semantic definition (its feature refs)."""
    return definition_version(service.name, canonical_service(service))


def versioned(
    definition: FeatureView | OnDemandFeatureView | FeatureService,
) -> tuple[str, str, dict[str, Any]]:
    """(kind, version, canonical definition) of any definition; kind is batch, on_demand or
    service.

    >>> versioned(user_stats)[0]  # doctest: +SKIP
    'batch'
    """
    if isinstance(definition, FeatureView):
        return "batch", view_version(definition), canonical_definition(definition)
    from keel.features.service import FeatureService

    if isinstance(definition, FeatureService):
        return "service", service_version(definition), canonical_service(definition)
    return "on_demand", on_demand_version(definition), canonical_on_demand(definition)


def _source_of(name: str, function: Callable[..., Any]) -> str:
    """The function's source from its ``def`` line: decorators are left out, so changing an
    owner or description written in a decorator does not change the version."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError) as exc:
        raise InvalidInputError(
            f"the source of transformation {function!r} of {name!r} cannot be read ({exc}); "
            "define it with `def` in a .py file"
        ) from exc
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a lambda's line taken out of its expression
        return source
    node = tree.body[0] if tree.body else None
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.decorator_list:
        return "".join(source.splitlines(keepends=True)[node.lineno - 1 :])
    return source
