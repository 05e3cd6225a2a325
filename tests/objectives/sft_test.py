"""The SFT objective: reply tokens only, in closed form; and objectives chosen by name."""

import jax.numpy as jnp
import numpy as np
import pytest
from testlib import random_logits

from batgpt_jax import objectives
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import sft
from batgpt_jax.objectives.tokens import token_cross_entropy


def test_reply_sums_cover_the_masked_tokens_only_in_closed_form():
  logits, targets = random_logits(2, shape=(2, 7))
  ce, log_z, correct = token_cross_entropy(logits, targets)
  weights = np.array([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 1]], np.float32)
  batch = {"loss_weights": jnp.asarray(weights)}
  loss_sum, total, sums = sft.reply_sums(ce, log_z, correct, batch, z_loss=0.01)
  ce, log_z = np.asarray(ce), np.asarray(log_z)
  assert float(total) == weights.sum() == float(sums["reply/tokens"])
  assert float(sums["reply/loss_sum"]) == pytest.approx((ce * weights).sum(), rel=1e-6)
  assert float(loss_sum) == pytest.approx((ce * weights).sum() + 0.01 * (log_z**2 * weights).sum(),
                                          rel=1e-6)
  out = sft.summarize(loss_sum, total, sums)
  assert float(out["reply/loss"]) == pytest.approx((ce * weights).sum() / weights.sum(), rel=1e-6)
  assert float(out["reply/accuracy"]) == pytest.approx(
      (np.asarray(correct) * weights).sum() / weights.sum(), rel=1e-6)


def test_a_prompt_token_never_moves_the_sft_loss():
  logits, targets = random_logits(3, shape=(1, 5))
  weights = jnp.asarray([[0.0, 1.0, 1.0, 0.0, 0.0]])
  before = sft.reply_sums(*token_cross_entropy(logits, targets), {"loss_weights": weights}, 0.0)
  bumped = logits.at[0, 0].add(3.0).at[0, 4].add(-2.0)  # positions with weight 0
  after = sft.reply_sums(*token_cross_entropy(bumped, targets), {"loss_weights": weights}, 0.0)
  assert float(after[0]) == float(before[0])


def test_objectives_are_chosen_by_name_and_a_typo_is_named():
  assert objectives.build("sft", ModelConfig()).name == "sft"
  assert objectives.build("pretrain", ModelConfig()).name == "pretrain"
  with pytest.raises(ValueError, match="'sfft' is not an objective.*Did you mean 'sft'"):
    objectives.build("sfft", ModelConfig())
