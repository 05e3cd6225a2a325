"""Fixtures for the annotation app: databases (SQLite, a real PostgreSQL), users, a live server,
headless Chromium.

PostgreSQL: $BATGPT_TEST_POSTGRES_URL when set (CI sets it), else a throwaway cluster from
Debian's binaries on a free loopback port, else the PostgreSQL variants skip. With CI=true a
missing PostgreSQL or Chromium fails instead of skipping.
"""

import contextlib
import datetime
import glob
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings

import argon2
import pytest
import sqlalchemy as sa

from batgpt_jax.annotate import app as app_module, db, exchange, migrate, models

CHROMIUM = os.environ.get("BATGPT_TEST_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "correct horse battery"
_database_numbers = itertools.count()


def missing(what: str, how: str):
  """Skips, or fails under CI=true, where a test needs a tool that is not there."""
  message = f"{what} is not available: {how}"
  if IN_CI:
    pytest.fail(f"CI=true and {message}", pytrace=False)
  pytest.skip(message)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def _throwaway_cluster():
  binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
  if not binaries:
    missing("PostgreSQL", "set BATGPT_TEST_POSTGRES_URL or `apt-get install postgresql`.")
  bin_dir = os.path.dirname(binaries[-1])
  data = tempfile.mkdtemp(prefix="batgpt-annotate-pg-")
  as_postgres = []
  if os.geteuid() == 0:  # PostgreSQL refuses to run as root
    shutil.chown(data, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
  port = free_port()
  subprocess.run(as_postgres + [f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres",
                                "--no-sync"], check=True, capture_output=True)
  options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
  subprocess.run(as_postgres + [f"{bin_dir}/pg_ctl", "-D", data, "-o", options, "-w", "-l",
                                f"{data}/log", "start"], check=True, capture_output=True)
  try:
    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
  finally:
    subprocess.run(as_postgres + [f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                   capture_output=True)
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
  """A URL of a PostgreSQL database whose user may CREATE DATABASE."""
  url = os.environ.get("BATGPT_TEST_POSTGRES_URL")
  if url:
    yield url
    return
  with _throwaway_cluster() as url:
    yield url


def fresh_postgres(server_url: str) -> str:
  name = f"annotate_{os.getpid()}_{next(_database_numbers)}"
  engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
  with engine.connect() as connection:
    connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    connection.exec_driver_sql(f"CREATE DATABASE {name}")
  engine.dispose()
  return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres(server_url: str, url: str, attempts: int = 5) -> None:
  """Drops a test database. Housekeeping only: an autovacuum worker still in it can refuse a
  non-superuser for a moment, so this retries, and at worst leaves the database behind."""
  name = sa.make_url(url).database
  engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
  try:
    for attempt in range(attempts):
      try:
        with engine.connect() as connection:
          connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return
      except sa.exc.DBAPIError as err:
        if attempt + 1 == attempts:
          warnings.warn(f"could not drop test database {name}: {err.orig}")
        time.sleep(0.5)
  finally:
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
  """An empty database of each kind (no tables); a PostgreSQL one is dropped afterwards."""
  if request.param == "sqlite":
    yield f"sqlite:///{tmp_path / 'annotate.db'}"
    return
  server = request.getfixturevalue("postgres_server")
  url = fresh_postgres(server)
  yield url
  drop_postgres(server, url)


@pytest.fixture
def db_url(empty_db):
  """A migrated database of each kind."""
  engine = db.make_engine(empty_db)
  migrate.upgrade(engine)
  engine.dispose()
  return empty_db


@pytest.fixture
def sqlite_url(tmp_path):
  url = f"sqlite:///{tmp_path / 'annotate.db'}"
  engine = db.make_engine(url)
  migrate.upgrade(engine)
  engine.dispose()
  return url


_HASH = []


def add_users(url: str, names_roles: dict[str, str]) -> None:
  """Accounts with PASSWORD, sharing one argon2id hash of low cost: the hash carries its own
  parameters, so logins verify it as any other, only faster (the real cost is slow on purpose;
  the hash test goes through `add-user`)."""
  if not _HASH:
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    _HASH.append(cheap.hash(PASSWORD))
  engine = db.make_engine(url)
  with db.transaction(db.session_factory(engine)) as session:
    for name, role in names_roles.items():
      session.add(models.User(username=name, role=role, password_hash=_HASH[0],
                              session_token=secrets.token_hex(16)))
  engine.dispose()


def import_items(url: str, project: str, records: list[dict], **settings) -> None:
  engine = db.make_engine(url)
  with db.transaction(db.session_factory(engine)) as session:
    target = exchange.get_or_create_project(session, project, **settings)
    exchange.import_records(session, target, [json.dumps(r) for r in records])
  engine.dispose()


def items(count: int, start: int = 0) -> list[dict]:
  return [{"id": f"item-{i}", "prompt": f"Question {i}: what is {i} + {i}?",
           "responses": [{"text": f"It is {2 * i}.", "model": "ckpt-a"},
                         {"text": f"Maybe {2 * i + 1}.", "model": "ckpt-b"}]}
          for i in range(start, start + count)]


def count_rows(url: str, table) -> int:
  engine = db.make_engine(url)
  with engine.connect() as connection:
    found = connection.scalar(sa.select(sa.func.count()).select_from(table))
  engine.dispose()
  return found


def table_counts(url: str) -> dict:
  engine = db.make_engine(url)
  with engine.connect() as connection:
    found = {t.name: connection.scalar(sa.select(sa.func.count()).select_from(t))
             for t in models.Base.metadata.sorted_tables}
  engine.dispose()
  return found


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
  return CSRF.search(html).group(1)


def login(client, username: str, password: str = PASSWORD, address: str = "127.0.0.1"):
  token = csrf_of(client.get("/login").text)
  return client.post("/login", data={"username": username, "password": password,
                                     "csrf_token": token},
                     environ_base={"REMOTE_ADDR": address})


@pytest.fixture
def make_app():
  made = []

  def build(url):
    application = app_module.create_app(url)
    application.config["TESTING"] = True
    made.append(application)
    return application

  yield build
  for application in made:
    app_module.dispose(application)


def filled_form(token: str, choice: str = "A2") -> dict:
  return {"csrf_token": token, "choice": choice, "acceptable_left": "yes",
          "acceptable_right": "no", "helpfulness_left": "4", "helpfulness_right": "2",
          "action": "submit"}


@contextlib.contextmanager
def live_server(url: str, threads: int = 8):
  """`python -m batgpt_jax.annotate serve` as a real process on a free loopback port."""
  port = free_port()
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  process = subprocess.Popen(
      [sys.executable, "-m", "batgpt_jax.annotate", "serve", "--db", url, "--host", "127.0.0.1",
       "--port", str(port), "--threads", str(threads)],
      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  base = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 30
  while True:
    try:
      with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
        if response.status == 200:
          break
    except OSError:
      if process.poll() is not None or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f"server did not start: {process.stderr.read().decode()[-2000:]}")
      time.sleep(0.1)
  try:
    yield base, process
  finally:
    if process.poll() is None:
      process.kill()
    process.wait(timeout=10)
    process.stderr.close()


@pytest.fixture(scope="module")
def chromium():
  """Headless Debian Chromium driven by Playwright (never `playwright install`)."""
  if not os.path.exists(CHROMIUM):
    missing("Chromium", f"no browser at {CHROMIUM}; `apt-get install chromium`.")
  try:
    from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel
  except ImportError:
    missing("Playwright", "pip install -e '.[test,annotate]'.")
  with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
    yield browser
    browser.close()


def judge_by_hand(session, comparison, user, value, left_is_a=True, strength=2):
  """Writes a lease and a judgment by hand; `value` is the canonical label or 'skipped'."""
  a, b = comparison.response_a_id, comparison.response_b_id
  left, right = (a, b) if left_is_a else (b, a)
  lease = models.Assignment(comparison_id=comparison.id, user_id=user.id, left_response_id=left,
                            right_response_id=right, done=True,
                            expires_at=db.utcnow() + datetime.timedelta(hours=1))
  session.add(lease)
  session.flush()
  preferred = {"a": a, "b": b}.get(value)
  session.add(models.Judgment(
      assignment_id=lease.id, comparison_id=comparison.id, user_id=user.id,
      left_response_id=left, right_response_id=right,
      outcome="preferred" if preferred else value, preferred_response_id=preferred,
      strength=strength if preferred else None, prompt_flags=[], comment="",
      skip_reason="other" if value == "skipped" else None))


def build_stats_fixture(url: str) -> None:
  """The hand-computed statistics fixture (annotate_stats_test.py works its numbers out):
  labellers u1-u3, models m1 and m2, four items, two gold items, an AI judge."""
  add_users(url, {"u1": "labeller", "u2": "labeller", "u3": "labeller"})
  records = [{"id": f"c{i}", "prompt": f"p{i}",
              "responses": [{"text": "first", "model": "m1"}, {"text": "second", "model": "m2"}]}
             for i in range(1, 5)]
  records[0]["ai_labels"] = [{"labeller": "judge", "chosen": 0, "rejected": 1}]   # a
  records[1]["ai_labels"] = [{"labeller": "judge", "chosen": 0, "rejected": 1}]   # a
  records[2]["ai_labels"] = [{"labeller": "judge", "chosen": 1, "rejected": 0}]   # b
  records[3]["ai_labels"] = [{"labeller": "judge", "tie": True}]
  records += [{"id": "g5", "prompt": "gold a", "gold": 0,
               "responses": [{"text": "good", "model": "m1"}, {"text": "bad", "model": "m2"}]},
              {"id": "g6", "prompt": "gold tie", "gold": "tie",
               "responses": [{"text": "same", "model": "m1"}, {"text": "same!", "model": "m2"}]}]
  import_items(url, "fixture", records)
  engine = db.make_engine(url)
  with db.transaction(db.session_factory(engine)) as session:
    c = {cmp.id: cmp for cmp in session.scalars(sa.select(models.Comparison))}
    u = {user.username: user for user in session.scalars(sa.select(models.User))}
    judge_by_hand(session, c[1], u["u1"], "a", left_is_a=True)     # chose left
    judge_by_hand(session, c[1], u["u2"], "a", left_is_a=False)    # chose right
    judge_by_hand(session, c[1], u["u3"], "a", left_is_a=True)     # chose left
    judge_by_hand(session, c[2], u["u1"], "b", left_is_a=True)     # right
    judge_by_hand(session, c[2], u["u2"], "b", left_is_a=False)    # left
    judge_by_hand(session, c[3], u["u1"], "a", left_is_a=True)     # left
    judge_by_hand(session, c[3], u["u2"], "b", left_is_a=True)     # right
    judge_by_hand(session, c[4], u["u1"], "tie")
    judge_by_hand(session, c[4], u["u2"], "tie")
    judge_by_hand(session, c[5], u["u1"], "a")                     # gold 'a': right
    judge_by_hand(session, c[5], u["u2"], "b")                     # gold 'a': wrong
    judge_by_hand(session, c[6], u["u1"], "tie")                   # gold 'tie': right
    judge_by_hand(session, c[6], u["u2"], "skipped")               # skips are not answers
  engine.dispose()
