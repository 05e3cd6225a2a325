"""Helpers the tests share (imported as `testlib`; `conftest.py` holds the fixtures).

Not in conftest.py: pytest may register more than one conftest module under the name
`conftest` (tests/annotate has its own), so `from conftest import ...` is not reliable.
"""

import os
import pathlib
import signal

import gin

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


def assert_equal_batches(a: list[dict], b: list[dict]) -> None:
  """The same batches: the same keys, and every array equal."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def preempt_at_batch(monkeypatch, n: int) -> list:
  """SIGTERM to this process when the n-th training batch of the test is taken, so that it
  arrives while that step runs. Returns the list that counts the batches taken."""
  from batgpt_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  real_next, taken = pipeline.TrainBatches.__next__, []

  def next_batch(batches):
    taken.append(1)
    if len(taken) == n:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_next(batches)

  monkeypatch.setattr(pipeline.TrainBatches, "__next__", next_batch)
  return taken


def direct_continuation_logprob(cfg, params, context, continuation) -> tuple[float, bool]:
  """(summed log-probability of `continuation` after `context`, whether every token is the
  argmax) from one unpadded forward pass of the ids alone: what evaluation scorers must equal."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from batgpt_jax.model import transformer  # pylint: disable=import-outside-toplevel
  ids = [int(i) for i in list(context) + list(continuation)]
  inputs = jnp.asarray([ids[:-1]], jnp.int32)
  positions = jnp.arange(inputs.shape[1])[None]
  logits = jax.jit(transformer.apply, static_argnums=0)(cfg, params, inputs, positions,
                                                         jnp.ones_like(inputs))
  logp = np.asarray(jax.nn.log_softmax(logits))[0]
  rows = range(len(context) - 1, len(ids) - 1)
  return (sum(float(logp[r, ids[r + 1]]) for r in rows),
          all(int(np.argmax(logp[r])) == ids[r + 1] for r in rows))
