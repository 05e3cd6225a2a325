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
import numpy as np
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


def schedule_numbers(cfg: OptimizerConfig, total_steps: int) -> dict[str, np.float32]:
  """The learning-rate schedule of a run of `total_steps`, as the float32 numbers that
  `learning_rate` reads.

  The train step takes them as an argument (`train_step.jit_steps`) rather than as constants
  compiled into it, so runs that differ only in their learning rate, warmup or length run one
  compiled step: one compilation, or one entry of the persistent compilation cache, for all of
  them. Each is what optax's warmup_cosine_decay_schedule rounds its Python number to.
  """
  total_steps = schedule_length(cfg, total_steps)
  warmup = max(1, min(cfg.warmup_steps, total_steps - 1))
  peak = cfg.learning_rate
  alpha = 0.0 if peak == 0.0 else peak * cfg.end_lr_ratio / peak
  numbers = dict(warmup=warmup, warmup_rise=peak / warmup - peak, peak=peak,
                 decay_steps=max(total_steps, warmup + 1) - warmup, alpha=alpha,
                 cosine_share=1 - alpha)
  return {name: np.float32(value) for name, value in numbers.items()}


def placed_schedule(numbers: dict, mesh: Mesh) -> dict[str, jax.Array]:
  """`schedule_numbers` on every device of `mesh`, placed once for all of a run's steps (numpy
  numbers would be copied to the devices again at every step)."""
  replicated = NamedSharding(mesh, PartitionSpec())
  return {name: jax.make_array_from_process_local_data(replicated, np.asarray(value))
          for name, value in numbers.items()}


def learning_rate(count, numbers: dict):
  """Linear warmup from peak / warmup to the peak, then a cosine to `alpha` of the peak: optax's
  warmup_cosine_decay_schedule at update `count`, operation for operation (equal to float32
  rounding, as optax's own jitted and eager values are), from `schedule_numbers` that may be
  traced."""
  warmup = jnp.clip(count, 0, numbers["warmup"])
  rising = numbers["warmup_rise"] * (1 - warmup / numbers["warmup"]) + numbers["peak"]
  decaying = jnp.minimum(count - numbers["warmup"], numbers["decay_steps"])
  cosine = 0.5 * (1 + jnp.cos(jnp.pi * decaying / numbers["decay_steps"]))
  falling = numbers["peak"] * (numbers["cosine_share"] * cosine + numbers["alpha"])
  return jnp.where(count < numbers["warmup"], rising, falling)


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
  numbers = schedule_numbers(cfg, total_steps)
  return lambda count: learning_rate(count, numbers)


def _decay_mask(params):
  # Norm gains and biases (vectors, or per-layer vectors under the scan) are not decayed.
  return jax.tree_util.tree_map_with_path(
      lambda path, p: not str(path[-1].key).endswith(("scale", "_bias")), params)


def _scale_by_scheduled_learning_rate(numbers: dict) -> optax.GradientTransformationExtraArgs:
  """optax.scale_by_learning_rate(schedule), its state and its numbers, with the schedule's numbers
  an argument of each update (`schedule=`; `numbers` when it is not given)."""

  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, *, schedule=None, **extra_args):
    del params, extra_args
    step_size = -learning_rate(state.count, numbers if schedule is None else schedule)
    updates = jax.tree.map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
    return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init, update)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """Clipping, then AdamW (optax.adamw's chain, the same state) on `schedule_numbers(cfg,
  total_steps)`; its update takes a run's numbers as `schedule=`, which the train step does."""
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.chain(
          optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
          optax.add_decayed_weights(cfg.weight_decay, _decay_mask),
          _scale_by_scheduled_learning_rate(schedule_numbers(cfg, total_steps))),
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
