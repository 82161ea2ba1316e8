"""Project configuration: keel.yaml < KEEL_* environment variables < explicit arguments.

Every value is validated with pydantic; an error names the key, where the value came from
(the file, the variable or the argument) and the expected form.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keel.config_file import CONFIG_FILE as CONFIG_FILE  # re-exported: its old home
from keel.config_file import ENV_PREFIX
from keel.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetadataConfig(_Section):
    url: str = Field(default="sqlite:///.keel/keel.db")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql+psycopg://", "postgresql://")):
            raise ValueError("expected 'sqlite:///PATH' or 'postgresql+psycopg://USER@HOST/DB'")
        return value


class ArtifactsConfig(_Section):
    url: str = Field(default=".keel/artifacts")
    # Passed to the fsspec filesystem, e.g. {"endpoint_url": "http://127.0.0.1:8333"} for S3.
    options: dict[str, Any] = Field(default_factory=dict)


class TrackingConfig(_Section):
    default_experiment: str = "default"
    # Metric points are buffered and written in batches of this size (or every flush_seconds).
    metric_batch_size: int = Field(default=1000, ge=1)
    flush_seconds: float = Field(default=2.0, gt=0)
    capture_diff: bool = True


class RegistryConfig(_Section):
    # Aliases that may only point at an approved version (e.g. ["champion"]).
    require_approval: list[str] = Field(default_factory=list)


class RemoteConfig(_Section):
    # Any fsspec URL: a local folder, s3://bucket/prefix, gs://..., az://...
    url: str
    # Options for the filesystem, e.g. {"endpoint_url": "http://127.0.0.1:8333"} for S3.
    options: dict[str, Any] = Field(default_factory=dict)


LinkType = Literal["reflink", "hardlink", "copy"]


def _default_links() -> list[LinkType]:
    return ["reflink", "copy"]


class DataConfig(_Section):
    # The local content-addressed cache of versioned data.
    cache: str = ".keel/cache"
    # How workspace files are made from the cache, first that works wins.
    link: list[LinkType] = Field(default_factory=_default_links)
    remote: str | None = None  # the default remote's name
    remotes: dict[str, RemoteConfig] = Field(default_factory=dict)
    jobs: int = Field(default=8, ge=1, le=256)  # parallel transfers


class FeaturesConfig(_Section):
    # The Python file that declares entities, feature views and feature services.
    definitions: str = "features.py"
    # sqlite:///PATH (relative to the project) or redis://HOST:PORT/DB[?prefix=NAME]
    online_store: str = "sqlite:///.keel/online.db"
    offline_engine: Literal["duckdb", "spark"] = "duckdb"
    # DuckDB's memory cap for training sets (e.g. "4GB"); past it, it spills to disk.
    memory_limit: str | None = None
    # A model whose feature versions differ from the online store's: refuse to load, or warn.
    on_version_mismatch: Literal["refuse", "warn"] = "refuse"
    # Log every online lookup (keys, request time, values) for `keel features skew-check`.
    log_served: bool = False
    served_log: str = ".keel/served-features"


class EndpointConfig(_Section):
    # The model version to serve: "name@version" or "name@alias" (e.g. fraud@champion).
    model: str
    # The feature service whose online features feed the model (None: the request carries
    # every model input itself).
    features: str | None = None


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # Append-only segments of every prediction, compacted to Parquet by endpoint and date.
    prediction_log: str = ".keel/predictions"
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    # How often each server re-reads `keel deploy` state, so replicas agree within this time.
    refresh_s: float = Field(default=5.0, gt=0)
    # Requests copied to a shadow candidate wait here; when full, copies are dropped (counted).
    shadow_queue_size: int = Field(default=1000, ge=1)
    # Shadow candidates predict in a separate lowest-priority process (false: a server thread,
    # which shares the interpreter lock with request handling and slows the primary).
    shadow_process: bool = True
    # Keys for predictions and, separately, for deployment changes: "sha256:<hex>" (see
    # keel.serving.auth.hash_api_key) or plain; none configured: the server is open.
    api_keys: list[str] = Field(default_factory=list)
    admin_keys: list[str] = Field(default_factory=list)
    endpoints: dict[str, EndpointConfig] = Field(default_factory=dict)


class KeelConfig(_Section):
    project: str = "keel-project"
    user: str | None = None
    metadata: MetadataConfig = Field(default_factory=MetadataConfig)
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)


DEFAULT_YAML = """\
# Keel project configuration. Every key is optional; the values shown are the defaults.
# Precedence: this file < KEEL_* environment variables < explicit arguments.
# An environment variable names the section and key: KEEL_METADATA_URL, KEEL_ARTIFACTS_URL,
# KEEL_REGISTRY_REQUIRE_APPROVAL, KEEL_USER ...

project: {project}

# Who is recorded in audit records and alias history (default: the operating-system user).
# user: alice@example.com

metadata:
  # sqlite:///PATH (relative to this file) or postgresql+psycopg://USER@HOST:5432/DB
  url: sqlite:///.keel/keel.db

artifacts:
  # Any fsspec URL: a local folder (relative to this file), s3://bucket/prefix, gs://..., az://...
  url: .keel/artifacts
  # Options for the filesystem, e.g. for an S3-compatible server:
  # options: {{endpoint_url: "http://127.0.0.1:8333", key: "...", secret: "..."}}
  options: {{}}

tracking:
  default_experiment: default
  metric_batch_size: 1000   # metric points written per batch
  flush_seconds: 2.0        # ... or at least this often
  capture_diff: true        # store the uncommitted git diff of every run as an artifact

registry:
  # Aliases that may only point at an approved model version.
  require_approval: []

data:
  cache: .keel/cache        # local content-addressed cache of versioned data
  link: [reflink, copy]     # how workspace files are made from the cache (hardlink also allowed)
  jobs: 8                   # parallel transfers for push and pull
  # remote: storage          # the default remote
  # remotes:
  #   storage: {{url: "s3://bucket/keel-data", options: {{endpoint_url: "http://127.0.0.1:8333"}}}}
  remotes: {{}}

features:
  definitions: features.py  # entities, feature views and services (`keel features apply`)
  # sqlite:///PATH (embedded) or redis://HOST:6379/0?prefix=NAME
  online_store: sqlite:///.keel/online.db
  offline_engine: duckdb    # or spark (pip install keel[spark])
  # memory_limit: 4GB       # DuckDB's memory cap for training sets, past which it spills
  on_version_mismatch: refuse  # or warn: a model trained on other feature versions
  log_served: false         # log online lookups for `keel features skew-check`
  served_log: .keel/served-features

serving:
  host: 127.0.0.1
  port: 8000
  workers: 1
  prediction_log: .keel/predictions   # every prediction, before its response is sent
  max_request_bytes: 1048576
  refresh_s: 5.0            # re-read `keel deploy` state this often
  shadow_queue_size: 1000   # shadow copies waiting; more are dropped and counted
  shadow_process: true      # shadow predictions in a separate lowest-priority process
  api_keys: []      # "sha256:<hex>" of each prediction key (keel.serving.auth.hash_api_key)
  admin_keys: []    # the same for deployment changes
  # endpoints:
  #   fraud: {{model: fraud@champion, features: fraud_features}}
  endpoints: {{}}
"""


def load_config(
    root: Path,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> KeelConfig:
    """Resolve the configuration of the project at ``root``.

    ``overrides`` uses dotted keys (``{"metadata.url": "sqlite:///x.db"}``) or nested dicts.
    """
    file = root / CONFIG_FILE
    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    if file.exists():
        _merge(merged, _read_yaml(file), sources, f"{file}")
    _merge(merged, _from_env(os.environ if environ is None else environ), sources, "environment")
    if overrides:
        _merge(merged, _nest(overrides), sources, "argument")
    try:
        return KeelConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{file}{where}: not valid YAML; fix the syntax there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping of keys (project:, metadata: ...) at top")
    return data


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Map KEEL_SECTION_KEY=value onto the config tree; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    sections = {
        name: field.annotation
        for name, field in KeelConfig.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        value = _env_value(raw)
        if rest in KeelConfig.model_fields and rest not in sections:
            out[rest] = value
            continue
        for section in sections:
            if rest.startswith(section + "_"):
                out.setdefault(section, {})[rest[len(section) + 1 :]] = value
                break
    return out


def _env_value(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # A comma list is the natural way to write a list in an environment variable.
    if isinstance(value, str) and "," in value:
        return [part.strip() for part in value.split(",") if part.strip()]
    return raw if value is None else value


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _merge(
    into: dict[str, Any],
    new: Mapping[str, Any],
    sources: dict[tuple[str, ...], str],
    source: str,
    prefix: tuple[str, ...] = (),
) -> None:
    for key, value in new.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, sources, source, path)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
            sources[path] = source
            if isinstance(value, Mapping):
                for sub in value:
                    sources[(*path, str(sub))] = source


def _describe(exc: ValidationError, sources: dict[tuple[str, ...], str]) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        key = ".".join(loc)
        source = next(
            (sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), "default"
        )
        if source == "environment":
            source = "environment variable " + ENV_PREFIX + "_".join(loc).upper()
        if err["type"] == "extra_forbidden":
            problems.append(f"{source}: unknown key '{key}'; remove it or check its spelling")
        else:
            got = err.get("input")
            problems.append(
                f"{source}: {key}: {err['msg'].removeprefix('Value error, ')} (got {got!r})"
            )
    return "invalid configuration — " + "; ".join(problems)
