"""BatGPT layers: RMSNorm, embedding, grouped-query attention and the SwiGLU MLP (RoPE: rope.py;
the attention kernels: attention.py).

Parameters carry logical axis names in their `out_sharding` metadata; `parallel.py` maps them to
the mesh. Activations are computed in `cfg.dtype`, parameters are stored in `cfg.params_dtype`.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from batgpt_jax import parallel
from batgpt_jax.model import attention, rope
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
    cos, sin = rope.angles(positions, cfg)
    q = rope.apply_rope(q, cos, sin, cfg.rope_dim, cfg.rope_style)
    k = rope.apply_rope(k, cos, sin, cfg.rope_dim, cfg.rope_style)
    return q, k, v

  def __call__(self, x, positions, segment_ids):  # x: [batch, length, hidden]
    q, k, v = self._rotated_qkv(x, positions)
    segments, index = attention.self_attention_index(segment_ids)
    out = attention.attend(q, k, v, segments, segments, index, index, impl=self.cfg.attention,
                           block=self.cfg.attention_block, self_attention=True)
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
    batch, slots = cache["k"].shape[:2]
    slot = jnp.broadcast_to(jnp.arange(slots, dtype=jnp.int32), (batch, slots))
    query_slot = jnp.broadcast_to(index + jnp.arange(x.shape[1], dtype=jnp.int32),
                                  (batch, x.shape[1]))
    # Segment 1 for the row's real slots, 0 for its left padding: no query sees the padding.
    out = attention.attend(q, cache["k"], cache["v"], jnp.ones_like(query_slot),
                           (slot >= start[:, None]).astype(jnp.int32), query_slot, slot,
                           impl=self.cfg.attention, block=self.cfg.attention_block)
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
