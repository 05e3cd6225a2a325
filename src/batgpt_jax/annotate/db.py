"""Engines and sessions: SQLite (WAL, durable sync, one writer at a time) or PostgreSQL by URL."""

import contextlib
import datetime
import pathlib

import sqlalchemy as sa
from sqlalchemy import event, orm

SQLITE_BUSY_MS = 30_000


def utcnow() -> datetime.datetime:
  """Naive UTC: SQLite keeps no time zone, so every timestamp is stored the same way."""
  return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def normalize_url(url: str) -> str:
  """A plain path means SQLite; `postgresql://` means psycopg 3 (the driver we install)."""
  if "://" not in url:
    return f"sqlite:///{pathlib.Path(url).resolve()}"
  if url.startswith(("postgresql://", "postgres://")):
    return "postgresql+psycopg://" + url.split("://", 1)[1]
  return url


def _sqlite_pragmas(engine: sa.Engine) -> None:
  @event.listens_for(engine, "connect")
  def _on_connect(dbapi_connection, _record):
    # The driver's own transaction handling would delay BEGIN; we issue it ourselves below.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    # FULL: a judgment answered 2xx survives a power cut, not only a killed process.
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()

  @event.listens_for(engine, "begin")
  def _on_begin(connection):
    # IMMEDIATE takes the write lock at BEGIN: two requests that read-then-write (leases) run
    # one after the other instead of both reading the same free slot. Pure reads (see
    # `session_factory(read_only=True)`) begin DEFERRED and, under WAL, wait for no writer.
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str) -> sa.Engine:
  url = normalize_url(url)
  if url.startswith("sqlite"):
    if url in ("sqlite://", "sqlite:///:memory:"):
      raise ValueError("annotate database: an in-memory SQLite database is lost at exit and not "
                       "shared between requests; give a file path such as annotate.db.")
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000,
                                                 "check_same_thread": False})
    _sqlite_pragmas(engine)
    return engine
  return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def session_factory(engine: sa.Engine, read_only: bool = False) -> orm.sessionmaker:
  """Sessions for read-write work, or (`read_only`) for pages that only read."""
  if read_only:
    engine = engine.execution_options(sqlite_begin="DEFERRED")
  return orm.sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def transaction(factory: orm.sessionmaker):
  """One unit of work: commits on success, rolls back on any error."""
  with factory() as session, session.begin():
    yield session


RETRY_SQLSTATES = ("40P01", "40001")  # PostgreSQL: deadlock detected, serialization failure


def run(factory: orm.sessionmaker, work, attempts: int = 3, retry_integrity: bool = False):
  """`work(session)` in a transaction, retried when the database asks for it (deadlock) or, with
  `retry_integrity`, when a concurrent request inserted the same unique row first."""
  for attempt in range(attempts):
    try:
      with transaction(factory) as session:
        return work(session)
    except sa.exc.DBAPIError as err:
      retry = (getattr(err.orig, "sqlstate", None) in RETRY_SQLSTATES
               or (retry_integrity and isinstance(err, sa.exc.IntegrityError)))
      if not retry or attempt + 1 == attempts:
        raise
  raise AssertionError("unreachable")
