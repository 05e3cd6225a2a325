"""The preference objectives through the shared step: gradient accumulation and meshes give the
same losses as one big batch on one device (the contract's sums), with the frozen reference
placed in its own shardings."""

import jax
import numpy as np
import pytest
from testlib import mesh_config

from batgpt_jax import objectives, parallel
from batgpt_jax.model import heads
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import state as train_state
from batgpt_jax.train import step as train_step

CFG = ModelConfig(vocab_size=128, n_heads=4, n_kv_heads=2)
SIDES = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 0, 0]  # two pairs a row, then padding


def pair_batch(seed: int, rows: int = 8) -> dict:
  rng = np.random.default_rng(seed)
  segments = np.tile(np.array(SIDES, np.int32), (rows, 1))
  length = segments.shape[1]
  tokens = rng.integers(3, CFG.vocab_size, (rows, length)).astype(np.int32) * (segments > 0)
  starts = np.r_[True, segments[0, 1:] != segments[0, :-1]]
  positions = np.tile(np.arange(length) - np.maximum.accumulate(np.where(starts, np.arange(length),
                                                                          0)), (rows, 1))
  ends = np.r_[segments[0, 1:] != segments[0, :-1], True] & (segments[0] > 0)
  score_at = np.tile(ends, (rows, 1)).astype(np.int32)
  weights = np.roll(score_at, -1, axis=1) + np.roll(score_at, -2, axis=1)  # the last two tokens
  targets = np.where(weights > 0, np.roll(tokens, -1, axis=1), 0)
  pair_value = lambda values: np.asarray(values, np.float32)[:, None] * (segments > 0)
  return {"tokens": tokens, "positions": positions.astype(np.int32), "segment_ids": segments,
          "targets": targets.astype(np.int32), "loss_weights": weights.astype(np.float32),
          "score_at": score_at, "pair_weight": pair_value(rng.uniform(0.5, 2, rows)),
          "pair_margin": pair_value(rng.uniform(0, 1, rows)),
          "pair_p_chosen": pair_value(rng.choice([1.0, 0.8, 0.5, 0.0], rows))}


def run_steps(name, shape, microbatches=1, n_steps=2):
  mesh_cfg = mesh_config(shape)
  devices = jax.devices()[:int(np.prod(shape))]
  mesh = parallel.mesh_from_config(mesh_cfg, devices=devices)
  rules = parallel.check_rules(mesh_cfg.axis_rules)
  objective = objectives.build(name, CFG)
  opt = train_state.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, eps=1e-6)
  tx, schedule = train_state.make_optimizer(opt, 10), train_state.schedule_numbers(opt, 10)
  state, shardings = train_state.create_state(CFG, tx, mesh, rules, seed=0,
                                              heads=objective.heads)
  frozen_shardings = {role: train_state.param_shardings(CFG, mesh, rules)
                      for role in objective.frozen_roles}
  frozen = {role: jax.device_put(heads.init_params(CFG, 7), s)
            for role, s in frozen_shardings.items()}
  train, _ = train_step.jit_steps(objective, tx, mesh, rules, shardings,
                                  microbatches=microbatches, frozen_shardings=frozen_shardings)
  out = []
  for i in range(n_steps):
    state, metrics = train(state, parallel.global_batch(pair_batch(i), mesh, rules), frozen,
                           schedule)
    out.append({k: float(v) for k, v in metrics.items()})
  return out


@pytest.mark.parametrize("name,shape", [("reward", (8, 1, 1)), ("dpo", (2, 2, 2))])
def test_accumulation_and_meshes_give_one_devices_losses(name, shape):
  alone = run_steps(name, (1, 1, 1))
  assert alone[0]["pairs"] == 16 and np.isfinite(alone[1]["loss"])
  other = run_steps(name, shape, microbatches=2)  # 8 devices, each microbatch 4 rows
  for a, b in zip(alone, other):
    for key in ("loss", "reward/accuracy", "reward/margin", "grad_norm"):
      assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), (shape, key)
