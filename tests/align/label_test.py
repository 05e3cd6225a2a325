"""The RLAIF labeller: both orders cancel a judge's position bias, order flips are dropped or
down-weighted, the output is the preference schema, and a model judge reads P(A) exactly."""

import random
import subprocess
import sys

import jax
import numpy as np
import pytest

from batgpt_jax.align import label
from batgpt_jax.data import preference_schema, preference_tasks, preferences, vocab
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig

SETTINGS = label.judge_settings()
PAIRS = [p for _, p in preference_tasks.planted_pairs(preference_tasks.PlantedPreferences(),
                                                      "validation")]


def _shown_first(question: preferences.Pair) -> str:
  return question.query.split("Answer A: ")[1].split("\n\n")[0]


def test_both_orders_combine_in_closed_form():
  p, weight, flipped = label.combine(np.array([0.9, 0.8, 0.6]), np.array([0.3, 0.9, 0.45]), 0.25)
  np.testing.assert_allclose(p, [(0.9 + 0.7) / 2, (0.8 + 0.1) / 2, (0.6 + 0.55) / 2])
  assert flipped.tolist() == [False, True, False] and weight.tolist() == [1.0, 0.25, 1.0]


def test_a_judge_that_says_a_70_percent_of_the_time_leaves_no_position_bias():
  rng = random.Random(0)
  says_a = lambda questions: np.array([float(rng.random() < 0.7) for _ in questions])
  keep_all = dict(SETTINGS, flipped_weight=1.0)
  records = label.label_pairs(says_a, PAIRS, keep_all)
  assert len(records) == len(PAIRS) == 300
  # Position bias: how far the labels lean to the answer shown first (the pair's 'chosen').
  first_wins = [r["p_chosen"] if r["chosen"] == pair.chosen else 1 - r["p_chosen"]
                for r, pair in zip(records, PAIRS)]
  assert abs(np.mean(first_wins) - 0.5) < 0.05
  single_order = np.mean(says_a(PAIRS))  # asked once, A first: the bias itself
  assert single_order - 0.5 > 0.15


def test_order_flips_are_dropped_or_down_weighted():
  always_a = lambda questions: np.ones(len(questions))
  assert label.label_pairs(always_a, PAIRS[:10], SETTINGS) == []  # every verdict flips
  kept = label.label_pairs(always_a, PAIRS[:10], dict(SETTINGS, flipped_weight=0.5))
  assert [(r["weight"], r["flags"], r["p_chosen"]) for r in kept] == [(0.5, ["order_flip"],
                                                                       0.5)] * 10


def test_a_judge_that_knows_the_rule_labels_every_pair_right():
  knows = lambda questions: np.array([float(list(_shown_first(q)) == sorted(_shown_first(q)))
                                      for q in questions])
  swapped = [preferences.Pair(p.history, p.query, p.rejected, p.chosen) for p in PAIRS[:20]]
  records = label.label_pairs(knows, swapped, SETTINGS)
  assert [r["chosen"] for r in records] == [p.chosen for p in PAIRS[:20]]
  assert all(r["p_chosen"] == 1.0 and r["source"] == "ai" and "flags" not in r for r in records)
  assert all(preference_schema.validate_record(r) == r for r in records)


def test_the_model_judge_is_the_softmax_of_its_two_replies(data_tiny_vocab):
  cfg = ModelConfig(vocab_size=512)
  params = jax.jit(transformer.init_params, static_argnums=(0, 1))(cfg, 3)
  judge = label.model_judge(cfg, params, data_tiny_vocab, seq_len=512, batch=4)
  questions = [q for p in PAIRS[:3] for q in label.judge_prompts(p, SETTINGS["template"])]
  p_a = judge(questions)
  assert p_a.shape == (6,) and ((p_a > 0) & (p_a < 1)).all() and np.ptp(p_a) > 0
  alone = [float(judge([q])[0]) for q in questions[:2]]  # other rows in the batch change nothing
  np.testing.assert_allclose(alone, p_a[:2], atol=1e-5)
  l2r, _ = vocab.direction_ids(data_tiny_vocab)

  def reply_logprob(question, reply):
    ids, mask = preferences.chat.rendered(data_tiny_vocab, question.side(reply),
                                          last_turn_only=True)
    tokens = np.array([[l2r] + ids])
    logits = transformer.apply(cfg, params, tokens, np.arange(tokens.shape[1])[None],
                               np.ones_like(tokens))
    logp = np.asarray(jax.nn.log_softmax(logits[0, :-1], axis=-1))
    return sum(logp[i, tokens[0, i + 1]] for i in range(len(ids)) if mask[i])

  q = questions[0]
  expected = 1 / (1 + np.exp(reply_logprob(q, "B") - reply_logprob(q, "A")))
  assert float(p_a[0]) == pytest.approx(expected, abs=1e-5)


def test_label_help_loads_no_jax():
  probe = ("import sys, runpy\nsys.argv = ['batgpt', 'label', '--help']\n"
           "try:\n  runpy.run_module('batgpt_jax.cli', run_name='__main__')\n"
           "except SystemExit:\n  pass\n"
           "print('HEAVY', sorted(m for m in ('jax', 'tensorflow') if m in sys.modules))\n")
  proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                        timeout=60, check=True)
  assert "--checkpoint" in proc.stdout and "HEAVY []" in proc.stdout, proc.stdout[-500:]
