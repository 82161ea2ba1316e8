"""Apply Alembic migrations; refuse a database whose schema is newer than this code."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from keel.errors import SchemaTooNewError

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    return str(heads[0])


def upgrade(engine: Engine, revision: str | None) -> None:
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    if revision is not None and not _known(script, revision):
        raise SchemaTooNewError(
            f"the metadata database {engine.url.render_as_string(hide_password=True)} has schema "
            f"revision {revision!r}, newer than this Keel knows (head {head()!r}); "
            "upgrade Keel (pip install -U keel) before using this database"
        )
    with engine.connect() as conn:
        conn = conn.execution_options(keel_write=True)
        with conn.begin():
            if engine.dialect.name == "postgresql":
                # Concurrent first uses: one process migrates, the others wait and find it done.
                conn.execute(text("SELECT pg_advisory_xact_lock(724001)"))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises several resolution errors for an unknown id
        return False
