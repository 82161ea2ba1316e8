"""A feature view's version: the sha256 of its canonical definition and transformation source.

Only what changes the values counts: entity keys, source, features, aggregations, ttl and the
transformation's code. Owner, descriptions and tags are metadata: changing them updates the
registered definition in place, so a model trained on the values is not told its features
changed when only their documentation did.

The canonical form is JSON with sorted keys and fixed separators, durations in seconds and
defaults as JSON values, so the same definition gives the same version in every process, on
every machine and across Python runs (no ``hash()``, no ``repr`` of objects with addresses).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from keel.core.hashing import sha256_bytes
from keel.errors import InvalidInputError
from keel.features.definitions import FeatureView


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


def _check_json(name: str, definition: dict[str, Any]) -> None:
    try:
        json.dumps(definition, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"feature view {name!r} has a value that is not plain JSON ({exc}); use numbers, "
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


def _source_of(name: str, function: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError) as exc:
        raise InvalidInputError(
            f"the source of transformation {function!r} of {name!r} cannot be read ({exc}); "
            "define it with `def` in a .py file"
        ) from exc
