"""Model references and the naming rules of the registry.

A reference names one model version: ``"fraud@3"`` (version 3), ``"fraud@champion"`` (whatever
the alias ``champion`` points at) or ``"fraud"`` (the latest version). Parsing is pure: whether
the model, version or alias exists is checked by the registry when the reference is resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keel.errors import InvalidInputError

MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[a-z0-9_-]{1,128}")
# "latest" always means the newest version, so it cannot be an alias that points elsewhere.
RESERVED_ALIASES = frozenset({"latest"})

NAME_RULE = (
    f"use 1-{MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit "
    "(e.g. 'fraud-detector')"
)
ALIAS_RULE = (
    "use 1-128 lowercase letters, digits, '_' or '-', not a pure number and not 'latest' "
    "(e.g. 'champion')"
)


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: exactly one of ``version`` and ``alias`` is set, or neither (latest)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def validate_model_name(name: object) -> str:
    """Return ``name`` if it is a valid model name, else raise InvalidInputError with the rule.

    >>> validate_model_name("fraud-detector")
    'fraud-detector'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(f"model name {name!r} is invalid: {NAME_RULE}")
    return name


def validate_alias(alias: object) -> str:
    """Return ``alias`` if it is a valid alias name, else raise InvalidInputError with the rule.

    >>> validate_alias("champion")
    'champion'
    """
    if (
        not isinstance(alias, str)
        or not _ALIAS.fullmatch(alias)
        or alias.isdigit()
        or alias in RESERVED_ALIASES
    ):
        raise InvalidInputError(f"alias {alias!r} is invalid: {ALIAS_RULE}")
    return alias


def validate_version(version: object) -> int:
    """Return ``version`` as an int if it is a version number (1, 2, ...), else raise."""
    if isinstance(version, bool):
        number = None
    elif isinstance(version, int):
        number = version
    elif isinstance(version, str) and version.isdigit():
        number = int(version)
    else:
        number = None
    if number is None or number < 1:
        raise InvalidInputError(
            f"version {version!r} is invalid: versions are whole numbers from 1 (e.g. 3)"
        )
    return number


def parse_ref(ref: str, version: int | str | None = None) -> ModelRef:
    """Parse ``"name"``, ``"name@3"``, ``"name@alias"`` or ``"name@latest"``.

    ``version`` may be given separately instead of an ``@`` suffix (not both).

    >>> parse_ref("fraud@3")
    ModelRef(name='fraud', version=3, alias=None)
    >>> parse_ref("fraud@champion").alias
    'champion'
    """
    if not isinstance(ref, str):
        raise InvalidInputError(f"model reference {ref!r} is not a string; use 'name@version'")
    name, sep, suffix = ref.partition("@")
    if sep and version is not None:
        raise InvalidInputError(
            f"model reference {ref!r} already names a version or alias; "
            f"drop the separate version {version!r}"
        )
    validate_model_name(name)
    if not sep:
        return ModelRef(name, None if version is None else validate_version(version))
    if suffix.isdigit():
        return ModelRef(name, validate_version(suffix))
    if suffix == "latest":
        return ModelRef(name)
    if not _ALIAS.fullmatch(suffix):
        raise InvalidInputError(
            f"model reference {ref!r} is invalid: after '@' put a version number or an alias "
            f"(e.g. '{name}@3' or '{name}@champion'); aliases {ALIAS_RULE.removeprefix('use ')}"
        )
    return ModelRef(name, alias=suffix)
