"""Test set-up: 8 fake CPU devices (for the sharding tests), the gin rules, small shared helpers."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import gin  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
GIN_DIR = REPO / "gin"


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
