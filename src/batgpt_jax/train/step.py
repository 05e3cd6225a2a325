"""Pure `train_step` and `eval_step`; `jit_steps` compiles them with shardings and donation."""

import functools

import jax
import jax.numpy as jnp
import optax

from batgpt_jax import objectives, parallel
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig


def _token_terms(params, batch, cfg: ModelConfig, loss_chunk: int):
  """Per-token (cross-entropy, log Z, correct), [batch, length] each."""
  args = (batch["tokens"], batch["positions"], batch["segment_ids"])
  if loss_chunk:
    hidden = transformer.apply(cfg, params, *args, method="hidden_states")
    return objectives.chunked_token_cross_entropy(hidden, params["lm_head"], batch["targets"],
                                                  loss_chunk)
  logits = transformer.apply(cfg, params, *args)  # [batch, length, vocab] float32
  return objectives.token_cross_entropy(logits, batch["targets"])


def _loss_sums(params, batch, cfg: ModelConfig, r2l_weight: float, z_loss: float,
               loss_chunk: int = 0):
  ce, log_z, correct = _token_terms(params, batch, cfg, loss_chunk)
  loss_sum, weight_total, sums = objectives.bidirectional_sums(
      ce, log_z, correct, batch, r2l_weight, z_loss)
  return loss_sum, (weight_total, sums)


def _split_microbatches(batch, n: int):
  # Row i*n + j goes to microbatch j: every device keeps an equal share of each microbatch.
  def split(x):
    x = x.reshape((x.shape[0] // n, n) + x.shape[1:]).swapaxes(0, 1)
    return parallel.constrain(x, (None,) + parallel.BATCH_AXES[: x.ndim - 1])
  return jax.tree.map(split, batch)


def train_step(state, batch, *, cfg: ModelConfig, tx, microbatches: int, r2l_weight: float,
               z_loss: float, loss_chunk: int = 0):
  """One optimizer update on a global batch, accumulating gradients over `microbatches`."""
  grad_fn = jax.value_and_grad(_loss_sums, has_aux=True)
  grad_of = lambda micro: grad_fn(state["params"], micro, cfg, r2l_weight, z_loss, loss_chunk)
  micro = _split_microbatches(batch, microbatches)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(grad_of, jax.tree.map(lambda x: x[0], micro)))
  total, _ = jax.lax.scan(lambda acc, m: (jax.tree.map(jnp.add, acc, grad_of(m)), None),
                          zeros, micro)
  (loss_sum, (weight_total, sums)), grads = total
  # The mean over all weighted tokens of the global batch, exact whatever the microbatching.
  grads = jax.tree.map(lambda g: g / jnp.maximum(weight_total, 1e-9), grads)
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = objectives.summarize(sums, loss_sum, weight_total)
  metrics["grad_norm"] = optax.global_norm(grads)
  # A NaN or Inf loss or gradient skips the update: parameters and optimizer state are kept.
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
  keep_if_bad = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  metrics["skipped"] = (~finite).astype(jnp.int32)
  return {"step": state["step"] + 1,
          "params": keep_if_bad(params, state["params"]),
          "opt_state": keep_if_bad(opt_state, state["opt_state"])}, metrics


def eval_step(params, batch, *, cfg: ModelConfig, loss_chunk: int = 0):
  """Metric sums on one batch (L2R and R2L counted apart); the loop adds them over batches."""
  loss_sum, (weight_total, sums) = _loss_sums(params, batch, cfg, 1.0, 0.0, loss_chunk)
  return dict(sums, loss_sum=loss_sum, weight_total=weight_total)


def jit_steps(cfg: ModelConfig, tx, mesh, rules, shardings, *, microbatches: int,
              r2l_weight: float, z_loss: float, loss_chunk: int = 0):
  """(train_step, eval_step), jitted: state donated, shardings fixed, activations constrained."""

  def traced(fn):
    @functools.wraps(fn)
    def wrapped(*args):
      with parallel.activation_sharding(mesh, rules):
        return fn(*args)
    return wrapped

  train = jax.jit(
      traced(functools.partial(train_step, cfg=cfg, tx=tx, microbatches=microbatches,
                               r2l_weight=r2l_weight, z_loss=z_loss, loss_chunk=loss_chunk)),
      in_shardings=(shardings, None), out_shardings=(shardings, None), donate_argnums=(0,))
  evaluate = jax.jit(traced(functools.partial(eval_step, cfg=cfg, loss_chunk=loss_chunk)),
                     in_shardings=(shardings["params"], None))
  return train, evaluate
