import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax.model import layers
from batgpt_jax.model.config import ModelConfig


def _rope(x, positions, rope_dim, style, base=10000.0):
  cos, sin = layers.rope_angles(positions, rope_dim, base)
  return layers.apply_rope(x, cos, sin, rope_dim, style)


def test_interleaved_rotates_adjacent_pairs_by_position_times_frequency():
  head_dim, rope_dim = 8, 4
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 1, head_dim)), jnp.float32)
  positions = jnp.arange(3)[None]
  out = np.asarray(_rope(x, positions, rope_dim, "interleaved"))
  x = np.asarray(x)
  for p in range(3):
    for i in range(rope_dim // 2):
      theta = p * 10000.0 ** (-2 * i / rope_dim)
      a, b = x[0, p, 0, 2 * i], x[0, p, 0, 2 * i + 1]
      np.testing.assert_allclose(out[0, p, 0, 2 * i], a * np.cos(theta) - b * np.sin(theta),
                                 atol=1e-5)
      np.testing.assert_allclose(out[0, p, 0, 2 * i + 1], a * np.sin(theta) + b * np.cos(theta),
                                 atol=1e-5)
  # The unrotated half (BatGPT rotates half of each head) passes through untouched.
  np.testing.assert_array_equal(out[..., rope_dim:], x[..., rope_dim:])


def test_half_split_is_interleaved_with_permuted_features():
  rope_dim = 8
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 3, rope_dim)), jnp.float32)
  positions = jnp.tile(jnp.arange(5), (2, 1))
  # Feature i of the half-split layout is pair member (i mod d/2) of interleaved pair i // ...
  perm = np.concatenate([np.arange(0, rope_dim, 2), np.arange(1, rope_dim, 2)])
  half = _rope(x[..., perm], positions, rope_dim, "half_split")
  inter = _rope(x, positions, rope_dim, "interleaved")
  np.testing.assert_allclose(np.asarray(half), np.asarray(inter)[..., perm], atol=1e-6)


@pytest.mark.parametrize("style", ["interleaved", "half_split"])
def test_rope_scores_depend_only_on_relative_position(style):
  rng = np.random.default_rng(2)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  def score(pq, pk):
    rq = _rope(q, jnp.array([[pq]]), 16, style)
    rk = _rope(k, jnp.array([[pk]]), 16, style)
    return float(jnp.sum(rq * rk))
  assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
  assert score(7, 3) != pytest.approx(score(7, 5), abs=1e-3)


def test_attention_mask_is_causal_within_segments_only():
  mask = np.asarray(layers.attention_mask(jnp.array([[1, 1, 2, 2, 2, 0]])))[0, 0]
  expected = np.array([
      [1, 0, 0, 0, 0, 0],
      [1, 1, 0, 0, 0, 0],
      [0, 0, 1, 0, 0, 0],
      [0, 0, 1, 1, 0, 0],
      [0, 0, 1, 1, 1, 0],
      [0, 0, 0, 0, 0, 1],
  ], dtype=bool)
  np.testing.assert_array_equal(mask, expected)


def _reference_attention(attn, x, positions, segment_ids, cfg):
  """Plain multi-head attention written out, with each KV head repeated for its query group."""
  p = {name: np.asarray(getattr(attn, name)[...]) for name in ("q", "k", "v", "o", "q_bias",
                                                                "k_bias", "v_bias")}
  q = np.einsum("bld,dhk->blhk", x, p["q"]) + p["q_bias"]
  k = np.einsum("bld,dhk->blhk", x, p["k"]) + p["k_bias"]
  v = np.einsum("bld,dhk->blhk", x, p["v"]) + p["v_bias"]
  cos, sin = layers.rope_angles(positions, cfg.rope_dim, cfg.rope_base)
  q = np.asarray(layers.apply_rope(jnp.asarray(q), cos, sin, cfg.rope_dim, cfg.rope_style))
  k = np.asarray(layers.apply_rope(jnp.asarray(k), cos, sin, cfg.rope_dim, cfg.rope_style))
  group = cfg.n_heads // cfg.n_kv_heads
  k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
  scores = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(cfg.head_dim)
  mask = np.asarray(layers.attention_mask(segment_ids))
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
