"""Test set-up: 8 fake CPU devices (for the sharding tests), the gin rules, small shared helpers."""

import atexit
import os
import shutil
import tempfile


def _pin_worker_to_its_cores():
  """Gives each pytest-xdist worker its own share of the cores (one core each under `-n auto`).

  XLA splits every op over a thread per core and waits for the slowest; when the workers'
  threads share all the cores, each op waits on threads the other worker has descheduled. On
  this project's 2-core machine two pinned workers ran the PPO invariance file in 185-197 s,
  against 252-255 s unpinned (the same file twice at once). The tests' subprocesses inherit the
  worker's cores. Must run before XLA creates its thread pools."""
  worker = os.environ.get("PYTEST_XDIST_WORKER", "")
  workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
  if not worker.startswith("gw") or workers < 2 or not hasattr(os, "sched_setaffinity"):
    return
  cores = sorted(os.sched_getaffinity(0))
  index = int(worker[2:])  # 0 .. workers - 1
  share = cores[index::workers] or [cores[index % len(cores)]]  # more workers than cores: shared
  os.sched_setaffinity(0, share)


_pin_worker_to_its_cores()
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
# The flags `batgpt` runs with (batgpt_jax/xla_flags.py), here and, through XLA_FLAGS, in the
# `batgpt` subprocesses the tests start: the tests check what users run, and it is faster.
from batgpt_jax import xla_flags  # noqa: E402

xla_flags.apply_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One XLA compilation cache for the session, inherited by the `batgpt` subprocesses the tests
# start: the same tiny train step is compiled by dozens of tests and processes, once is enough.
# Entries are keyed by the program, the devices and XLA_FLAGS, so a hit is the same executable.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="batgpt-test-xla-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import gin  # noqa: E402
import pytest  # noqa: E402

from testlib import GIN_DIR, data_sentences  # noqa: E402


@pytest.fixture
def axis_rules():
  """The logical axis rules of gin/mesh/rules.gin."""
  from batgpt_jax import parallel  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  gin.parse_config_files_and_bindings([str(GIN_DIR / "mesh" / "rules.gin")], [])
  rules = parallel.check_rules(parallel.MeshConfig().axis_rules)
  gin.clear_config()
  return rules


@pytest.fixture(autouse=True)
def _clean_gin():
  yield
  gin.clear_config()


# --- data: a tiny SentencePiece model shared by tests/data (trained once per session, ~0.2 s) ---

@pytest.fixture(scope="session")
def data_tiny_vocab_path(tmp_path_factory) -> str:
  """A 400-piece tokenizer trained on a few hundred generated sentences."""
  from batgpt_jax.data import vocab  # pylint: disable=import-outside-toplevel
  prefix = tmp_path_factory.mktemp("tiny_vocab") / "sp"
  return vocab.train_tokenizer(data_sentences(400), str(prefix), 400)


@pytest.fixture(scope="session")
def data_tiny_vocab(data_tiny_vocab_path):
  from batgpt_jax.data import vocab  # pylint: disable=import-outside-toplevel
  return vocab.load_vocabulary(data_tiny_vocab_path)
