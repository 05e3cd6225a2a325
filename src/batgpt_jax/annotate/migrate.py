"""Alembic migrations shipped inside the package: `upgrade` brings any database to head."""

import pathlib

import sqlalchemy as sa
from alembic import command, script
from alembic.config import Config
from alembic.runtime import migration

MIGRATIONS = pathlib.Path(__file__).resolve().parent / "migrations"


def alembic_config(connection=None) -> Config:
  config = Config()
  config.set_main_option("script_location", str(MIGRATIONS))
  config.attributes["connection"] = connection
  return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
  with engine.begin() as connection:
    command.upgrade(alembic_config(connection), revision)


def current_revision(engine: sa.Engine) -> str | None:
  with engine.connect() as connection:
    return migration.MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
  return script.ScriptDirectory.from_config(alembic_config()).get_current_head()


def require_head(engine: sa.Engine) -> None:
  """Refuses to serve a database whose schema is older (or newer) than this code."""
  current, head = current_revision(engine), head_revision()
  if current != head:
    raise SystemExit(f"error: the annotation database is at revision {current}, this code needs "
                     f"{head}. Run `batgpt annotate init-db --db URL` to migrate it.")
