"""The BatGPT decoder: pre-norm blocks scanned over layers, untied LM head."""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from batgpt_jax import parallel
from batgpt_jax.model import layers
from batgpt_jax.model.config import ModelConfig

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
RESIDUAL = ("batch", "length", "embed")


class Block(nnx.Module):
  """x + attn(norm(x)), then + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.attn_norm = layers.RMSNorm(cfg, rngs)
    self.attn = layers.Attention(cfg, rngs)
    self.mlp_norm = layers.RMSNorm(cfg, rngs)
    self.mlp = layers.MLP(cfg, rngs)

  def __call__(self, x, positions, segment_ids):
    x = x + self.attn(self.attn_norm(x), positions, segment_ids)
    x = parallel.constrain(x, RESIDUAL)
    x = x + self.mlp(self.mlp_norm(x))
    return parallel.constrain(x, RESIDUAL)

  def decode(self, x, positions, cache, index, start):
    """The block over `t` new tokens with its layer's KV cache (see `Attention.decode`)."""
    attended, cache = self.attn.decode(self.attn_norm(x), positions, cache, index, start)
    x = x + attended
    return x + self.mlp(self.mlp_norm(x)), cache


class Decoder(nnx.Module):
  """tokens [batch, length] -> logits [batch, length, vocab] (float32)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = layers.Embed(cfg, rngs)
    self.blocks = _stacked_blocks(cfg, rngs)
    self.final_norm = layers.RMSNorm(cfg, rngs)
    self.lm_head = nnx.Param(
        jax.nn.initializers.normal(cfg.init_std)(rngs.params(), (cfg.hidden, cfg.vocab_size),
                                                 cfg.params_dtype),
        out_sharding=("embed", "vocab"))

  def hidden_states(self, tokens, positions, segment_ids):
    """The final-norm output, [batch, length, hidden], in the compute dtype."""
    x = parallel.constrain(self.embed(tokens), RESIDUAL)
    graphdef, stacked = nnx.split(self.blocks)

    def layer(x, block_state):
      return nnx.merge(graphdef, block_state)(x, positions, segment_ids), None

    if self.cfg.remat != "none":
      layer = jax.checkpoint(layer, policy=REMAT_POLICIES[self.cfg.remat], prevent_cse=False)
    x, _ = jax.lax.scan(layer, x, stacked)
    return self.final_norm(x)

  def logits(self, hidden):
    out = jnp.einsum("bld,dv->blv", hidden, self.lm_head[...].astype(hidden.dtype),
                     preferred_element_type=jnp.float32)
    return parallel.constrain(out, ("batch", "length", "vocab"))

  def __call__(self, tokens, positions, segment_ids):
    return self.logits(self.hidden_states(tokens, positions, segment_ids))

  def decode(self, tokens, positions, cache, index, start, *, last_only: bool = False):
    """Logits of `t` new tokens [batch, t, vocab] and the updated cache, layer by layer.

    tokens, positions: [batch, t]; cache: {'k', 'v'}, each [layers, batch, slots, kv_heads,
    head_dim] (from `init_cache`); index: the cache slot of the first new token; start: [batch]
    the first real slot of each left-padded row. last_only: the logits of the last new token
    alone, [batch, 1, vocab] (a prefill needs no more; the LM head is the costly part).
    """
    x = self.embed(tokens)
    graphdef, stacked = nnx.split(self.blocks)

    def layer(x, block_and_cache):
      block_state, layer_cache = block_and_cache
      return nnx.merge(graphdef, block_state).decode(x, positions, layer_cache, index, start)

    x, cache = jax.lax.scan(layer, x, (stacked, cache))
    if last_only:
      x = x[:, -1:]
    return self.logits(self.final_norm(x)), cache


def _stacked_blocks(cfg: ModelConfig, rngs: nnx.Rngs) -> Block:
  """n_layers blocks whose parameters are stacked on a leading 'layers' axis."""

  @nnx.split_rngs(splits=cfg.n_layers)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def create(rngs):
    return Block(cfg, rngs)

  return create(rngs)


def build(cfg: ModelConfig, seed: int = 0) -> Decoder:
  return Decoder(cfg, nnx.Rngs(params=seed))


@functools.lru_cache(maxsize=16)
def _abstract_model(cfg: ModelConfig):
  """(graphdef, abstract param state with logical-axis metadata) without allocating anything."""
  return nnx.split(nnx.eval_shape(lambda: build(cfg)), nnx.Param)


def abstract_params(cfg: ModelConfig) -> dict:
  """The parameters' shapes and dtypes (`jax.ShapeDtypeStruct`) as a pure dict."""
  return nnx.to_pure_dict(_abstract_model(cfg)[1])


def logical_axes(cfg: ModelConfig) -> dict:
  """The parameters' logical axis names, as a pure dict shaped like the parameters."""
  names = jax.tree.map(lambda v: tuple(v.get_metadata()["out_sharding"]), _abstract_model(cfg)[1],
                       is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(names)


def init_params(cfg: ModelConfig, seed: int) -> dict:
  """Fresh parameters as a pure dict (the form in which they are saved, grown and sharded)."""
  return nnx.to_pure_dict(nnx.state(build(cfg, seed), nnx.Param))


def apply(cfg: ModelConfig, params: dict, tokens, positions, segment_ids, *, method="__call__"):
  """Runs the decoder on pure-dict parameters: the functional entry point used under jit."""
  graphdef, _ = _abstract_model(cfg)
  return getattr(nnx.merge(graphdef, params), method)(tokens, positions, segment_ids)


def project(cfg: ModelConfig, params: dict, hidden):
  """The LM head on hidden states [batch, length, hidden] -> logits [..., vocab] (float32): the
  logits of `apply` for only the positions a caller keeps."""
  graphdef, _ = _abstract_model(cfg)
  return nnx.merge(graphdef, params).logits(hidden)


def init_cache(cfg: ModelConfig, batch: int, slots: int) -> dict:
  """An empty KV cache: {'k', 'v'}, each [layers, batch, slots, kv_heads, head_dim]."""
  shape = (cfg.n_layers, batch, slots, cfg.n_kv_heads, cfg.head_dim)
  return {"k": jnp.zeros(shape, cfg.dtype), "v": jnp.zeros(shape, cfg.dtype)}


def decode(cfg: ModelConfig, params: dict, tokens, positions, cache: dict, index, start, *,
           last_only: bool = False):
  """`Decoder.decode` on pure-dict parameters: (logits [batch, t, vocab], updated cache)."""
  graphdef, _ = _abstract_model(cfg)
  return nnx.merge(graphdef, params).decode(tokens, positions, cache, index, start,
                                            last_only=last_only)
