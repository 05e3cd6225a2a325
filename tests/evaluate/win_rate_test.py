"""Win rate: both orders, ties half, antisymmetry (A vs B = 1 - B vs A, A vs A = 1/2) with a
reward-model judge and with the AI labeller, and the command end to end."""

import json

import numpy as np
import pytest

from batgpt_jax import checkpoints, cli
from batgpt_jax.align import label, reward_score
from batgpt_jax.evaluate import generation, win_rate
from batgpt_jax.model import heads
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.sample import options
from batgpt_jax.train import state as train_state
from testlib import trained_like_params

CFG = ModelConfig(vocab_size=400, max_len=512, init_std=0.2)
PROMPTS = [generation.Prompt(q, (), "all", None) for q in (
    "the red fox runs", "a small town by the river", "what is the dog eating", "bread and water",
    "the cat sleeps", "blue sky at night", "where does the river go", "a dog and a cat")]
REPLIES = generation.GenerationConfig(max_new_tokens=8, batch_size=8)
JUDGE = win_rate.WinRateConfig(seq_len=256, batch_size=8)


def _loaded(vocabulary, seed, source):
  return options.Loaded(cfg=CFG, params=trained_like_params(CFG, seed=seed), vocabulary=vocabulary,
                        mesh=None, rules=(), source=source)


@pytest.fixture(scope="module")
def policies(data_tiny_vocab):
  return (_loaded(data_tiny_vocab, 1, "a/checkpoints/0"),
          _loaded(data_tiny_vocab, 2, "b/checkpoints/0"))


@pytest.fixture(scope="module")
def reward_model():
  params = {**trained_like_params(CFG, seed=7), **heads.init_heads(CFG, 7, ("reward_head",))}
  return reward_score.RewardModel(CFG, params, None, "judge/checkpoints/0")


def _length_judge(bias: float = 0.0):
  """P(first better) from the replies' lengths (longer wins), plus a bias toward the first."""
  def judge(first, second):
    diff = np.array([len(a) - len(b) for a, b in zip(first, second)], np.float64)
    return 1.0 / (1.0 + np.exp(-(diff + bias)))
  return judge


def test_both_orders_and_ties_counted_half():
  a, b = ["long reply", "x", "same", "mid"], ["short", "longer one", "same", "abc"]
  out = win_rate.judged(a, b, _length_judge())
  # prompt 0: A longer, wins both orders; 1: A loses both; 2: the same text, a tie;
  # 3: equal lengths, P = 1/2 in each order, a tie.
  assert out["per_prompt"]["score"] == [1.0, 0.0, 0.5, 0.5]
  assert out["win_rate"] == pytest.approx(0.5) and (out["wins"], out["losses"], out["ties"]) == (
      1, 1, 2)
  assert out["order_flips"] == 0.0
  # A judge that always prefers what it sees first gives every prompt half, whatever A says.
  biased = win_rate.judged(a, b, lambda first, second: np.full(len(first), 0.9))
  assert biased["win_rate"] == 0.5 and biased["order_flips"] == 0.75


def test_swapping_the_two_sides_gives_one_minus_the_win_rate():
  rng = np.random.default_rng(0)
  a = ["w" * n for n in rng.integers(1, 9, 50)]
  b = ["w" * n for n in rng.integers(1, 9, 50)]
  for bias in (0.0, 1.5):  # a position-biased judge too
    ab, ba = win_rate.judged(a, b, _length_judge(bias)), win_rate.judged(b, a, _length_judge(bias))
    assert ab["win_rate"] + ba["win_rate"] == pytest.approx(1.0, abs=1e-12)
    assert ab["soft_win_rate"] + ba["soft_win_rate"] == pytest.approx(1.0, abs=1e-12)
    assert (ab["wins"], ab["ties"]) == (ba["losses"], ba["ties"])
    assert win_rate.judged(a, a, _length_judge(bias))["win_rate"] == 0.5


@pytest.mark.parametrize("kind", win_rate.JUDGE_KINDS)
def test_real_judges_are_antisymmetric(policies, reward_model, data_tiny_vocab, kind):
  if kind == "reward":
    judge = win_rate.reward_judge(reward_model, data_tiny_vocab, PROMPTS, JUDGE)
  else:
    model = label.model_judge(CFG, trained_like_params(CFG, seed=9), data_tiny_vocab, seq_len=512,
                              batch=8)
    judge = win_rate.labeller_judge(model, PROMPTS, label.DEFAULT_TEMPLATE, JUDGE)
    short = win_rate.WinRateConfig(seq_len=16)
    short_model = label.model_judge(CFG, trained_like_params(CFG, seed=9), data_tiny_vocab,
                                    seq_len=16, batch=8)
    with pytest.raises(ValueError, match=r"WinRateConfig.seq_len \(now 16\)"):
      win_rate.labeller_judge(short_model, PROMPTS, label.DEFAULT_TEMPLATE, short)(["a"], ["b"])
  a, b = policies
  ab = win_rate.evaluate(a, b, judge, PROMPTS, REPLIES)
  ba = win_rate.evaluate(b, a, judge, PROMPTS, REPLIES)
  assert ab["win_rate"] + ba["win_rate"] == pytest.approx(1.0, abs=1e-9)
  assert ab["soft_win_rate"] + ba["soft_win_rate"] == pytest.approx(1.0, abs=1e-6)
  assert win_rate.evaluate(a, a, judge, PROMPTS, REPLIES)["win_rate"] == 0.5
  # The replies judged are the generation task's, and the two policies do differ.
  assert [p["reply_a"] for p in ab["prompts"]] == generation.replies(a, PROMPTS, REPLIES)
  assert sum(p["reply_a"] != p["reply_b"] for p in ab["prompts"]) >= len(PROMPTS) // 2
  assert ab["wins"] + ab["losses"] >= 1, "the judge should decide at least one prompt"
  # Each order's P(A better) is the judge's own number on that pair.
  first = [p["reply_a"] for p in ab["prompts"]]
  second = [p["reply_b"] for p in ab["prompts"]]
  np.testing.assert_allclose([p["p_a_first"] for p in ab["prompts"]], judge(first, second),
                             atol=1e-6)


def test_the_reward_judge_is_sigmoid_of_the_reward_difference(reward_model, data_tiny_vocab):
  judge = win_rate.reward_judge(reward_model, data_tiny_vocab, PROMPTS[:3], JUDGE)
  first, second = ["a red fox", "bread", "the town"], ["the dog", "water and bread", "a cat"]
  pairs = win_rate._pairs(PROMPTS[:3], first, second)  # pylint: disable=protected-access
  rewards = reward_score.score_pairs(reward_model, data_tiny_vocab, pairs, seq_len=256, batch=8)
  np.testing.assert_allclose(judge(first, second),
                             1 / (1 + np.exp(-(rewards[:, 0] - rewards[:, 1]))), atol=1e-6)


def test_the_command_writes_the_rate_and_its_swap_is_one_minus_it(policies, reward_model,
                                                                  data_tiny_vocab_path, tmp_path,
                                                                  capsys):
  opt = train_state.OptimizerConfig()
  for name, params in (("a", policies[0].params), ("b", policies[1].params),
                       ("judge", reward_model.params)):
    checkpoints.write_run_dir(str(tmp_path / name), CFG, params, opt)
  prompt_set = tmp_path / "prompts.jsonl"
  prompt_set.write_text("".join(json.dumps({"prompt": p.prompt}) + "\n" for p in PROMPTS))
  common = [f"--vocab={data_tiny_vocab_path}", f"--eval_file={prompt_set}",
            f"--judge={tmp_path / 'judge'}", "--max_new_tokens=8",
            "--gin.WinRateConfig.seq_len=256"]
  rates = {}
  for a, b in (("a", "b"), ("b", "a")):
    assert cli.main(["eval", "--task=win_rate", f"--checkpoint={tmp_path / a}",
                     f"--baseline={tmp_path / b}", *common]) == 0
    rates[a] = json.loads((tmp_path / a / "eval" / f"win_rate-vs-{b}-0.json").read_text())
  assert rates["a"]["win_rate"] + rates["b"]["win_rate"] == pytest.approx(1.0, abs=1e-9)
  assert rates["a"]["judge_kind"] == "reward" and len(rates["a"]["prompts"]) == len(PROMPTS)
  assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))
  captured = capsys.readouterr()
  assert "Win rate of" in captured.out + captured.err
  assert cli.main(["eval", "--task=win_rate", f"--checkpoint={tmp_path / 'a'}", *common]) == 2
  assert "needs --baseline" in capsys.readouterr().err
  # A decoder without a reward head is refused as a reward judge, with the fix named.
  assert cli.main(["eval", "--task=win_rate", f"--checkpoint={tmp_path / 'a'}",
                   f"--baseline={tmp_path / 'b'}", *common, f"--judge={tmp_path / 'b'}"]) == 2
  assert "not a reward model" in capsys.readouterr().err
  # The AI labeller judges from a decoder checkpoint (here b itself).
  assert cli.main(["eval", "--task=win_rate", f"--checkpoint={tmp_path / 'a'}",
                   f"--baseline={tmp_path / 'b'}", *common, f"--judge={tmp_path / 'b'}",
                   "--judge_kind=labeller", "--gin.WinRateConfig.seq_len=512"]) == 0
  labelled = json.loads((tmp_path / "a" / "eval" / "win_rate-vs-b-0.json").read_text())
  assert labelled["judge_kind"] == "labeller" and 0.0 <= labelled["win_rate"] <= 1.0
  with pytest.raises(ValueError, match="judge_kind='human'"):
    win_rate.WinRateConfig(judge_kind="human")
