"""SFT learns, end to end: pretrain briefly, instruction-tune from it, score held-out replies.

The numbers asserted are what the `tiny` model reaches within a test's budget on this CPU: it
learns the chat format (replies end with <eop>) and the reading families; the >= 90% per family
figure belongs to `make sft-smoke` (the `small` model, longer), reported in the README.
"""

import os

import gin
import pytest

from batgpt_jax import config
from batgpt_jax.evaluate import instruction_eval, instructions
from batgpt_jax.sample import options
from batgpt_jax.train import loop

PRETRAIN = ["smoke.gin", "TrainConfig.steps = 150", "TrainConfig.eval_every = 0",
            "TrainConfig.checkpoint_every = 150", "DataConfig.shards = 4"]
MIN_OVERALL = 0.025  # measured 0.067 on one machine, 0.040 on another; the base model scores 0
SFT = ["models/tiny.gin", "sft.gin", "TrainConfig.steps = 300", "TrainConfig.global_batch = 16",
       "TrainConfig.eval_every = 0", "TrainConfig.checkpoint_every = 300",
       "OptimizerConfig.learning_rate = 3e-3", "OptimizerConfig.warmup_steps = 30",
       "DataConfig.shards = 4"]


def _train(run_dir, settings, *extra):
  gin.clear_config()
  files = [s for s in settings if s.endswith(".gin")]
  bindings = [s for s in settings if not s.endswith(".gin")]
  gin_text = config.parse_gin(files, [*bindings, f"TrainConfig.run_dir = '{run_dir}'", *extra])
  loop.train(**config.run_configs(), gin_text=gin_text)


def _scores(run_dir):
  mesh, rules = options.mesh_and_rules()
  loaded = options.load(str(run_dir), mesh=mesh, rules=rules)
  return instruction_eval.evaluate(loaded, max_new_tokens=24)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  os.environ.setdefault("BATGPT_CACHE", str(tmp_path_factory.mktemp("cache")))
  base, tuned = tmp_path_factory.mktemp("base"), tmp_path_factory.mktemp("sft")
  _train(base, PRETRAIN)
  base_scores = _scores(base)
  _train(tuned, SFT, f"TrainConfig.init_from = '{base}'")
  return base_scores, _scores(tuned)


def test_sft_teaches_the_chat_format(runs):
  base, tuned = runs
  assert base["ended_with_eop"]["overall"] < 0.2  # pretraining alone never saw a chat
  assert tuned["ended_with_eop"]["overall"] >= 0.99


def test_sft_answers_held_out_instructions(runs):
  base, tuned = runs
  assert base["exact_match"]["overall"] <= 0.02
  assert tuned["exact_match"]["overall"] >= MIN_OVERALL


def test_shown_replies_put_the_wrong_ones_first():
  examples = [instructions.HeldOutExample("copy", "en", f"Copy: {w}", w) for w in "abcd"]
  examples.append(instructions.HeldOutExample("sort", "en", "Sort: 2 1", "1 2"))
  answers = [" a\n\n<eop>", " x\n\n<eop>", " c\n\n<eop>", " y", " 1 2\n\n<eop>"]
  shown = instruction_eval.shown_replies(examples, answers, show=3)
  assert [item["expected"] for item in shown["copy"]] == ["b", "d", "a"]
  assert shown["copy"][0] == {"query": "Copy: b", "expected": "b", "reply": " x\n\n<eop>"}
  assert [item["reply"] for item in shown["sort"]] == [" 1 2\n\n<eop>"]
  assert instruction_eval.shown_replies(examples, answers, show=0) == {"copy": [], "sort": []}
