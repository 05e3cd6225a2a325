"""The grown train state: parameters, Adam moments (carried or reset) and the step.

Carrying moments. At a tiled point every copy of an activation receives 1/copies of the small
model's gradient (the copies are summed symmetrically downstream), so a weight whose output has
r_out copies gets g' = tile(g) / r_out, whatever its input copies: the 1/r_in of the weight and
the r_in identical inputs cancel in dL/dW = x^T dy. Adam's moments are averages of g and g^2, so
mu' = tile(mu) / r_out and nu' = tile(nu) / r_out^2; the normalized step mu/sqrt(nu) is then the
small model's step, copied. Inserted identity layers and nothing else start with zero moments
(old layers see the same gradients: an identity block passes them through unchanged).
Gradients here are those Adam sees, after clipping: the grown model's global norm differs (each
array's squared norm scales by r_in / r_out), so clipping can act at other steps than before.
`tests/grow/grow_optimizer_test.py` checks the rule against the grown model's own gradients.

The schedule: `restart` sets the step (and the learning-rate schedule's count) to 0, so the grown
run warms up again over its own TrainConfig.steps; `continue` keeps the source step; `rescale`
puts the grown run at the same fraction of its schedule as the source had reached of its own
(step = round(source_step / source_length * target_length)), so the learning rate goes on
from where the small run left it instead of warming up to the peak again. With one
budget-long schedule for both stages (the small one with OptimizerConfig.schedule_steps set to
the budget in its own steps) that fraction is the share of the budget spent. Adam's own
bias-correction count stays with its moments (kept with `carry`, 0 with `reset`).
"""

import jax
import numpy as np
import optax

from batgpt_jax.grow import params as grow_params
from batgpt_jax.grow.modes import OPTIMIZER_MODES, SCHEDULE_MODES
from batgpt_jax.grow.plan import GrowthError, GrowthPlan
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import state as train_state



def _scalar(value, target, place):
  return jax.device_put(np.asarray(jax.device_get(value), target.dtype), place)


def _is_optax_state(x) -> bool:
  return isinstance(x, (optax.ScaleByAdamState, optax.ScaleByScheduleState))


def grown_step(schedule: str, source_step: int, schedule_lengths: tuple[int, int] | None) -> int:
  """The grown state's step (and schedule count) for a schedule mode.

  schedule_lengths: (the source's schedule length, the target's), needed by `rescale` only.
  """
  if schedule == "restart":
    return 0
  if schedule == "continue":
    return int(source_step)
  if not schedule_lengths or min(schedule_lengths) < 1:
    raise GrowthError(f"schedule='rescale' needs both schedules' lengths, got {schedule_lengths}")
  source_length, target_length = schedule_lengths
  return round(min(int(source_step), source_length) / source_length * target_length)


def grow_opt_state(small_opt_state, small_cfg: ModelConfig, big_cfg: ModelConfig,
                   plan: GrowthPlan, *, abstract, shardings, optimizer: str, step: int,
                   progress=None):
  """The optimizer state of `train_state.make_optimizer` (chain(clip, adamw)), grown."""

  def grow(small, target, place):
    if isinstance(small, optax.ScaleByAdamState):
      if optimizer == "carry":
        moment = lambda tree, kind: grow_params.grow_tree(  # noqa: E731
            tree, small_cfg, big_cfg, plan, kind=kind, shardings=place.mu, progress=progress)
        return optax.ScaleByAdamState(count=_scalar(small.count, target.count, place.count),
                                      mu=moment(small.mu, "mu"), nu=moment(small.nu, "nu"))
      return optax.ScaleByAdamState(count=_scalar(0, target.count, place.count),
                                    mu=grow_params.zeros_like_params(big_cfg, place.mu),
                                    nu=grow_params.zeros_like_params(big_cfg, place.nu))
    if isinstance(small, optax.ScaleByScheduleState):
      return optax.ScaleByScheduleState(count=_scalar(step, target.count, place.count))
    raise GrowthError(f"The optimizer state holds a {type(small).__name__} with no growth rule; "
                      "batgpt_jax/grow/optimizer.py knows Adam moments and schedule counts")

  return jax.tree.map(grow, small_opt_state, abstract, shardings, is_leaf=_is_optax_state)


def check_modes(optimizer: str, schedule: str) -> None:
  if optimizer not in OPTIMIZER_MODES:
    raise GrowthError(f"optimizer={optimizer!r}; expected one of {OPTIMIZER_MODES}")
  if schedule not in SCHEDULE_MODES:
    raise GrowthError(f"schedule={schedule!r}; expected one of {SCHEDULE_MODES}")


def grow_state(small_state: dict, small_cfg: ModelConfig, big_cfg: ModelConfig, plan: GrowthPlan,
               *, tx: optax.GradientTransformation, shardings: dict, optimizer: str = "carry",
               schedule: str = "restart", schedule_lengths: tuple[int, int] | None = None,
               progress=None) -> dict:
  """A train state of the big model, in `shardings` (from `train_state.state_shardings`).

  schedule_lengths: (source, target) learning-rate schedule lengths, for `schedule='rescale'`.
  """
  check_modes(optimizer, schedule)
  step = grown_step(schedule, int(jax.device_get(small_state["step"])), schedule_lengths)
  abstract = train_state.abstract_state(big_cfg, tx)
  params = grow_params.grow_tree(small_state["params"], small_cfg, big_cfg, plan, kind="param",
                                 shardings=shardings["params"], progress=progress)
  opt_state = grow_opt_state(small_state["opt_state"], small_cfg, big_cfg, plan,
                             abstract=abstract["opt_state"], shardings=shardings["opt_state"],
                             optimizer=optimizer, step=step, progress=progress)
  state = {"step": _scalar(step, abstract["step"], shardings["step"]), "params": params,
           "opt_state": opt_state}
  _check_like(state, abstract)
  return state


def _check_like(state: dict, abstract: dict) -> None:
  """The grown state must be exactly what `batgpt train` restores for the big model."""
  if jax.tree.structure(state) != jax.tree.structure(abstract):
    raise GrowthError(f"The grown state's structure {jax.tree.structure(state)} differs from the "
                      f"big model's train state {jax.tree.structure(abstract)}")
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(state),
                               jax.tree.leaves(abstract)):
    if (got.shape, got.dtype) != (want.shape, want.dtype):
      raise GrowthError(f"{grow_params.path_name(path)}: grew {got.shape} {got.dtype}, the big "
                        f"model's train state has {want.shape} {want.dtype}")
