"""A feature view's version: the sha256 of its canonical definition and transformation source.

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


def view_version(view: FeatureView, transformations: Iterable[Callable[..., Any]] = ()) -> str:
    """sha256 (hex) of the view's canonical JSON plus the source code of its transformations.

    >>> view_version(user_stats)  # doctest: +SKIP
    '3f1c...'
    """
    text = canonical_json(canonical_definition(view))
    for function in transformations:
        text += "\n" + _source_of(view.name, function)
    return sha256_bytes(text.encode("utf-8"))


def _source_of(name: str, function: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError) as exc:
        raise InvalidInputError(
            f"the source of transformation {function!r} of {name!r} cannot be read ({exc}); "
            "define it with `def` in a .py file"
        ) from exc
