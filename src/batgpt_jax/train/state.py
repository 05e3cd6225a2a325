"""The train state (step, params, optimizer state), the optax optimizer, and sharded creation.

The state is a plain dict pytree, `{'step', 'params', 'opt_state'}`, with params as a pure dict:
the decoder's, plus the scalar heads the objective trains (`heads`, model/heads.py; e.g. the
reward model's 'reward_head'). It is created by a jitted init whose `out_shardings` come from the
logical axis rules, so no full copy of the model ever exists on one host. Frozen roles (a DPO
reference) are parameter trees in `param_shardings` alone: they have no optimizer state.
"""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from batgpt_jax import parallel
from batgpt_jax.model import heads as model_heads
from batgpt_jax.model.config import ModelConfig


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warmup then cosine decay to `end_lr_ratio` of the peak, and clipping.

  The schedule spans `schedule_steps`, or TrainConfig.steps when it is 0. A longer schedule lets
  a run stop part-way through it: the small stage of a growth run spends its share of one
  budget-long schedule (then `batgpt grow --schedule=rescale` carries on where it stopped)
  instead of annealing to the end of its own.
  """

  learning_rate: float = 3e-3
  warmup_steps: int = 100
  end_lr_ratio: float = 0.1
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0
  schedule_steps: int = 0  # 0: TrainConfig.steps

  def __post_init__(self):
    if self.schedule_steps < 0:
      raise ValueError(f"OptimizerConfig.schedule_steps={self.schedule_steps}; give the "
                       "schedule's length in steps, or 0 for TrainConfig.steps.")


def schedule_length(cfg: OptimizerConfig, total_steps: int) -> int:
  """The steps the warmup-cosine schedule spans for a run of `total_steps`."""
  return cfg.schedule_steps or total_steps


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
  total_steps = schedule_length(cfg, total_steps)
  warmup = max(1, min(cfg.warmup_steps, total_steps - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=cfg.learning_rate / warmup, peak_value=cfg.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=cfg.learning_rate * cfg.end_lr_ratio)


def _decay_mask(params):
  # Norm gains and biases (vectors, or per-layer vectors under the scan) are not decayed.
  return jax.tree_util.tree_map_with_path(
      lambda path, p: not str(path[-1].key).endswith(("scale", "_bias")), params)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.adamw(learning_rate_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                  weight_decay=cfg.weight_decay, mask=_decay_mask),
  )


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules, heads=()) -> dict:
  shapes = jax.tree.map(lambda a: a.shape, model_heads.abstract_params(cfg, heads))
  return jax.tree.map(lambda names, shape: parallel.logical_sharding(names, shape, mesh, rules),
                      model_heads.logical_axes(cfg, heads), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def state_shardings(cfg: ModelConfig, tx, mesh: Mesh, rules, abstract_state, heads=()) -> dict:
  """Shardings for the whole state: optimizer moments follow their parameters."""
  params = param_shardings(cfg, mesh, rules, heads)
  replicated = NamedSharding(mesh, PartitionSpec())
  opt = optax.tree_map_params(tx, lambda _, s: s, abstract_state["opt_state"], params,
                              transform_non_params=lambda _: replicated)
  return {"step": replicated, "params": params, "opt_state": opt}


def abstract_state(cfg: ModelConfig, tx, heads=()) -> dict:
  return jax.eval_shape(lambda: _fresh_state(cfg, tx, seed=0, heads=heads))


def _fresh_state(cfg: ModelConfig, tx, seed: int, heads=()) -> dict:
  params = model_heads.init_params(cfg, seed, heads)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def create_state(cfg: ModelConfig, tx, mesh: Mesh, rules, seed: int,
                 params: dict | None = None, heads=()) -> tuple[dict, dict]:
  """(state, shardings): a fresh state, each array created directly in its sharding.

  With `params` (already placed, e.g. read for `TrainConfig.init_from`) only the step and the
  optimizer state are new.
  """
  shardings = state_shardings(cfg, tx, mesh, rules, abstract_state(cfg, tx, heads), heads)
  if params is None:
    state = jax.jit(lambda: _fresh_state(cfg, tx, seed, heads), out_shardings=shardings)()
  else:
    state = jax.jit(lambda p: {"step": jnp.zeros((), jnp.int32), "params": p,
                               "opt_state": tx.init(p)},
                    in_shardings=(shardings["params"],), out_shardings=shardings)(params)
  return state, shardings
