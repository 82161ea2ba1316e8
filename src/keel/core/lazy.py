"""Lazy re-exports: a package's public names are imported on first use, so importing the
package itself stays cheap (no SQLAlchemy, pandas or model libraries until needed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` resolving ``exports`` (name → defining module).

    >>> __getattr__, __dir__ = lazy_exports(__name__, globals(), {"add": "keel.data.workspace"})
    ... # doctest: +SKIP
    """

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *exports})

    return getattr_, dir_
