"""PPO's math against its closed forms and plain-Python loops (objectives/ppo.py), 1e-6; the
roles' memory (align/ppo.py) against a count of the parameters."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax.model import heads, transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import state as train_state

from batgpt_jax.align import ppo as ppo_loop
from batgpt_jax.objectives import ppo


def _arrays(seed=0, batch=3, replies=5):
  rng = np.random.default_rng(seed)
  lengths = np.array([replies, 2, 0][:batch])
  mask = (np.arange(replies)[None, :] < lengths[:, None]).astype(np.float32)
  return rng, mask


def test_kl_estimators_are_their_formulas():
  logp, ref = jnp.array([-1.0, -2.5, -0.1]), jnp.array([-1.5, -2.0, -0.1])
  np.testing.assert_allclose(ppo.kl_estimate(logp, ref, "k1"), [0.5, -0.5, 0.0], atol=1e-6)
  r = np.exp(np.array([-0.5, 0.5, 0.0]))  # ref / pi
  np.testing.assert_allclose(ppo.kl_estimate(logp, ref, "k3"), r - 1 - np.log(r), atol=1e-6)
  assert float(jnp.min(ppo.kl_estimate(logp, ref, "k3"))) >= 0.0


def test_token_rewards_put_the_score_on_the_last_reply_token():
  _, mask = _arrays()
  kl = jnp.ones(mask.shape) * 2.0
  rewards = np.asarray(ppo.token_rewards(jnp.array([1.0, 3.0, 7.0]), kl, mask, 0.1))
  expected = -0.2 * mask
  expected[0, 4] += 1.0
  expected[1, 1] += 3.0  # row 2 has no reply: no score, no penalty
  np.testing.assert_allclose(rewards, expected, atol=1e-6)


def _gae_loop(rewards, values, mask, gamma, lam):
  advantages = np.zeros_like(rewards)
  for b in range(rewards.shape[0]):
    n = int(mask[b].sum())
    last = 0.0
    for t in reversed(range(n)):
      next_value = values[b, t + 1] if t + 1 < n else 0.0
      delta = rewards[b, t] + gamma * next_value - values[b, t]
      last = delta + gamma * lam * last
      advantages[b, t] = last
  return advantages, (advantages + values) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_equals_the_backward_recursion(gamma, lam):
  rng, mask = _arrays(1)
  rewards = rng.normal(size=mask.shape).astype(np.float32) * mask
  values = rng.normal(size=mask.shape).astype(np.float32)
  advantages, returns = ppo.gae(jnp.asarray(rewards), jnp.asarray(values), mask, gamma, lam)
  want_adv, want_ret = _gae_loop(rewards, values * mask, mask, gamma, lam)
  np.testing.assert_allclose(advantages, want_adv, atol=1e-6)
  np.testing.assert_allclose(returns, want_ret, atol=1e-6)


def test_with_lambda_one_and_no_values_the_advantage_is_the_reward_to_go():
  _, mask = _arrays()
  rewards = jnp.asarray(mask * np.arange(1, 6))
  advantages, _ = ppo.gae(rewards, jnp.zeros(mask.shape), mask, 1.0, 1.0)
  np.testing.assert_allclose(advantages[0], [15, 14, 12, 9, 5], atol=1e-6)
  np.testing.assert_allclose(advantages[1], [3, 2, 0, 0, 0], atol=1e-6)


def test_whiten_over_the_masked_entries_of_the_batch():
  rng, mask = _arrays(2)
  x = rng.normal(3.0, 2.0, size=mask.shape).astype(np.float32)
  w = np.asarray(ppo.whiten(jnp.asarray(x), mask))
  kept = w[mask > 0]
  assert abs(kept.mean()) < 1e-6 and abs(kept.std() - 1.0) < 1e-4
  assert np.all(w[mask == 0] == 0)


def test_policy_and_value_terms_are_the_clipped_formulas():
  logp = jnp.log(jnp.array([1.5, 0.5, 1.1, 0.7]))  # ratios 1.5, 0.5, 1.1, 0.7 over old = 0
  old = jnp.zeros(4)
  adv = jnp.array([1.0, -2.0, -1.0, 3.0])
  loss, clipped, approx_kl = ppo.policy_terms(logp, old, adv, 0.2)
  ratio = np.array([1.5, 0.5, 1.1, 0.7])
  want = np.maximum(-np.asarray(adv) * ratio, -np.asarray(adv) * np.clip(ratio, 0.8, 1.2))
  np.testing.assert_allclose(loss, want, atol=1e-6)
  np.testing.assert_allclose(clipped, [1, 1, 0, 0], atol=0)  # where the clipped term is larger
  np.testing.assert_allclose(approx_kl, ratio - 1 - np.log(ratio), atol=1e-6)

  values, old_values, returns = jnp.array([1.0, 0.0, 2.0]), jnp.array([0.5, 0.5, 2.1]), \
      jnp.array([2.0, -1.0, 1.0])
  vloss, vclipped = ppo.value_terms(values, old_values, returns, 0.2)
  clipped_values = np.array([0.7, 0.3, 2.0])
  want = 0.5 * np.maximum((np.asarray(values) - returns) ** 2, (clipped_values - returns) ** 2)
  np.testing.assert_allclose(vloss, want, atol=1e-6)
  np.testing.assert_allclose(vclipped, [1, 1, 0], atol=0)


def test_entropy_of_uniform_and_of_one_hot():
  logits = jnp.stack([jnp.zeros(8), jnp.array([0.0] + [-1e9] * 7)])
  np.testing.assert_allclose(ppo.entropy(logits), [math.log(8), 0.0], atol=1e-6)


def test_adaptive_kl_coefficient_is_proportional_and_clipped():
  assert ppo_loop.adaptive_kl_coef(0.1, 6.0, 6.0, 1000, 64) == pytest.approx(0.1)
  assert ppo_loop.adaptive_kl_coef(0.1, 6.6, 6.0, 1000, 64) == pytest.approx(
      0.1 * (1 + 0.1 * 64 / 1000))
  assert ppo_loop.adaptive_kl_coef(0.1, 60.0, 6.0, 1000, 64) == pytest.approx(
      0.1 * (1 + 0.2 * 64 / 1000))  # error clipped at +20%
  assert ppo_loop.adaptive_kl_coef(0.1, 0.0, 6.0, 1000, 64) == pytest.approx(
      0.1 * (1 - 0.2 * 64 / 1000))


def test_reply_outputs_are_the_columns_that_chose_the_reply():
  batch = {"tokens": jnp.zeros((2, 7), jnp.int32), "reply_mask": jnp.ones((2, 3), jnp.int32)}
  x = jnp.arange(14).reshape(2, 7)
  np.testing.assert_array_equal(ppo.reply_outputs(x, batch), [[3, 4, 5], [10, 11, 12]])


@pytest.mark.parametrize("bad", [{"clip": 0.0}, {"gamma": 1.5}, {"temperature": 0.0},
                                 {"kl_estimator": "k2"}, {"gamma_ptx": -1.0}])
def test_bad_settings_are_named(bad):
  with pytest.raises(ValueError, match="Invalid ppo_settings: .*" + next(iter(bad))):
    ppo.ppo_settings(**bad)


@pytest.mark.parametrize("shared", [False, True])
def test_role_memory_counts_parameters_and_adam_moments(shared):
  cfg = ModelConfig(vocab_size=64, hidden=16, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=8,
                    ffn=32, max_len=32)
  decoder = sum(int(np.prod(a.shape)) * 4 for a in jax.tree.leaves(
      transformer.abstract_params(cfg)))
  head = (cfg.hidden + 1) * 4  # kernel and bias, float32
  tx = train_state.make_optimizer(train_state.OptimizerConfig(), 10)
  cfgs = {role: cfg for role in ("policy", "reference", "value", "reward")}
  memory = ppo_loop.role_memory(cfgs, tx, tx, shared_backbone=shared)
  # Parameters and AdamW's two moments, plus three int32 counters: the train state's step,
  # Adam's and the learning-rate schedule's.
  trained = lambda n: 3 * n + 3 * 4
  assert memory["reference"] == decoder and memory["reward"] == decoder + head
  if shared:
    assert memory["value"] == 0 and memory["policy"] == trained(decoder + head)
  else:
    assert memory["policy"] == trained(decoder) and memory["value"] == trained(decoder + head)
  assert memory["total"] == sum(v for k, v in memory.items() if k != "total")
