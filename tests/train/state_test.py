"""The optimizer's learning-rate schedule: its length, a run that stops part-way through it, its
numbers (optax's) and the train step they are data of."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from batgpt_jax import objectives, parallel
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import state as train_state
from batgpt_jax.train import step as train_step


def test_the_schedule_spans_train_steps_unless_schedule_steps_is_set():
  cfg = train_state.OptimizerConfig(learning_rate=1e-2, warmup_steps=10, end_lr_ratio=0.1)
  short = train_state.learning_rate_schedule(cfg, 100)
  assert float(short(10)) == pytest.approx(1e-2) and float(short(100)) == pytest.approx(1e-3)
  longer = train_state.OptimizerConfig(learning_rate=1e-2, warmup_steps=10, end_lr_ratio=0.1,
                                       schedule_steps=400)
  # A 100-step run on a 400-step schedule stops a quarter of the way: the cosine over the 390
  # steps after warmup is at (100 - 10) / 390 of its way from the peak to the end value.
  stopped = train_state.learning_rate_schedule(longer, 100)
  progress = (100 - 10) / 390
  want = 1e-3 + (1e-2 - 1e-3) * 0.5 * (1 + np.cos(np.pi * progress))
  assert float(stopped(100)) == pytest.approx(want, rel=1e-5)
  assert float(stopped(400)) == pytest.approx(1e-3)
  assert train_state.schedule_length(longer, 100) == 400
  assert train_state.schedule_length(cfg, 100) == 100


def test_a_negative_schedule_length_is_refused():
  with pytest.raises(ValueError, match="schedule_steps=-1; give the schedule's length"):
    train_state.OptimizerConfig(schedule_steps=-1)


@pytest.mark.parametrize("lr, warmup, steps, ratio", [
    (3e-3, 100, 1000, 0.1), (1e-3, 1, 10, 0.1), (7e-4, 20, 400, 0.0), (0.0, 5, 50, 0.1),
    (2e-4, 50, 2, 0.3)])
def test_the_schedule_is_optaxs_warmup_cosine_traced_or_not(lr, warmup, steps, ratio):
  """To float32 rounding: XLA's fusion alone moves optax's own schedule by up to 2e-5 of its
  value between eager and jitted, at the small values of the warmup's start and the end."""
  cfg = train_state.OptimizerConfig(learning_rate=lr, warmup_steps=warmup, end_lr_ratio=ratio)
  w = max(1, min(warmup, steps - 1))
  reference = optax.warmup_cosine_decay_schedule(
      init_value=lr / w, peak_value=lr, warmup_steps=w, decay_steps=max(steps, w + 1),
      end_value=lr * ratio)
  counts = jnp.arange(steps + 3, dtype=jnp.int32)
  want = np.asarray(jax.vmap(reference)(counts))
  numbers = train_state.schedule_numbers(cfg, steps)
  traced = jax.jit(jax.vmap(train_state.learning_rate, in_axes=(0, None)))(counts, numbers)
  np.testing.assert_allclose(np.asarray(traced), want, rtol=1e-5, atol=1e-6 * lr)
  eager = train_state.learning_rate_schedule(cfg, steps)
  np.testing.assert_allclose([float(eager(c)) for c in range(steps + 3)], want, rtol=1e-5,
                             atol=1e-6 * lr)


def test_runs_that_differ_only_in_their_schedule_compile_one_train_step():
  cfg = ModelConfig(vocab_size=64, hidden=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8,
                    ffn=32, max_len=8)
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=(1, 1, 1)),
                                   devices=jax.devices()[:1])
  objective = objectives.build("pretrain", cfg)
  batch = {k: jnp.zeros((2, 8), jnp.float32 if k == "loss_weights" else jnp.int32)
           for k in ("tokens", "targets", "positions", "segment_ids", "loss_weights",
                     "directions")}

  def lowered(opt, steps):
    tx = train_state.make_optimizer(opt, steps)
    state, shardings = train_state.create_state(cfg, tx, mesh, (), seed=0)
    train, _ = train_step.jit_steps(objective, tx, mesh, (), shardings, microbatches=1)
    return train.lower(state, batch, {}, train_state.schedule_numbers(opt, steps)).as_text()

  base = lowered(train_state.OptimizerConfig(), 10)
  assert lowered(train_state.OptimizerConfig(learning_rate=1e-4, warmup_steps=3), 400) == base
  assert lowered(train_state.OptimizerConfig(weight_decay=0.0), 10) != base  # still compiled in
