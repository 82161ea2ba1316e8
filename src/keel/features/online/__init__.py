"""Online stores: the newest feature values per entity, for serving. Picked by URL scheme.

    sqlite:///PATH           embedded default, PATH relative to the project root
    sqlite:////ABS/PATH      an absolute path
    redis://HOST:PORT/DB     a Redis server (``pip install keel[redis]``); ``?prefix=NAME``
                             namespaces the keys (default ``keel``); rediss:// for TLS

Backends are imported only when opened. The contract every backend honours is in ``base.py``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from keel.errors import InvalidInputError, StoreError
from keel.features.online.base import EventRows, OnlineRows, OnlineStore, RowBatch

__all__ = [
    "EventRows",
    "OnlineRows",
    "OnlineStore",
    "RowBatch",
    "known_schemes",
    "open_online_store",
    "register_online_store",
]

_REDIS = "keel.features.online.redis_store:RedisOnlineStore"
_BACKENDS: dict[str, str] = {
    "sqlite": "keel.features.online.sqlite_store:SQLiteOnlineStore",
    "redis": _REDIS,
    "rediss": _REDIS,
}
# How to install what a backend imports, by scheme.
_INSTALL_HINTS = {"redis": "pip install keel[redis]", "rediss": "pip install keel[redis]"}


def open_online_store(url: str, *, root: Path | None = None) -> OnlineStore:
    """Open the online store at ``url``; relative SQLite paths are taken under ``root``.

    store = open_online_store("sqlite:///.keel/online.db", root=project.root)
    store = open_online_store("redis://127.0.0.1:6379/0?prefix=shop")
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    target = _BACKENDS.get(scheme)
    if target is None:
        supported = ", ".join(f"{name}://" for name in known_schemes())
        raise InvalidInputError(
            f"online store URL {url!r} has an unknown scheme {scheme!r}; supported: {supported} "
            "(e.g. sqlite:///.keel/online.db or redis://127.0.0.1:6379/0)"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in ("", "keel"):
            raise  # a bug in Keel, not a missing dependency
        hint = _INSTALL_HINTS.get(scheme, f"pip install {missing}")
        raise StoreError(
            f"the {scheme}:// online store needs the {missing!r} package; install it with `{hint}`"
        ) from exc
    store: OnlineStore = getattr(module, class_name).from_url(url, root=root)
    return store


def register_online_store(scheme: str, target: str, *, install_hint: str | None = None) -> None:
    """Make ``scheme://`` open ``target`` ("package.module:Class", a class with ``from_url``).

    register_online_store("dynamodb", "mypkg.online:DynamoStore",
                          install_hint="pip install mypkg")
    """
    if ":" not in target:
        raise InvalidInputError(f"target {target!r} must look like 'package.module:ClassName'")
    _BACKENDS[scheme] = target
    if install_hint:
        _INSTALL_HINTS[scheme] = install_hint


def known_schemes() -> list[str]:
    """The URL schemes an online store can be opened with."""
    return sorted(_BACKENDS)
