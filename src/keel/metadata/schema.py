"""The metadata schema. Tables change only through Alembic migrations (metadata/migrations).

Times are epoch milliseconds (BigInteger): compact, index-friendly and free of time-zone
ambiguity on every database; keel.core.timeutil converts them to aware UTC datetimes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Stable constraint names make migrations portable between SQLite and PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(32)  # keel.core.ids.new_id()
SHA = String(64)

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("description", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

# One row per distinct environment (python, platform, installed packages), shared by runs.
environments = Table(
    "environments",
    metadata,
    Column("sha256", SHA, primary_key=True),
    Column("python_version", String(64), nullable=False),
    Column("platform", String(256), nullable=False),
    Column("packages", JSON, nullable=False),  # {"numpy": "2.4.6", ...}
    Column("created_at", BigInteger, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id"), nullable=False),
    Column("name", String(256), nullable=True),
    Column("parent_run_id", ID, ForeignKey("runs.id"), nullable=True),
    Column("status", String(16), nullable=False),  # running | finished | failed | killed
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("notes", Text, nullable=True),
    Column("user", String(256), nullable=True),
    # Captured without being asked:
    Column("git_commit", String(64), nullable=True),
    Column("git_branch", String(256), nullable=True),
    Column("git_dirty", Boolean, nullable=True),
    Column("git_diff_sha256", SHA, nullable=True),  # artifact holding the uncommitted diff
    Column("environment_sha256", SHA, ForeignKey("environments.sha256"), nullable=True),
    Column("command", Text, nullable=True),
    Column("seeds", JSON, nullable=True),
    Index("ix_runs_experiment_start", "experiment_id", "start_time"),
    Index("ix_runs_parent", "parent_run_id"),
    Index("ix_runs_status", "status"),
    Index("ix_runs_start_time", "start_time", "id"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", Text, nullable=False),
    Index("ix_params_key_value", "key", "value"),
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", Text, nullable=False),
    Index("ix_tags_key_value", "key", "value"),
)

# Every logged point of every metric series.
metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(256), nullable=False),
    Column("value", Float, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Index("ix_metrics_run_key_step", "run_id", "key", "step"),
)

# The last point (greatest step, then timestamp) of each series: what search filters and sorts on.
latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", Float, nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Index("ix_latest_metrics_key_value", "key", "value"),
)

run_artifacts = Table(
    "run_artifacts",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("sha256", SHA, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# Lineage inputs of a run. kind: dataset | feature_view | training_set; ref: the content hash,
# "view@version" or fingerprint. Indexed by (kind, ref) to walk forward from an input to models.
run_inputs = Table(
    "run_inputs",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("ref", String(512), primary_key=True),
    Column("name", String(1024), nullable=True),
    Column("details", JSON, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_run_inputs_kind_ref", "kind", "ref"),
)

registered_models = Table(
    "registered_models",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("description", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Bumped atomically (UPDATE ... RETURNING) so concurrent registrations never share a number.
    Column("latest_version", Integer, nullable=False, default=0),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(256), ForeignKey("registered_models.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("run_id", ID, ForeignKey("runs.id"), nullable=True),
    Column("artifact_sha256", SHA, nullable=False),  # the model's manifest object
    Column("flavor", String(64), nullable=False),
    Column("signature", JSON, nullable=True),
    Column("library_versions", JSON, nullable=False),
    Column("environment_sha256", SHA, ForeignKey("environments.sha256"), nullable=True),
    Column("state", String(16), nullable=False),  # candidate | approved | archived
    Column("description", Text, nullable=True),
    Column("created_by", String(256), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("model_name", "version"),
    Index("ix_model_versions_run", "run_id"),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model_name", String(256), ForeignKey("registered_models.name"), primary_key=True),
    Column("alias", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Every alias move: who, when, from which version to which, and why.
alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(256), nullable=False),
    Column("alias", String(128), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),  # NULL when the alias is removed
    Column("author", String(256), nullable=True),
    Column("reason", Text, nullable=True),
    Column("at", BigInteger, nullable=False),
    Index("ix_alias_history_model", "model_name", "alias", "at"),
)

# Append-only record of every state, alias and registration change.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(256), nullable=True),
    Column("action", String(64), nullable=False),
    Column("entity_kind", String(32), nullable=False),
    Column("entity_ref", String(512), nullable=False),
    Column("details", JSON, nullable=True),
    Index("ix_audit_log_entity", "entity_kind", "entity_ref"),
)

# One row per feature view: its current version and the metadata shown by `keel features list`.
feature_views = Table(
    "feature_views",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("current_version", SHA, nullable=False),
    Column("owner", String(256), nullable=False),
    Column("description", Text, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    # batch (FeatureView) | on_demand (OnDemandFeatureView) | service (FeatureService)
    Column("kind", String(16), nullable=False, server_default="batch"),
)

# Every version a feature view ever had (append-only): the canonical definition it hashes.
feature_view_versions = Table(
    "feature_view_versions",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("version", SHA, primary_key=True),  # keel.features.versioning.view_version
    Column("definition", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=True),
)

# One row per successful materialization of a view into the online store. ``watermark`` is what
# the next incremental run starts from: the event-time end, the newest ingestion time seen and
# the source files read (path -> [size, mtime]), so rows that arrive late are still applied.
feature_materializations = Table(
    "feature_materializations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("view", String(256), nullable=False),
    Column("version", SHA, nullable=False),
    Column("mode", String(16), nullable=False),  # full | incremental
    Column("start_us", BigInteger, nullable=True),  # event-time range, epoch microseconds
    Column("end_us", BigInteger, nullable=False),
    Column("watermark", JSON, nullable=False),
    Column("rows_read", BigInteger, nullable=False),
    Column("rows_written", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger, nullable=False),
    Column("author", String(256), nullable=True),
    Index("ix_feature_materializations_view", "view", "finished_at"),
)

# The deployment in force on each endpoint; ``version`` grows by one on every change, so a
# reader can tell whether what it holds is current.
deployments = Table(
    "deployments",
    metadata,
    Column("endpoint", String(256), primary_key=True),
    Column("spec", JSON, nullable=False),  # keel.deploy.spec.DeploymentSpec.to_dict()
    Column("version", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Every deployment change (append-only), with the spec in force after it: the answer to
# "what served this endpoint at time T".
deployment_events = Table(
    "deployment_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("endpoint", String(256), nullable=False),
    Column("version", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("author", String(256), nullable=True),
    Column("reason", Text, nullable=True),
    Column("action", String(32), nullable=False),
    Column("spec", JSON, nullable=False),
    UniqueConstraint("endpoint", "version"),
    Index("ix_deployment_events_endpoint_at", "endpoint", "at"),
)
