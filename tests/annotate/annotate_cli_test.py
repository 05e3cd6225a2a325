"""`batgpt annotate ...` goes through the main CLI without loading JAX or TensorFlow."""

import json
import os
import subprocess
import sys

import sqlalchemy as sa

from batgpt_jax.annotate import db, models

PROBE = """
import json, sys
from batgpt_jax import cli
try:
  code = cli.main(sys.argv[1:])
except SystemExit as exit:
  code = exit.code
heavy = sorted(m for m in ("jax", "jaxlib", "tensorflow", "flax", "torch") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _batgpt(*args: str):
  """Runs `batgpt ARGS` in a fresh interpreter; returns the process and what it loaded."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                        timeout=120, check=False, env=env)
  return done, json.loads(done.stdout.strip().splitlines()[-1])


def test_annotate_help_and_commands_load_no_jax_or_tensorflow(tmp_path):
  done, result = _batgpt("annotate", "--help")
  assert result == {"code": 0, "heavy": []}
  for name in ("init-db", "serve", "add-user", "import", "export", "stats"):
    assert name in done.stdout
  url = f"sqlite:///{tmp_path / 'cli.db'}"
  done, result = _batgpt("annotate", "init-db", "--db", url)
  assert result == {"code": 0, "heavy": []} and "revision 0001 (head)" in done.stdout
  engine = db.make_engine(url)
  with engine.connect() as connection:
    assert connection.scalar(sa.select(sa.func.count()).select_from(models.User)) == 0
    assert connection.scalar(sa.select(models.Setting.value)
                             .where(models.Setting.key == "secret_key"))  # one key for all servers
  engine.dispose()
  done, result = _batgpt("annotate", "export", "--db", url, "--project", "none", "--output",
                         str(tmp_path / "x.jsonl"))
  assert result["heavy"] == [] and "no project 'none'" in str(result["code"])


def test_wsgi_module_builds_the_app_from_the_environment(sqlite_url):
  probe = ("from batgpt_jax.annotate import wsgi\n"
           "client = wsgi.application.test_client()\n"
           "print(client.get('/healthz').status_code, client.get('/login').status_code,\n"
           "      wsgi.application.config['SESSION_COOKIE_SECURE'])\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), BATGPT_ANNOTATE_DB=sqlite_url,
             BATGPT_ANNOTATE_SECURE_COOKIES="1")
  done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                        timeout=120, check=False, env=env)
  assert done.stdout.split() == ["200", "200", "True"], done.stderr
  del env["BATGPT_ANNOTATE_DB"]
  done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                        timeout=120, check=False, env=env)
  assert "set BATGPT_ANNOTATE_DB" in done.stderr
