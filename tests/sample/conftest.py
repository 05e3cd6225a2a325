"""The sample tests' models (the `tiny` size, a 400-piece vocabulary, random weights) and the
full forward pass that the engine is checked against."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax import checkpoints
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import state as train_state

CONFIGS = {  # ModelConfig's defaults are the tiny size (gin/models/tiny.gin)
    "batgpt": ModelConfig(vocab_size=400, rope_style="interleaved", rope_fraction=0.5,
                          init_std=0.2),
    "llama": ModelConfig(vocab_size=400, rope_style="half_split", rope_fraction=1.0,
                         qkv_bias=False, n_kv_heads=1, init_std=0.2),
}


def random_params(cfg: ModelConfig, seed: int = 1) -> dict:
  """Random weights, gains around 1, non-zero biases: logits of order one."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(transformer.abstract_params(cfg))
  rng = np.random.default_rng(seed)
  return treedef.unflatten([
      jnp.asarray(float(str(path[-1].key) == "scale") + 0.15 * rng.normal(size=x.shape), x.dtype)
      for path, x in flat])


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
  cfg = CONFIGS[request.param]
  return cfg, random_params(cfg)


@pytest.fixture(scope="module")
def batgpt_model():
  cfg = CONFIGS["batgpt"]
  return cfg, random_params(cfg)


@pytest.fixture(scope="module")
def tiny_run(batgpt_model, tmp_path_factory) -> str:
  """A run directory holding `batgpt_model` as step 0 (what the commands read)."""
  cfg, params = batgpt_model
  run_dir = str(tmp_path_factory.mktemp("sample") / "run")
  checkpoints.write_run_dir(run_dir, cfg, params, train_state.OptimizerConfig())
  return run_dir


@functools.partial(jax.jit, static_argnums=0)
def _forward(cfg, params, tokens):
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  return transformer.apply(cfg, params, tokens, positions, jnp.ones_like(tokens))


def _full_logits(cfg, params, tokens, length: int = 64) -> np.ndarray:
  padded = np.zeros((1, length), np.int32)
  padded[0, :len(tokens)] = tokens
  return np.asarray(_forward(cfg, params, jnp.asarray(padded)))[0, :len(tokens)]


@pytest.fixture(scope="session")
def full_logits():
  """full_logits(cfg, params, tokens) -> [len(tokens), vocab]: the full forward pass of `tokens`
  alone, run at a fixed padded length (causal: the padding after them cannot matter)."""
  return _full_logits
