"""PPO and DPO learn to answer by the preferred rule (the whole pipeline on the tiny model, about
8 minutes here).

Both start from one SFT model that answers the planted sorting prompts with the sorted digits or
with one adjacent pair swapped (a 50/50 mix in its data). Against a reward model of the three
planted families, PPO raises the share of sampled held-out replies that follow the preferred rule
(the sorted digits) to at least 85%, and the adaptive KL controller holds the measured KL within
50% of its target over the second half of the run. DPO on the `sort_swap` pairs, with the
preferred answer's NLL term (RPO, `dpo_settings.sft_coef`), raises the share of temperature-1
samples that sort from about half to at least 85%, at most 5 nats from its reference.
(benchmarks/ppo_study.py adds the control without the KL term, the anchoring terms and a reward
model that can be hacked; docs/ppo.md and docs/alignment.md have their figures. The other DPO
tests are in tests/objectives/preference_learning_test.py.)
"""

import os

import gin
import numpy as np
import pytest

from batgpt_jax import checkpoints, config
from batgpt_jax.data import planted
from batgpt_jax.evaluate import generation
from batgpt_jax.sample import options
from batgpt_jax.train import loop

RUN = ["models/tiny.gin", "TrainConfig.async_checkpoint = False", "DataConfig.shards = 4"]
SFT = RUN + ["sft.gin", "DataConfig.sources = [(@ChatJsonl(), 1.0)]", "TrainConfig.steps = 400",
             "TrainConfig.global_batch = 16", "TrainConfig.seq_len = 128",
             "TrainConfig.eval_every = 0", "TrainConfig.log_every = 100",
             "TrainConfig.checkpoint_every = 400", "OptimizerConfig.learning_rate = 3e-3",
             "OptimizerConfig.warmup_steps = 20"]
FAMILIES = ("sort_swap", "sort_length", "sort_digit")
# A reward model of the swaps alone is hacked: the policy writes any ascending digits (docs/ppo.md).
REWARD = RUN + ["reward.gin", "TrainConfig.steps = 600", "TrainConfig.global_batch = 32",
                "TrainConfig.eval_every = 600", "TrainConfig.checkpoint_every = 600",
                "TrainConfig.log_every = 200", "OptimizerConfig.learning_rate = 3e-3",
                "OptimizerConfig.warmup_steps = 10",
                "DataConfig.sources = [" + ", ".join(
                    f"(@{f}/PlantedPreferences(), 1.0)" for f in FAMILIES) + "]",
                *[f"{f}/PlantedPreferences.family = '{f}'" for f in FAMILIES]]
KL_TARGET = 1.5
PPO = RUN + ["ppo.gin", "TrainConfig.steps = 40", "TrainConfig.eval_every = 40",
             "TrainConfig.log_every = 10", "TrainConfig.checkpoint_every = 40",
             "OptimizerConfig.learning_rate = 1e-4", "ppo_settings.temperature = 0.7",
             "PPOConfig.rollout_batch = 128", "PPOConfig.eval_prompts = 256",
             "PPOConfig.sft_data = None", "PPOConfig.ptx_data = None",
             "PPOConfig.kl_coef = 0.05", f"PPOConfig.kl_target = {KL_TARGET}",
             "PPOConfig.kl_horizon = 256"]
# Plain DPO (sft_coef 0) widens the margin by lowering both answers, and the samples stop sorting
# (11% sorted at temperature 1 after 100 steps, docs/alignment.md); the NLL term keeps the
# preferred answer likely.
DPO = RUN + ["dpo.gin", "TrainConfig.steps = 50", "TrainConfig.eval_every = 50",
             "TrainConfig.log_every = 10", "TrainConfig.checkpoint_every = 50",
             "OptimizerConfig.learning_rate = 2e-4", "dpo_settings.sft_coef = 2.0"]
DPO_SAMPLED_PROMPTS = 256
MIN_DPO_ACCURACY = 0.90
MAX_DPO_KL = 5.0
MAX_SFT_RULE_SHARE = 0.70  # "about half": the SFT model sorts some, swaps or garbles the rest
MIN_RULE_SHARE = 0.85
MIN_RULE_RISE = 0.10
KL_BAND = 0.5  # relative to the target


def _train(run_dir, settings, *extra):
  gin.clear_config()
  files = [s for s in settings if s.endswith(".gin")]
  bindings = [s for s in settings if not s.endswith(".gin")]
  gin_text = config.parse_gin(files, [*bindings, f"TrainConfig.run_dir = '{run_dir}'", *extra])
  return loop.train(**config.run_configs(), gin_text=gin_text)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> str:
  """SFT on every planted `sort_swap` prompt answered both ways, from fresh parameters."""
  os.environ.setdefault("BATGPT_CACHE", str(tmp_path_factory.mktemp("cache")))
  root = tmp_path_factory.mktemp("pipeline")
  checkpoints.write_fresh_run_dir(str(root / "base"), config.model_size("tiny"))
  planted.write_both_answers("sort_swap", root / "sort.jsonl")
  _train(root / "sft", SFT, f"TrainConfig.init_from = '{root / 'base'}'",
         f"ChatJsonl.file_pattern = '{root / 'sort.jsonl'}'")
  return str(root / "sft")


@pytest.fixture(scope="module")
def roles(sft_run, tmp_path_factory):
  """(sft run, reward run): the reward model of the three planted families, from the SFT run."""
  run_dir = tmp_path_factory.mktemp("reward")
  (held_out,) = [h for h in _train(run_dir, REWARD, f"TrainConfig.init_from = '{sft_run}'")
                 if h["kind"] == "eval"]
  assert held_out["reward/accuracy"] >= 0.98, held_out
  return sft_run, str(run_dir)


@pytest.fixture(scope="module")
def controlled(roles, tmp_path_factory):
  return _train(tmp_path_factory.mktemp("ppo"), PPO, f"TrainConfig.init_from = '{roles[0]}'",
                f"PPOConfig.reward_from = '{roles[1]}'")


def test_ppo_raises_the_share_of_replies_that_follow_the_rule(controlled):
  start, end = [h for h in controlled if h["kind"] == "eval"]
  train = [h for h in controlled if h["kind"] == "train"]
  assert start["step"] == 0 and end["step"] == 40
  share = start["reply/reference_match"], end["reply/reference_match"]
  assert share[1] >= MIN_RULE_SHARE and share[1] - share[0] >= MIN_RULE_RISE, share
  assert end["reward/score"] > start["reward/score"] + 0.1
  assert np.mean([h["reward/score"] for h in train[-5:]]) > train[0]["reward/score"]
  assert end["reply/eop_rate"] >= 0.95


def test_the_adaptive_coefficient_holds_the_kl_near_its_target(controlled):
  train = [h for h in controlled if h["kind"] == "train"]
  second_half = np.array([h["kl/sequence"] for h in train[len(train) // 2:]])
  assert abs(second_half.mean() - KL_TARGET) <= KL_BAND * KL_TARGET, second_half
  assert len({h["kl/coef"] for h in train}) == len(train)  # it moved every iteration


def _sampled_rule_share(run_dir, temperature: float) -> float:
  """The share of held-out `sort_swap` prompts whose sampled reply is the sorted (chosen) one."""
  gin.clear_config()
  config.parse_gin(RUN[:1] + ["sft.gin"], [])
  records = [r for _, r in planted.read_records("sort_swap", "validation")][:DPO_SAMPLED_PROMPTS]
  prompts = [generation.Prompt(r["prompt"], (r["chosen"],), "sort_swap", None) for r in records]
  cfg = generation.GenerationConfig(temperature=temperature, max_new_tokens=24, seed=1)
  replies = generation.replies(options.load(str(run_dir)), prompts, cfg)
  return float(np.mean([generation.exact_match(reply, p.answers)
                        for reply, p in zip(replies, prompts)]))


def test_dpo_with_the_nll_term_makes_sampled_replies_follow_the_rule(sft_run, tmp_path):
  history = _train(tmp_path / "dpo", DPO, f"TrainConfig.init_from = '{sft_run}'")
  (held_out,) = [h for h in history if h["kind"] == "eval"]
  assert held_out["reward/accuracy"] >= MIN_DPO_ACCURACY, held_out
  assert held_out["kl/sequence"] <= MAX_DPO_KL, held_out
  assert held_out["logratio/chosen"] > 0, held_out  # the preferred answers became likelier
  before = _sampled_rule_share(sft_run, 1.0)
  after = _sampled_rule_share(tmp_path / "dpo", 1.0)
  assert before <= MAX_SFT_RULE_SHARE and after >= MIN_RULE_SHARE, (before, after)
