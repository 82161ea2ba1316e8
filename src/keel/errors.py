"""The one exception tree of Keel.

Every error a user can cause is a ``KeelError``; its message names the bad thing and the fix.
The CLI prints the message on one line and exits non-zero (a traceback only with ``--debug``).

    KeelError
    ├── ConfigError                 keel.yaml / KEEL_* / arguments are invalid
    ├── ProjectNotFoundError        no keel.yaml here or above
    ├── StoreError                  a store cannot be reached or used
    │   ├── SchemaTooNewError       the metadata database was written by a newer Keel
    │   └── ArtifactCorruptedError  an object's bytes do not match its sha256 name
    ├── NotFoundError               an experiment, run, model, version or alias does not exist
    ├── InvalidInputError           an argument has the wrong form or type
    │   ├── FilterSyntaxError       a run-search filter cannot be parsed
    │   └── SignatureError          model input does not match the model's signature
    ├── StateError                  an operation is not allowed in the current state
    └── FlavorError                 no flavor can save or load a model
"""

from __future__ import annotations


class KeelError(Exception):
    """Root of every error Keel raises on purpose."""

    exit_code = 1


class ConfigError(KeelError):
    """Raised when keel.yaml, a KEEL_* variable or an explicit argument is invalid."""

    exit_code = 2


class ProjectNotFoundError(KeelError):
    """Raised when no keel.yaml is found in the directory or any parent."""

    exit_code = 2


class StoreError(KeelError):
    """Raised when a metadata or artifact store cannot be reached or used."""


class SchemaTooNewError(StoreError):
    """Raised when the metadata database has a schema newer than this Keel understands."""


class ArtifactCorruptedError(StoreError):
    """Raised when a stored object's content does not hash to its name (tampered or truncated)."""


class NotFoundError(KeelError):
    """Raised when a named experiment, run, model, version or alias does not exist."""

    exit_code = 3


class InvalidInputError(KeelError):
    """Raised when an argument has the wrong form, type or value."""

    exit_code = 2


class FilterSyntaxError(InvalidInputError):
    """Raised when a run-search filter or order-by cannot be parsed."""


class SignatureError(InvalidInputError):
    """Raised when prediction input does not match the model's recorded signature."""


class StateError(KeelError):
    """Raised when an operation is not allowed in the current state (e.g. unapproved champion)."""


class FlavorError(KeelError):
    """Raised when no flavor can save a model, or a stored model's flavor cannot load it."""
