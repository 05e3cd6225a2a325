"""The optimizer's learning-rate schedule: its length, and a run that stops part-way through it."""

import numpy as np
import pytest

from batgpt_jax.train import state as train_state


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
