"""`alembic upgrade head` on empty SQLite and PostgreSQL, and the schema it makes is the models'."""

import pathlib
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from alembic import autogenerate
from alembic.runtime import migration

from batgpt_jax.annotate import db, migrate, models


def test_upgrade_head_on_an_empty_database_matches_the_models(empty_db):
  engine = db.make_engine(empty_db)
  assert sa.inspect(engine).get_table_names() == []
  migrate.upgrade(engine)
  assert migrate.current_revision(engine) == migrate.head_revision() == "0001"
  tables = set(sa.inspect(engine).get_table_names())
  assert {t.name for t in models.Base.metadata.sorted_tables} <= tables
  with engine.connect() as connection:
    diff = autogenerate.compare_metadata(migration.MigrationContext.configure(connection),
                                         models.Base.metadata)
  assert diff == []  # the migration builds exactly the tables, columns and indexes of models.py
  migrate.upgrade(engine)  # a second upgrade is a no-op
  assert migrate.current_revision(engine) == "0001"
  engine.dispose()


def test_audit_log_refuses_update_and_delete(db_url):
  engine = db.make_engine(db_url)
  with db.transaction(db.session_factory(engine)) as session:
    session.add(models.AuditLog(action="login", username="x"))
  for statement in ("UPDATE audit_log SET action = 'edited'", "DELETE FROM audit_log"):
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
      with engine.begin() as connection:
        connection.exec_driver_sql(statement)
  with engine.connect() as connection:
    assert connection.execute(sa.text("SELECT action FROM audit_log")).scalars().all() == ["login"]
  engine.dispose()


def test_sqlite_runs_in_wal_with_full_sync(sqlite_url):
  engine = db.make_engine(sqlite_url)
  with engine.connect() as connection:
    assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
  engine.dispose()


def test_serving_an_unmigrated_database_says_what_to_run(tmp_path):
  engine = db.make_engine(str(tmp_path / "new.db"))
  with pytest.raises(SystemExit, match="init-db"):
    migrate.require_head(engine)
  engine.dispose()


def test_alembic_command_line_upgrade_head(empty_db):
  """The shipped alembic.ini: `alembic -c .../alembic.ini -x db=URL upgrade head`."""
  ini = pathlib.Path(migrate.__file__).with_name("alembic.ini")
  for verb in (["upgrade", "head"], ["current"]):
    done = subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"db={empty_db}",
                           *verb], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
  assert "0001 (head)" in done.stdout
  engine = db.make_engine(empty_db)
  assert migrate.current_revision(engine) == "0001"
  assert "judgments" in sa.inspect(engine).get_table_names()
  engine.dispose()


def test_sqlite_pages_that_only_read_do_not_wait_for_a_writer(sqlite_url):
  engine = db.make_engine(sqlite_url)
  with engine.connect() as writer:
    writer.begin()  # BEGIN IMMEDIATE: holds the write lock
    writer.exec_driver_sql("INSERT INTO settings (key, value) VALUES ('k', 'uncommitted')")
    started = time.monotonic()
    with db.transaction(db.session_factory(engine, read_only=True)) as session:
      assert session.scalar(sa.select(sa.func.count()).select_from(models.Setting)) == 0
    assert time.monotonic() - started < 2  # not the 30 s busy timeout
    writer.rollback()
  engine.dispose()
