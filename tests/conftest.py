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


def mesh_config(shape=(-1, 1, 1)):
  """A MeshConfig of `shape` with the rules of gin/mesh/rules.gin."""
  from batgpt_jax import parallel  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  gin.parse_config_files_and_bindings([str(GIN_DIR / "mesh" / "rules.gin")], [])
  config = parallel.MeshConfig(shape=shape)
  gin.clear_config()
  return config


def random_logits(seed=0, shape=(2, 6), vocab=11):
  """(logits [*shape, vocab] float32, targets [*shape] int32), deterministic in `seed`."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=shape + (vocab,)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, vocab, shape), jnp.int32)
  return logits, targets


def trained_like_params(cfg, seed: int = 0) -> dict:
  """Random weights with gains and biases off 1 and 0, so that no growth rule hides behind them.
  (numpy, from the abstract shapes: building the NNX model costs seconds per config.)"""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from batgpt_jax.model import transformer  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, noise = str(path[-1].key), rng.standard_normal(leaf.shape)
    value = (1.0 + 0.3 * noise if name == "scale" else
             0.2 * noise if name.endswith("_bias") else cfg.init_std * noise)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, transformer.abstract_params(cfg))


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

_DATA_WORDS = ("the cat dog bird river town market baker sells bread walks runs sees small big "
               "red green old new morning evening rain sun and with to from of a is was").split()


def data_sentences(n: int, seed: int = 0) -> list[str]:
  """`n` distinct generated sentences (English plus a little Chinese), deterministic in `seed`."""
  import random  # pylint: disable=import-outside-toplevel
  rng = random.Random(seed)
  out = []
  for i in range(n):
    words = [rng.choice(_DATA_WORDS) for _ in range(rng.randint(4, 12))]
    tail = "今天天气很好。" if i % 7 == 0 else ""
    out.append(f"{' '.join(words).capitalize()} number {i}.{tail}")
  return out


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
