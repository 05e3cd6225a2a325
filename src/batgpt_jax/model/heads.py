"""Scalar heads on the decoder's final hidden states: the reward head (and PPO's value head).

A head is one vector and one bias, `hidden [batch, L, embed] -> score [batch, L]` (float32),
with logical axes like every parameter. In a parameter tree the heads sit beside the decoder's
top-level entries (`{'embed', 'blocks', 'final_norm', 'lm_head', 'reward_head'}`), so a reward
model's checkpoint is a decoder checkpoint plus its head: `decoder_params` drops the heads for
`transformer.apply`, and `init_from` a decoder checkpoint only has to create the head.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig

HEADS = ("reward_head", "value_head")


class ScalarHead(nnx.Module):
  """score = hidden . kernel + output_bias; kernel ~ N(0, 1 / hidden), bias 0.

  The final norm's output has unit RMS, so at init a score has std about 1: a head as small as
  the decoder's weights (init_std) would scale the decoder's gradients down by init_std * sqrt(
  hidden) and leave the loss flat at log 2 for the first hundred steps of a small model.
  """

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.kernel = nnx.Param(
        jax.nn.initializers.normal(init_std(cfg))(rngs.params(), (cfg.hidden,),
                                                  cfg.params_dtype),
        out_sharding=("embed",))
    # '_bias': the optimizer's decay mask leaves it alone, like the decoder's biases.
    self.output_bias = nnx.Param(jnp.zeros((), cfg.params_dtype), out_sharding=())

  def __call__(self, hidden):  # [batch, L, embed] -> [batch, L] float32
    return _score(hidden, self.kernel[...], self.output_bias[...])


def init_std(cfg: ModelConfig) -> float:
  return cfg.hidden ** -0.5


def _score(hidden, kernel, bias):
  return (jnp.einsum("bld,d->bl", hidden, kernel.astype(hidden.dtype),
                     preferred_element_type=jnp.float32) + bias.astype(jnp.float32))


def _check(names) -> tuple[str, ...]:
  unknown = [n for n in names if n not in HEADS]
  if unknown:
    raise ValueError(f"Unknown head(s) {unknown}; expected names from {HEADS}.")
  return tuple(names)


def _abstract_head(cfg: ModelConfig):
  return nnx.split(nnx.eval_shape(lambda: ScalarHead(cfg, nnx.Rngs(params=0))), nnx.Param)


def init_heads(cfg: ModelConfig, seed: int, names) -> dict:
  """Fresh head parameters {name: {'kernel', 'output_bias'}}, each from its own seed offset."""
  return {name: nnx.to_pure_dict(nnx.state(ScalarHead(cfg, nnx.Rngs(params=seed + 1 + i)),
                                           nnx.Param))
          for i, name in enumerate(_check(names))}


def abstract_params(cfg: ModelConfig, names=()) -> dict:
  """The decoder's abstract parameters plus those of the named heads."""
  out = dict(transformer.abstract_params(cfg))
  out.update({name: nnx.to_pure_dict(_abstract_head(cfg)[1]) for name in _check(names)})
  return out


def logical_axes(cfg: ModelConfig, names=()) -> dict:
  """Logical axis names shaped like `abstract_params(cfg, names)`."""
  head = jax.tree.map(lambda v: tuple(v.get_metadata()["out_sharding"]), _abstract_head(cfg)[1],
                      is_leaf=lambda x: isinstance(x, nnx.Variable))
  out = dict(transformer.logical_axes(cfg))
  out.update({name: nnx.to_pure_dict(head) for name in _check(names)})
  return out


def init_params(cfg: ModelConfig, seed: int, names=()) -> dict:
  return {**transformer.init_params(cfg, seed), **init_heads(cfg, seed, names)}


def decoder_params(params: dict) -> dict:
  """The decoder's entries of a parameter tree (what `transformer.apply` takes)."""
  return {key: value for key, value in params.items() if key not in HEADS}


def scores(params: dict, hidden, name: str):
  """The head `name` of `params` on hidden states [batch, L, embed] -> [batch, L] float32."""
  if name not in params:
    raise ValueError(f"The parameters have no {name!r}; found {sorted(params)}. Train it with "
                     "TrainConfig.objective = 'reward' (the head is created at init_from).")
  return _score(hidden, params[name]["kernel"], params[name]["output_bias"])
