"""The model registry: versions, aliases with history, states, audit log and lineage.

>>> from keel.registry import register_model_version, set_alias, load_model  # doctest: +SKIP

The imports are eager on purpose: the function ``lineage`` shares its name with the module
``keel.registry.lineage``, and only an import here guarantees the name means the function.
"""

from __future__ import annotations

from keel.registry.aliases import AliasChange, alias_history, delete_alias, set_alias, transition
from keel.registry.audit import AuditRecord, audit_log
from keel.registry.lineage import Lineage, LineageInput, lineage, models_using
from keel.registry.lookup import ModelVersion, RegisteredModel
from keel.registry.refs import ModelRef, parse_ref
from keel.registry.versions import (
    get_model_version,
    list_models,
    list_versions,
    load_model,
    register_model_version,
)

__all__ = [
    "AliasChange",
    "AuditRecord",
    "Lineage",
    "LineageInput",
    "ModelRef",
    "ModelVersion",
    "RegisteredModel",
    "alias_history",
    "audit_log",
    "delete_alias",
    "get_model_version",
    "lineage",
    "list_models",
    "list_versions",
    "load_model",
    "models_using",
    "parse_ref",
    "register_model_version",
    "set_alias",
    "transition",
]
