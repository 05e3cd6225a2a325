import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax.model import attention, layers, rope
from batgpt_jax.model.config import ModelConfig


def _reference_attention(attn, x, positions, segment_ids, cfg):
  """Plain multi-head attention written out, with each KV head repeated for its query group."""
  p = {name: np.asarray(getattr(attn, name)[...]) for name in ("q", "k", "v", "o", "q_bias",
                                                                "k_bias", "v_bias")}
  q = np.einsum("bld,dhk->blhk", x, p["q"]) + p["q_bias"]
  k = np.einsum("bld,dhk->blhk", x, p["k"]) + p["k_bias"]
  v = np.einsum("bld,dhk->blhk", x, p["v"]) + p["v_bias"]
  cos, sin = rope.angles(positions, cfg)
  q = np.asarray(rope.apply_rope(jnp.asarray(q), cos, sin, cfg.rope_dim, cfg.rope_style))
  k = np.asarray(rope.apply_rope(jnp.asarray(k), cos, sin, cfg.rope_dim, cfg.rope_style))
  group = cfg.n_heads // cfg.n_kv_heads
  k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
  scores = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(cfg.head_dim)
  segments, index = attention.self_attention_index(jnp.asarray(segment_ids))
  mask = np.asarray(attention.visible(segments, segments, index, index))[:, None]
  scores = np.where(mask, scores, -1e30)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bhqs,bshk->bqhk", weights, v)
  return np.einsum("blhk,hkd->bld", out, p["o"])


@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (4, 1)])  # MHA, GQA, MQA
def test_grouped_query_attention_matches_reference(n_heads, n_kv_heads):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  cfg = ModelConfig(n_heads=n_heads, n_kv_heads=n_kv_heads, init_std=0.2, rope_fraction=0.5)
  attn = layers.Attention(cfg, nnx.Rngs(params=0))
  for name in ("q_bias", "k_bias", "v_bias"):  # non-zero biases so they are exercised
    var = getattr(attn, name)
    var[...] = jax.random.normal(jax.random.key(3), var.shape) * 0.1
  x = np.random.default_rng(4).normal(size=(2, 6, cfg.hidden)).astype(np.float32)
  positions = jnp.array([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])
  segments = jnp.array([[1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 0]])
  got = np.asarray(attn(jnp.asarray(x), positions, segments))
  want = _reference_attention(attn, x, positions, segments, cfg)
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_rmsnorm_normalises_then_scales():
  from flax import nnx  # pylint: disable=import-outside-toplevel
  cfg = ModelConfig(hidden=8)
  norm = layers.RMSNorm(cfg, nnx.Rngs(params=0))
  norm.scale[...] = jnp.arange(1.0, 9.0)
  x = jnp.asarray(np.random.default_rng(5).normal(size=(3, 8)), jnp.float32)
  want = np.asarray(x) / np.sqrt(np.mean(np.asarray(x) ** 2, -1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(norm(x)), want * np.arange(1.0, 9.0), rtol=1e-5)
