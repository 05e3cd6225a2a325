"""The one training step, generic over an objective; `jit_steps` compiles it with shardings.

`train_step` accumulates the objective's summed loss and gradients over microbatches, divides once
by the summed weight (the exact global mean), clips and applies the optimizer, and keeps the old
state when the loss or the gradient norm is not finite. `frozen` carries the parameter trees of
frozen roles (reference, reward) into the objective; they get no gradient and no optimizer state.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from batgpt_jax import parallel
from batgpt_jax.objectives.contract import Objective


def _split_microbatches(batch, n: int):
  # Row i*n + j goes to microbatch j: every device keeps an equal share of each microbatch.
  def split(x):
    x = x.reshape((x.shape[0] // n, n) + x.shape[1:]).swapaxes(0, 1)
    return parallel.constrain(x, (None,) + parallel.BATCH_AXES[: x.ndim - 1])
  return jax.tree.map(split, batch)


def _value_and_aux(loss_fn):
  def fn(params, batch, frozen):
    loss_sum, weight_total, sums = loss_fn(params, batch, frozen)
    return loss_sum, (weight_total, sums)
  return fn


def train_step(state, batch, frozen, schedule, *, objective: Objective, tx, microbatches: int):
  """One optimizer update on a global batch, accumulating gradients over `microbatches`, at the
  learning rate of `schedule` (train/state.py's schedule_numbers)."""
  grad_fn = jax.value_and_grad(_value_and_aux(objective.loss), has_aux=True)
  grad_of = lambda micro: grad_fn(state["params"], micro, frozen)
  micro = _split_microbatches(batch, microbatches)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(grad_of, jax.tree.map(lambda x: x[0], micro)))
  total, _ = jax.lax.scan(lambda acc, m: (jax.tree.map(jnp.add, acc, grad_of(m)), None),
                          zeros, micro)
  (loss_sum, (weight_total, sums)), grads = total
  # The mean over all weighted tokens of the global batch, exact whatever the microbatching.
  grads = jax.tree.map(lambda g: g / jnp.maximum(weight_total, 1e-9), grads)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"], schedule=schedule)
  params = optax.apply_updates(state["params"], updates)
  metrics = objective.summarize(loss_sum, weight_total, sums)
  metrics["grad_norm"] = optax.global_norm(grads)
  # A NaN or Inf loss or gradient skips the update: parameters and optimizer state are kept.
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
  keep_if_bad = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  metrics["skipped"] = (~finite).astype(jnp.int32)
  return {"step": state["step"] + 1,
          "params": keep_if_bad(params, state["params"]),
          "opt_state": keep_if_bad(opt_state, state["opt_state"])}, metrics


def eval_step(params, batch, frozen, *, objective: Objective):
  """The objective's held-out metric sums on one batch; the loop adds them over batches."""
  loss_sum, weight_total, sums = objective.eval_loss(params, batch, frozen)
  return dict(sums, loss_sum=loss_sum, weight_total=weight_total)


def jit_steps(objective: Objective, tx, mesh, rules, shardings, *, microbatches: int,
              frozen_shardings=None):
  """(train_step, eval_step), jitted: state donated, shardings fixed, activations constrained.

  Called as `train(state, batch, frozen, schedule)` and `evaluate(params, batch, frozen)`;
  `frozen` is a dict of parameter trees placed in `frozen_shardings` (empty for pretraining and
  SFT), `schedule` the run's `train_state.schedule_numbers` (data, not compiled in).
  """
  frozen_shardings = frozen_shardings or {}

  def traced(fn):
    @functools.wraps(fn)
    def wrapped(*args):
      with parallel.activation_sharding(mesh, rules):
        return fn(*args)
    return wrapped

  train = jax.jit(
      traced(functools.partial(train_step, objective=objective, tx=tx,
                               microbatches=microbatches)),
      in_shardings=(shardings, None, frozen_shardings, None), out_shardings=(shardings, None),
      donate_argnums=(0,))
  evaluate = jax.jit(traced(functools.partial(eval_step, objective=objective)),
                     in_shardings=(shardings["params"], None, frozen_shardings))
  return train, evaluate
