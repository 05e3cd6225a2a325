"""The bidirectional objective: per-direction sums, weights, z-loss and the reported means."""

import jax.numpy as jnp
import numpy as np
import pytest
from testlib import random_logits

from batgpt_jax.objectives import pretrain
from batgpt_jax.objectives.tokens import token_cross_entropy


def _batch(directions, weights):
  return {"directions": jnp.asarray(directions), "loss_weights": jnp.asarray(weights, jnp.float32)}


def test_each_direction_counts_only_its_own_tokens():
  logits, targets = random_logits()
  ce, log_z, correct = token_cross_entropy(logits, targets)
  directions = np.array([[0, 0, 0, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
  weights = np.array([[1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 1, 0]], np.float32)
  _, _, sums = pretrain.bidirectional_sums(ce, log_z, correct, _batch(directions, weights),
                                             r2l_weight=1.0, z_loss=0.0)
  ce = np.asarray(ce)
  for name, d in (("l2r", 0), ("r2l", 1)):
    mask = (directions == d) & (weights > 0)
    assert float(sums[f"{name}/tokens"]) == mask.sum()
    assert float(sums[f"{name}/loss_sum"]) == pytest.approx(ce[mask].sum(), rel=1e-6)
  # Changing an R2L token's logits leaves the L2R sums exactly as they were.
  bumped = logits.at[0, 3, targets[0, 3]].add(5.0)
  ce2, log_z2, correct2 = token_cross_entropy(bumped, targets)
  _, _, sums2 = pretrain.bidirectional_sums(ce2, log_z2, correct2, _batch(directions, weights),
                                              1.0, 0.0)
  assert float(sums2["l2r/loss_sum"]) == float(sums["l2r/loss_sum"])
  assert float(sums2["r2l/loss_sum"]) != float(sums["r2l/loss_sum"])


def test_r2l_weight_and_z_loss_enter_the_optimised_loss():
  logits, targets = random_logits(1)
  ce, log_z, correct = token_cross_entropy(logits, targets)
  directions = np.array([[0, 0, 0, 1, 1, 1], [0, 1, 0, 1, 0, 1]])
  weights = np.ones((2, 6), np.float32)
  batch = _batch(directions, weights)
  loss, total, _ = pretrain.bidirectional_sums(ce, log_z, correct, batch, 0.5, 0.01)
  w = np.where(directions == 1, 0.5, 1.0)
  want = (np.asarray(ce) * w).sum() + 0.01 * (np.asarray(log_z) ** 2 * w).sum()
  assert float(loss) == pytest.approx(want, rel=1e-6)
  assert float(total) == pytest.approx(w.sum())


def test_summary_reports_means_and_perplexity():
  sums = {"l2r/loss_sum": 6.0, "l2r/correct": 1.0, "l2r/tokens": 3.0,
          "r2l/loss_sum": 0.0, "r2l/correct": 0.0, "r2l/tokens": 0.0, "z_sum": 9.0}
  out = pretrain.summarize(jnp.float32(6.0), jnp.float32(3.0), sums)
  assert float(out["loss"]) == pytest.approx(2.0)
  assert float(out["l2r/loss"]) == pytest.approx(2.0)
  assert float(out["l2r/perplexity"]) == pytest.approx(np.exp(2.0), rel=1e-5)
  assert float(out["l2r/accuracy"]) == pytest.approx(1 / 3)
  assert float(out["r2l/loss"]) == 0.0  # no R2L tokens: reported as 0 with 0 tokens, not NaN
  assert float(out["z_loss"]) == pytest.approx(3.0)


def test_negative_weights_are_refused():
  with pytest.raises(ValueError, match="r2l_weight"):
    pretrain.loss_weights(r2l_weight=-1.0)
