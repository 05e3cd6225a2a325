"""PPO rollouts (align/rollout.py): the row layout, and a scored rollout agrees with the engine,
the reward model's own scoring and the formulas of objectives/ppo.py; on a scored rollout, the
policy objective with a shared backbone is the policy's plus value_coef x the value model's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax import config
from batgpt_jax.align import reward_score, rollout
from batgpt_jax.data import chat, preferences
from batgpt_jax.data import prompts as prompts_lib
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model import heads
from batgpt_jax.objectives import ppo
from batgpt_jax.sample import engine
from testlib import trained_like_params

SETTINGS = tuple(sorted(ppo.ppo_settings(gamma=1.0, lam=0.95, temperature=0.8).items()))


@pytest.fixture(scope="module")
def tiny():
  cfg = config.model_size("tiny")
  vocabulary = vocab_lib.default_vocabulary(cfg.vocab_size)
  decoder = trained_like_params(cfg, seed=0)
  with_head = lambda params, name, seed: {**params, **heads.init_heads(cfg, seed, (name,))}
  roles = {"policy": decoder, "reference": trained_like_params(cfg, seed=1),
           "value": with_head(trained_like_params(cfg, seed=2), ppo.VALUE_HEAD, 2),
           "reward": with_head(trained_like_params(cfg, seed=3), "reward_head", 3)}
  return cfg, vocabulary, roles


def _prompts(vocabulary, queries):
  l2r, _ = vocab_lib.direction_ids(vocabulary)
  return [prompts_lib.Prompt(tuple([l2r] + [int(i) for i in vocabulary.encode(
      chat.chat_prompt(q))]), "") for q in queries]


def test_rows_put_the_prompt_left_padded_and_the_reply_after_it():
  prompts = [prompts_lib.Prompt((3, 10, 11), ""), prompts_lib.Prompt((3, 12, 13, 14, 15), "")]
  samples = engine.Samples(tokens=np.array([[20, 21, 0, 0], [22, 23, 24, 25]]),
                           logprobs=np.zeros((2, 4), np.float32), lengths=np.array([2, 4]),
                           stopped=np.array([True, False]))
  rows = rollout.rollout_rows(prompts, samples, max_prompt_len=6)
  np.testing.assert_array_equal(rows["tokens"], [[0, 0, 0, 3, 10, 11, 20, 21, 0, 0],
                                                 [0, 3, 12, 13, 14, 15, 22, 23, 24, 25]])
  np.testing.assert_array_equal(rows["segment_ids"], [[0, 0, 0, 1, 1, 1, 1, 1, 0, 0],
                                                      [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(rows["positions"], [[0, 0, 0, 0, 1, 2, 3, 4, 0, 0],
                                                    [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]])
  np.testing.assert_array_equal(rows["reply_mask"], [[1, 1, 0, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(rows["stopped"], [1, 0])
  with pytest.raises(ValueError, match="longer than max_prompt_len=4"):
    rollout.rollout_rows(prompts, samples, max_prompt_len=4)


def _scored(tiny, prompts, samples, kl_coef=0.1, penalty=-1.0, calibration=(0.0, 1.0),
            normalise=False):
  cfg, _, roles = tiny
  rows = rollout.rollout_rows(prompts, samples, max_prompt_len=32)
  scored = rollout.score_rollout(
      roles, {k: jnp.asarray(v) for k, v in rows.items()}, jnp.float32(kl_coef),
      jnp.asarray(calibration, jnp.float32), cfgs=(cfg,) * 4, settings=SETTINGS,
      missing_eop_penalty=penalty, normalise=normalise)
  return rows, {k: np.asarray(v) for k, v in scored.items()}


def test_scored_rollout_agrees_with_the_engine_and_the_formulas(tiny):
  cfg, vocabulary, roles = tiny
  prompts = _prompts(vocabulary, ["Sort: 4913", "What is 3 + 4?", "Copy: red fox"])
  samples = engine.sample(cfg, roles["policy"], [p.ids for p in prompts],
                          engine.SamplingConfig(max_new_tokens=8, temperature=0.8, seed=3,
                                                stop_ids=(vocab_lib.EOS_ID, 5)))
  rows, scored = _scored(tiny, prompts, samples)
  mask = rows["reply_mask"].astype(bool)
  assert mask.sum() > 3
  # The training forward pass recomputes the engine's log-probs (the first ratio is exactly 1).
  np.testing.assert_allclose(scored["old_logp"][mask], samples.logprobs[mask], atol=1e-4)
  np.testing.assert_allclose(scored["kl"], (scored["old_logp"] - scored["ref_logp"]) * mask,
                             atol=1e-6)
  score = scored["raw_score"] + np.where(rows["stopped"] > 0, 0.0, -1.0)
  np.testing.assert_allclose(scored["score"], score, atol=1e-6)
  want = np.asarray(ppo.token_rewards(jnp.asarray(score), jnp.asarray(scored["kl"]), mask, 0.1))
  np.testing.assert_allclose(scored["rewards"], want, atol=1e-5)
  advantages, returns = ppo.gae(jnp.asarray(want), jnp.asarray(scored["old_values"]), mask,
                                1.0, 0.95)
  np.testing.assert_allclose(scored["returns"], returns, atol=1e-5)
  np.testing.assert_allclose(scored["advantages"], ppo.whiten(advantages, mask), atol=1e-5)
  assert np.all(scored["old_values"][~mask] == 0) and np.all(scored["advantages"][~mask] == 0)


def test_the_reward_is_what_the_reward_model_scores_for_the_same_conversation(tiny):
  """A reply in its canonical tokens, ending in <eop>, scores as `batgpt reward score` would
  score the (prompt, reply) answer; normalised by the calibration when asked."""
  cfg, vocabulary, roles = tiny
  query, replies = "Sort: 4913", ["1349", "1394"]
  eop = vocabulary.tokenizer.piece_to_id(chat.END_OF_PROMPT)
  prompts = _prompts(vocabulary, [query] * 2)
  reply_ids = []
  for reply in replies:
    ids, _ = chat.rendered(vocabulary, chat.Conversation(((query, reply),)))
    reply_ids.append(ids[len(prompts[0].ids) - 1:])
    assert reply_ids[-1][-1] == eop
  width = max(map(len, reply_ids))
  tokens = np.zeros((2, width), np.int32)
  for row, ids in enumerate(reply_ids):
    tokens[row, :len(ids)] = ids
  samples = engine.Samples(tokens=tokens, logprobs=np.zeros((2, width), np.float32),
                           lengths=np.array([len(i) for i in reply_ids]),
                           stopped=np.array([True, True]))
  _, scored = _scored(tiny, prompts, samples, calibration=(0.5, 2.0), normalise=True)
  model = reward_score.RewardModel(cfg, roles["reward"], None, "test")
  pair = preferences.Pair(history=(), query=query, chosen=replies[0], rejected=replies[1])
  want = reward_score.score_pairs(model, vocabulary, [pair], seq_len=128, batch=1)[0]
  np.testing.assert_allclose(scored["raw_score"], want, atol=1e-4)
  np.testing.assert_allclose(scored["score"], (want - 0.5) / 2.0, atol=1e-4)
  assert abs(want[0] - want[1]) > 1e-5  # the two replies are told apart


def test_metrics_of_a_rollout():
  rows = {"reply_mask": np.array([[1, 1, 0], [1, 1, 1]]), "stopped": np.array([1, 0]),
          "sample_logp": np.zeros((2, 3), np.float32)}
  scored = {"raw_score": np.array([1.0, 3.0]), "score": np.array([0.0, 1.0]),
            "kl": np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 1.0]]),
            "rewards": np.zeros((2, 3)), "old_values": np.array([[1.0, 2.0, 0.0],
                                                                [3.0, 4.0, 5.0]]),
            "returns": np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]]),
            "old_logp": np.zeros((2, 3), np.float32)}
  values = rollout.rollout_metrics(rows, scored, 0.2)
  assert values["reward/raw"] == 2.0 and values["kl/sequence"] == 1.5
  assert values["reply/length"] == 2.5 and values["reply/eop_rate"] == 0.5
  assert values["value/explained_variance"] == pytest.approx(1.0)
  assert values["kl/coef"] == pytest.approx(0.2)


def test_a_shared_backbone_adds_value_coef_times_the_value_loss(tiny):
  cfg, vocabulary, roles = tiny
  shared = {**roles["policy"], ppo.VALUE_HEAD: roles["value"][ppo.VALUE_HEAD]}
  prompts = _prompts(vocabulary, ["Sort: 4913", "Copy: red fox"])
  samples = engine.sample(cfg, shared, [p.ids for p in prompts],
                          engine.SamplingConfig(max_new_tokens=6, temperature=0.8, seed=5))
  rows, scored = _scored((cfg, vocabulary, {**roles, "policy": shared, "value": shared}),
                         prompts, samples)
  batch = {k: rows[k] for k in ("tokens", "positions", "segment_ids", "reply_mask")}
  batch.update({k: scored[k] for k in ("old_logp", "old_values", "advantages", "returns")})
  batch["norm"] = np.full((2,), rows["reply_mask"].sum(), np.float32)
  batch["share"] = np.full((2,), 0.5, np.float32)
  batch = {"ppo": {k: jnp.asarray(v) for k, v in batch.items()}}
  settings = dict(SETTINGS, value_coef=0.3)
  both = ppo.policy_objective(cfg, settings, value_head=True)
  assert both.heads == (ppo.VALUE_HEAD,)
  policy, value = ppo.policy_objective(cfg, settings), ppo.value_objective(cfg, settings)
  total, _, sums = both.loss(shared, batch, {})
  policy_loss, value_loss = policy.loss(shared, batch, {})[0], value.loss(shared, batch, {})[0]
  assert float(value_loss) > 1e-3
  np.testing.assert_allclose(total, policy_loss + 0.3 * value_loss, rtol=1e-6)
  np.testing.assert_allclose(sums["value/loss"], value_loss, rtol=1e-6)
  # The head learns from the value loss alone, the LM head from the policy loss alone.
  grad = lambda objective: jax.grad(lambda p: objective.loss(p, batch, {})[0])(shared)
  g_both, g_policy, g_value = grad(both), grad(policy), grad(value)
  np.testing.assert_allclose(g_both[ppo.VALUE_HEAD]["kernel"],
                             0.3 * g_value[ppo.VALUE_HEAD]["kernel"], rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(g_both["lm_head"], g_policy["lm_head"], rtol=1e-5, atol=1e-8)
  assert float(jnp.abs(g_both["final_norm"]["scale"] - g_policy["final_norm"]["scale"]).max()) > 0
