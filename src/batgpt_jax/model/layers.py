"""BatGPT layers: RMSNorm, embedding, RoPE, grouped-query attention and the SwiGLU MLP.

Parameters carry logical axis names in their `out_sharding` metadata; `parallel.py` maps them to
the mesh. Activations are computed in `cfg.dtype`, parameters are stored in `cfg.params_dtype`.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from batgpt_jax import parallel
from batgpt_jax.model.config import ModelConfig


def _param(rngs: nnx.Rngs, init, shape, names, dtype) -> nnx.Param:
  return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=names)


def _normal(std: float):
  return jax.nn.initializers.normal(stddev=std)


class RMSNorm(nnx.Module):
  """x / rms(x) * scale, computed in float32 whatever the compute dtype."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.eps = cfg.norm_eps
    self.dtype = cfg.dtype
    self.scale = _param(rngs, jax.nn.initializers.ones, (cfg.hidden,), ("embed",),
                        cfg.params_dtype)

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class Embed(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.dtype = cfg.dtype
    self.embedding = _param(rngs, _normal(cfg.init_std), (cfg.vocab_size, cfg.hidden),
                            ("vocab", "embed"), cfg.params_dtype)

  def __call__(self, tokens):  # [batch, length] -> [batch, length, hidden]
    return jnp.take(self.embedding[...], tokens, axis=0).astype(self.dtype)


def rope_angles(positions, rope_dim: int, base: float):
  """[batch, length] -> cos, sin of shape [batch, length, rope_dim // 2], float32."""
  inv_freq = 1.0 / (base ** (jnp.arange(0, rope_dim, 2, dtype=jnp.float32) / rope_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, cos, sin, rope_dim: int, style: str):
  """Rotates the first `rope_dim` features of each head; the rest pass through.

  x: [batch, length, heads, head_dim]; cos, sin: [batch, length, rope_dim // 2].
  'interleaved' rotates pairs (2i, 2i+1) as BatGPT and ChatGLM do; 'half_split' rotates pairs
  (i, i + rope_dim/2) as Llama and Qwen do.
  """
  rot, rest = x[..., :rope_dim].astype(jnp.float32), x[..., rope_dim:]
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  if style == "interleaved":
    pairs = rot.reshape(rot.shape[:-1] + (rope_dim // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    rot = jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(rot.shape)
  else:
    a, b = rot[..., : rope_dim // 2], rot[..., rope_dim // 2:]
    rot = jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
  return jnp.concatenate([rot.astype(x.dtype), rest], axis=-1)


def attention_mask(segment_ids):
  """Causal within each packed document: [batch, length] -> [batch, 1, length, length] bool."""
  length = segment_ids.shape[-1]
  causal = jnp.tril(jnp.ones((length, length), dtype=bool))
  same_doc = segment_ids[:, :, None] == segment_ids[:, None, :]
  return (causal[None] & same_doc)[:, None]


class Attention(nnx.Module):
  """Grouped-query attention: n_heads queries share n_kv_heads key/value heads (MHA, GQA, MQA)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    d, h, kv, hd, pd = cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.params_dtype
    init = _normal(cfg.init_std)
    self.q = _param(rngs, init, (d, h, hd), ("embed", "heads", "head_dim"), pd)
    self.k = _param(rngs, init, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd)
    self.v = _param(rngs, init, (d, kv, hd), ("embed", "kv_heads", "head_dim"), pd)
    self.o = _param(rngs, init, (h, hd, d), ("heads", "head_dim", "embed"), pd)
    if cfg.qkv_bias:
      zeros = jax.nn.initializers.zeros
      self.q_bias = _param(rngs, zeros, (h, hd), ("heads", "head_dim"), pd)
      self.k_bias = _param(rngs, zeros, (kv, hd), ("kv_heads", "head_dim"), pd)
      self.v_bias = _param(rngs, zeros, (kv, hd), ("kv_heads", "head_dim"), pd)

  def _project(self, x, kernel, bias, names):
    y = jnp.einsum("bld,dhk->blhk", x, kernel[...].astype(x.dtype))
    if bias is not None:
      y = y + bias[...].astype(x.dtype)
    return parallel.constrain(y, names)

  def _rotated_qkv(self, x, positions):
    """q [batch, length, heads, head_dim] and k, v [batch, length, kv_heads, head_dim]."""
    cfg = self.cfg
    bias = (lambda name: getattr(self, name)) if cfg.qkv_bias else (lambda name: None)
    q = self._project(x, self.q, bias("q_bias"), ("batch", "length", "heads", "head_dim"))
    k = self._project(x, self.k, bias("k_bias"), ("batch", "length", "kv_heads", "head_dim"))
    v = self._project(x, self.v, bias("v_bias"), ("batch", "length", "kv_heads", "head_dim"))
    cos, sin = rope_angles(positions, cfg.rope_dim, cfg.rope_base)
    q = apply_rope(q, cos, sin, cfg.rope_dim, cfg.rope_style)
    k = apply_rope(k, cos, sin, cfg.rope_dim, cfg.rope_style)
    return q, k, v

  def __call__(self, x, positions, segment_ids):  # x: [batch, length, hidden]
    q, k, v = self._rotated_qkv(x, positions)
    out = jax.nn.dot_product_attention(q, k, v, mask=attention_mask(segment_ids))
    # out: [batch, length, heads, head_dim]
    return jnp.einsum("blhk,hkd->bld", out, self.o[...].astype(x.dtype))

  def decode(self, x, positions, cache, index, start):
    """Attention of `t` new tokens over a KV cache of `slots` entries per row.

    x: [batch, t, hidden], written to cache slots index .. index+t-1 (the same for every row);
    positions: [batch, t]; cache: {'k', 'v'}, each [batch, slots, kv_heads, head_dim];
    start: [batch], each row's first real slot (rows are left-padded; earlier slots are masked).
    Returns the output [batch, t, hidden] and the updated cache.
    """
    q, k, v = self._rotated_qkv(x, positions)
    cache = {name: jax.lax.dynamic_update_slice(cache[name], new.astype(cache[name].dtype),
                                                (0, index, 0, 0))
             for name, new in (("k", k), ("v", v))}
    slots = jnp.arange(cache["k"].shape[1])
    query_slots = index + jnp.arange(x.shape[1])
    mask = ((slots[None, None, :] <= query_slots[None, :, None])
            & (slots[None, None, :] >= start[:, None, None]))  # [batch, t, slots]
    out = jax.nn.dot_product_attention(q, cache["k"], cache["v"], mask=mask[:, None])
    return jnp.einsum("blhk,hkd->bld", out, self.o[...].astype(x.dtype)), cache


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    init, pd = _normal(cfg.init_std), cfg.params_dtype
    self.gate = _param(rngs, init, (cfg.hidden, cfg.ffn), ("embed", "mlp"), pd)
    self.up = _param(rngs, init, (cfg.hidden, cfg.ffn), ("embed", "mlp"), pd)
    self.down = _param(rngs, init, (cfg.ffn, cfg.hidden), ("mlp", "embed"), pd)

  def __call__(self, x):
    gate = x @ self.gate[...].astype(x.dtype)
    up = x @ self.up[...].astype(x.dtype)
    hidden = parallel.constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
    return hidden @ self.down[...].astype(x.dtype)
