"""Preference losses in closed form: the pairwise reward loss (soft labels, margins, ties,
weights), DPO, IPO and label-smoothed DPO, and the per-pair reduction of packed rows."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax import objectives
from batgpt_jax.model import heads, transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import preference
from batgpt_jax.objectives.tokens import token_cross_entropy

# Two rows: row 0 holds pairs 1 (segments 1, 2) and 2 (segments 3, 4) and padding; row 1 one pair.
SEGMENTS = np.array([[1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 0, 0],
                     [1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 0, 0]], np.int32)
SCORE_AT = np.array([[0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0],
                     [0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0]], np.float32)


def _pair_values(per_pair):
  """A per-token field holding each pair's value on all of its tokens (as the data writes it)."""
  out = np.zeros(SEGMENTS.shape, np.float32)
  for row, values in enumerate(per_pair):
    for pair, value in enumerate(values, start=1):
      out[row][(SEGMENTS[row] + 1) // 2 == pair] = value
  out[SEGMENTS == 0] = 0
  return out


def _batch(weights=((1.0, 2.0), (0.5,)), margins=((0.0, 0.3), (1.0,)),
           p_chosen=((1.0, 0.8), (0.0,))):
  return {"segment_ids": jnp.asarray(SEGMENTS), "score_at": jnp.asarray(SCORE_AT),
          "pair_weight": jnp.asarray(_pair_values(weights)),
          "pair_margin": jnp.asarray(_pair_values(margins)),
          "pair_p_chosen": jnp.asarray(_pair_values(p_chosen))}


def _log_sigmoid(x):
  return -math.log1p(math.exp(-x))


def test_side_sums_add_each_sides_tokens():
  values = jnp.arange(24, dtype=jnp.float32).reshape(2, 12)
  chosen, rejected = preference.side_sums(values, jnp.asarray(SEGMENTS))
  assert chosen.shape == rejected.shape == (2, 7)  # L // 2 + 1 pair slots per row
  assert chosen[0, :3].tolist() == [0 + 1 + 2, 6 + 7, 0]
  assert rejected[0, :3].tolist() == [3 + 4 + 5, 8 + 9, 0]
  assert chosen[1, :2].tolist() == [12 + 13 + 14 + 15, 0]
  assert rejected[1, :2].tolist() == [16 + 17 + 18 + 19 + 20, 0]
  assert float(chosen.sum() + rejected.sum()) == float(values[SEGMENTS > 0].sum())  # no pad


def test_pair_fields_read_each_pairs_scalars_once():
  pairs = preference.pair_fields(_batch())
  assert pairs["present"][0, :3].tolist() == [1, 1, 0] and pairs["present"][1, :2].tolist() == [1, 0]
  assert pairs["weight"][0, :2].tolist() == [1.0, 2.0] and pairs["weight"][1, 0] == 0.5
  np.testing.assert_allclose(pairs["margin"][0, :2], [0.0, 0.3], atol=1e-7)
  np.testing.assert_allclose(pairs["p_chosen"][0, :2], [1.0, 0.8], atol=1e-7)
  assert float(pairs["weight"].sum()) == 3.5  # empty pair slots weigh nothing


@pytest.mark.parametrize("r_c,r_r,p,m", [(0.7, -0.2, 1.0, 0.0), (0.1, 0.9, 1.0, 0.5),
                                         (1.3, 0.4, 0.8, 0.2), (-0.5, 2.0, 0.0, 0.0),
                                         (0.3, 0.3, 0.5, 0.0), (4.0, -3.0, 0.25, 1.5)])
def test_reward_pair_loss_is_the_soft_label_formula(r_c, r_r, p, m):
  d = r_c - r_r
  expected = -p * _log_sigmoid(d - m) - (1 - p) * _log_sigmoid(-d - m)
  got = preference.reward_pair_loss(jnp.float32(r_c), jnp.float32(r_r), jnp.float32(p),
                                    jnp.float32(m))
  assert float(got) == pytest.approx(expected, abs=1e-6)


def test_a_tie_is_symmetric_and_a_flipped_label_swaps_the_sides():
  loss = lambda c, r, p: float(preference.reward_pair_loss(jnp.float32(c), jnp.float32(r),
                                                           jnp.float32(p), jnp.float32(0.2)))
  assert loss(0.9, -0.4, 0.5) == pytest.approx(loss(-0.4, 0.9, 0.5), abs=1e-7)
  assert loss(0.9, -0.4, 0.0) == pytest.approx(loss(-0.4, 0.9, 1.0), abs=1e-7)
  assert loss(0.0, 0.0, 0.5) == pytest.approx(-_log_sigmoid(-0.2), abs=1e-6)


@pytest.mark.parametrize("h,p,beta,eps", [(0.8, 1.0, 0.1, 0.0), (-2.0, 1.0, 0.5, 0.0),
                                          (3.0, 0.7, 0.2, 0.0), (1.5, 1.0, 0.1, 0.1),
                                          (-0.4, 0.0, 0.3, 0.2)])
def test_dpo_and_conservative_dpo_are_their_formulas(h, p, beta, eps):
  q = p * (1 - eps) + (1 - p) * eps
  expected = -q * _log_sigmoid(beta * h) - (1 - q) * _log_sigmoid(-beta * h)
  got = preference.dpo_pair_loss(jnp.float32(h), jnp.float32(p), beta=beta, loss="sigmoid",
                                 label_smoothing=eps)
  assert float(got) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("h,p,beta", [(0.8, 1.0, 0.1), (6.0, 1.0, 0.1), (-1.0, 0.6, 0.5)])
def test_ipo_is_its_formula_and_settles_at_one_over_two_beta(h, p, beta):
  target = 1 / (2 * beta)
  expected = p * (h - target) ** 2 + (1 - p) * (h + target) ** 2
  got = preference.dpo_pair_loss(jnp.float32(h), jnp.float32(p), beta=beta, loss="ipo",
                                 label_smoothing=0.0)
  assert float(got) == pytest.approx(expected, rel=1e-6, abs=1e-6)
  grad = jax.grad(lambda x: preference.dpo_pair_loss(x, 1.0, beta=beta, loss="ipo",
                                                     label_smoothing=0.0))
  assert float(grad(jnp.float32(target))) == 0.0  # the minimum of a clean label


def test_reward_sums_and_their_summary_in_closed_form():
  batch = _batch()
  r_chosen = jnp.zeros((2, 7)).at[0, 0].set(1.0).at[0, 1].set(-0.5).at[1, 0].set(0.2)
  r_rejected = jnp.zeros((2, 7)).at[0, 0].set(0.4).at[0, 1].set(0.5).at[1, 0].set(-1.0)
  pairs = preference.pair_fields(batch)
  loss_sum, weight_total, sums = preference.reward_sums(r_chosen, r_rejected, pairs)
  terms = [(1.0, 1.0, 0.4, 1.0, 0.0), (2.0, -0.5, 0.5, 0.8, 0.3), (0.5, 0.2, -1.0, 0.0, 1.0)]
  expected = sum(w * (-p * _log_sigmoid(c - r - m) - (1 - p) * _log_sigmoid(r - c - m))
                 for w, c, r, p, m in terms)
  assert float(loss_sum) == pytest.approx(expected, abs=1e-6)
  assert float(weight_total) == 3.5
  out = preference.summarize_reward(loss_sum, weight_total, sums)
  # Pair 1 right (0.6 > 0, p = 1), pair 2 wrong (-1.0 < 0, p = 0.8), pair 3 right (1.2 > 0, p = 0).
  assert float(out["reward/accuracy"]) == pytest.approx(1 / 3, abs=1e-7)
  assert float(out["reward/margin"]) == pytest.approx((0.6 - 1.0 + 1.2) / 3, abs=1e-6)
  rewards = np.array([1.0, -0.5, 0.2, 0.4, 0.5, -1.0])
  assert float(out["reward/mean"]) == pytest.approx(rewards.mean(), abs=1e-6)
  assert float(out["reward/std"]) == pytest.approx(rewards.std(), abs=1e-6)
  assert float(out["loss"]) == pytest.approx(expected / 3.5, abs=1e-6)


def test_a_tie_is_never_counted_in_accuracy():
  pairs = preference.pair_fields(_batch(p_chosen=((0.5, 1.0), (0.5,))))
  diff = jnp.ones((2, 7))
  decided, correct = preference.decided_correct(diff, pairs["p_chosen"], pairs["present"])
  assert float(decided.sum()) == 1.0 and float(correct.sum()) == 1.0


CFG = ModelConfig(vocab_size=64, hidden=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                  ffn=64)


def _model_batch(seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, CFG.vocab_size, SEGMENTS.shape).astype(np.int32) * (SEGMENTS > 0)
  positions = np.zeros_like(SEGMENTS)
  for row in range(2):
    for seg in range(1, 5):
      where = np.nonzero(SEGMENTS[row] == seg)[0]
      positions[row, where] = np.arange(len(where))
  same = np.zeros(SEGMENTS.shape, bool)
  same[:, :-1] = (SEGMENTS[:, 1:] == SEGMENTS[:, :-1]) & (SEGMENTS[:, :-1] > 0)
  targets = np.where(same, np.roll(tokens, -1, axis=1), 0)
  weights = same.astype(np.float32)
  weights[:, 0] = 0  # the first target of each row is prompt, not answer
  return {**_batch(), "tokens": jnp.asarray(tokens), "positions": jnp.asarray(positions),
          "targets": jnp.asarray(targets), "loss_weights": jnp.asarray(weights)}


def _side_totals(per_token, row_values=None):
  """Per-pair (chosen, rejected) sums of a numpy [2, 12] array, in pair order over rows."""
  out = []
  for row in range(2):
    for pair in (1, 2) if row == 0 else (1,):
      out.append((per_token[row][SEGMENTS[row] == 2 * pair - 1].sum(),
                  per_token[row][SEGMENTS[row] == 2 * pair].sum()))
  return out


def test_reward_objective_reads_the_head_at_each_answers_last_token():
  params = jax.jit(heads.init_params, static_argnums=(0, 1, 2))(CFG, 0, ("reward_head",))
  batch = _model_batch()
  objective = objectives.build("reward", CFG)
  assert objective.heads == ("reward_head",)
  loss_sum, weight_total, sums = objective.loss(params, batch, {})
  hidden = np.asarray(transformer.apply(CFG, heads.decoder_params(params), batch["tokens"],
                                        batch["positions"], batch["segment_ids"],
                                        method="hidden_states"))
  head = params["reward_head"]
  score = hidden @ np.asarray(head["kernel"]) + float(head["output_bias"])  # [2, 12]
  rewards = _side_totals(score * SCORE_AT)
  terms = zip((1.0, 2.0, 0.5), rewards, (1.0, 0.8, 0.0), (0.0, 0.3, 1.0))
  expected = sum(w * (-p * _log_sigmoid(c - r - m) - (1 - p) * _log_sigmoid(r - c - m))
                 for w, (c, r), p, m in terms)
  assert float(loss_sum) == pytest.approx(expected, abs=1e-6)
  assert float(weight_total) == 3.5 and float(sums["pairs"]) == 3.0


@pytest.mark.parametrize("sft_coef", [0.0, 0.7])
def test_dpo_objective_against_its_reference_in_closed_form(sft_coef):
  policy = transformer.init_params(CFG, 1)
  reference = transformer.init_params(CFG, 2)
  batch = _model_batch()
  settings = {"beta": 0.2, "loss": "sigmoid", "label_smoothing": 0.1, "sft_coef": sft_coef}
  objective = preference.dpo_objective(CFG, settings=settings)
  assert objective.frozen_roles == ("reference",)
  loss_sum, weight_total, sums = objective.loss(policy, batch, {"reference": reference})

  def logps(params):
    logits = transformer.apply(CFG, params, batch["tokens"], batch["positions"],
                               batch["segment_ids"])
    return -np.asarray(token_cross_entropy(logits, batch["targets"])[0])  # [2, 12]

  weights = np.asarray(batch["loss_weights"])
  lp_pi, lp_ref = logps(policy), logps(reference)
  pi, ref = _side_totals(lp_pi * weights), _side_totals(lp_ref * weights)
  tokens = _side_totals(weights)
  expected, correct, nlls = 0.0, 0, []
  for w, p, (pc, pr), (rc, rr), (nc, nr) in zip((1.0, 2.0, 0.5), (1.0, 0.8, 0.0), pi, ref,
                                                tokens):
    h = (pc - rc) - (pr - rr)
    q = p * 0.9 + (1 - p) * 0.1
    nlls.append(p * -pc / nc + (1 - p) * -pr / nr)  # RPO: the preferred answer, per token
    expected += w * (-q * _log_sigmoid(0.2 * h) - (1 - q) * _log_sigmoid(-0.2 * h)
                     + sft_coef * nlls[-1])
    correct += (h > 0) == (p > 0.5)
  assert float(loss_sum) == pytest.approx(expected, abs=1e-5)
  assert float(weight_total) == 3.5
  out = preference.summarize_dpo(loss_sum, weight_total, sums)
  assert float(out["reward/accuracy"]) == pytest.approx(correct / 3, abs=1e-7)
  assert float(out["logp/chosen"]) == pytest.approx(np.mean([c for c, _ in pi]), abs=1e-5)
  assert float(out["logratio/chosen"]) == pytest.approx(
      np.mean([c - rc for (c, _), (rc, _) in zip(pi, ref)]), abs=1e-5)
  def log_softmax(params):
    logits = np.asarray(transformer.apply(CFG, params, batch["tokens"], batch["positions"],
                                          batch["segment_ids"]), np.float64)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))

  p_pi, p_ref = log_softmax(policy), log_softmax(reference)
  kl = _side_totals((np.exp(p_pi) * (p_pi - p_ref)).sum(-1) * weights)
  assert float(out["kl/sequence"]) == pytest.approx(np.mean([a + b for a, b in kl]) / 2, abs=1e-5)
  assert float(out["kl/sequence"]) > 0
  assert float(out["nll/preferred"]) == pytest.approx(np.mean(nlls), abs=1e-5)


def test_dpo_against_itself_is_log_two_with_no_gradient_through_the_reference():
  params = transformer.init_params(CFG, 1)
  batch = _model_batch()
  objective = preference.dpo_objective(CFG, settings={"beta": 0.1})
  loss_sum, weight_total, sums = objective.loss(params, batch, {"reference": params})
  assert float(loss_sum / weight_total) == pytest.approx(math.log(2), abs=1e-6)
  assert float(sums["kl_sum"]) == pytest.approx(0.0, abs=1e-6)
  grads = jax.jit(jax.grad(lambda ref: objective.loss(params, batch, {"reference": ref})[0]))(
      params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_dpo_settings_and_a_missing_reference_are_named():
  with pytest.raises(ValueError, match="dpo_settings.loss='hinge'"):
    preference.dpo_settings(loss="hinge")
  with pytest.raises(ValueError, match="beta=0"):
    preference.dpo_settings(beta=0)
  with pytest.raises(ValueError, match="sft_coef=-1"):
    preference.dpo_settings(sft_coef=-1)
  objective = preference.dpo_objective(CFG, settings={"beta": 0.1})
  with pytest.raises(ValueError, match="TrainConfig.reference_from"):
    objective.loss(transformer.init_params(CFG, 1), _model_batch(), {})
  with pytest.raises(ValueError, match="set TrainConfig.loss_chunk = 0"):
    preference.dpo_objective(CFG, loss_chunk=64, settings={"beta": 0.1})
