"""PPO's loop (align/ppo.py) gives the same run whatever the split: microbatching 1 x 8 equals
8 x 1, 8 fake devices equal one, and a killed run resumed equals the uninterrupted one (its KL
coefficient included). With the value head on the policy's backbone (and prompts from two
sources) the head trains inside the policy. Bad settings are refused with the setting named.

The roles are step-0 checkpoints of the tiny model (a fresh reward head on a fresh decoder): the
invariances hold for any parameters, and a few iterations keep this file fast.
"""

import json
import os
import signal
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest

from batgpt_jax import checkpoints, config
from batgpt_jax.data import prompts as prompts_lib
from batgpt_jax.align import ppo as ppo_loop
from batgpt_jax.train import loop

BASE = ["models/tiny.gin", "ppo.gin", "TrainConfig.async_checkpoint = False",
        "DataConfig.shards = 4", "PPOConfig.rollout_batch = 16", "PPOConfig.minibatches = 2",
        "PPOConfig.epochs = 2", "PPOConfig.max_new_tokens = 6",
        "PPOConfig.normalise_reward = False",
        "PPOConfig.sft_data = None", "TrainConfig.global_batch = 8", "TrainConfig.seq_len = 64",
        "ppo_settings.gamma_ptx = 0.5", "TrainConfig.eval_every = 0", "TrainConfig.steps = 3",
        "TrainConfig.checkpoint_every = 100", "OptimizerConfig.learning_rate = 1e-3",
        "OptimizerConfig.warmup_steps = 2"]
# What the runs are compared on: every train metric but the timings.
SKIP = ("time/", "perf/")


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
  """(policy run, reward run): step-0 checkpoints of the tiny model."""
  os.environ.setdefault("BATGPT_CACHE", str(tmp_path_factory.mktemp("cache")))
  cfg = config.model_size("tiny")
  root = tmp_path_factory.mktemp("roles")
  checkpoints.write_fresh_run_dir(str(root / "policy"), cfg, seed=0)
  checkpoints.write_fresh_run_dir(str(root / "reward"), cfg, seed=7, head_names=("reward_head",))
  return str(root / "policy"), str(root / "reward")


def _bindings(roles, run_dir, *extra):
  return [f"TrainConfig.run_dir = '{run_dir}'", f"TrainConfig.init_from = '{roles[0]}'",
          f"PPOConfig.reward_from = '{roles[1]}'", *extra]


def _ppo(roles, run_dir, *extra):
  gin.clear_config()
  files = [s for s in BASE if s.endswith(".gin")]
  bindings = [s for s in BASE if not s.endswith(".gin")] + _bindings(roles, run_dir, *extra)
  gin_text = config.parse_gin(files, bindings)
  return loop.train(**config.run_configs(), gin_text=gin_text)


def _train_records(history):
  return {h["step"]: {k: v for k, v in h.items() if k not in ("step", "kind")
                      and not k.startswith(SKIP)}
          for h in history if h["kind"] == "train"}


def _assert_same(a: dict, b: dict, atol: float):
  assert sorted(a) == sorted(b)
  for step in a:
    for key, value in a[step].items():
      if np.isnan(value):
        assert np.isnan(b[step][key]), (step, key)
      else:
        assert b[step][key] == pytest.approx(value, abs=atol), (step, key, value, b[step][key])


ADAPTIVE = ("PPOConfig.kl_target = 0.01", "PPOConfig.kl_horizon = 100")


@pytest.fixture(scope="module")
def straight(roles, tmp_path_factory):
  """Three iterations with an adaptive KL coefficient on this process's 8 devices, one
  microbatch: the reference of every comparison."""
  run_dir = tmp_path_factory.mktemp("straight")
  history = _ppo(roles, run_dir, *ADAPTIVE, "TrainConfig.checkpoint_every = 1")
  return history, run_dir


def test_a_run_learns_something_and_saves_the_policy_where_readers_look(straight, roles):
  history, run_dir = straight
  records = _train_records(history)
  assert sorted(records) == [1, 2, 3]
  assert records[1]["kl/sequence"] == pytest.approx(0.0, abs=1e-5)  # policy == reference
  assert abs(records[3]["kl/sequence"]) > 1e-4 and records[3]["policy/clipfrac"] >= 0
  assert records[1]["ptx/loss"] > 0 and records[1]["policy/grad_norm"] > 0
  # The coefficient followed the controller: KL below target lowers it by 20% x 16 / 100.
  assert records[1]["kl/next_coef"] == pytest.approx(0.05 * (1 - 0.2 * 16 / 100), rel=1e-6)
  # A PPO run's parameters are the policy's: what generate, chat and eval read.
  directory, step = checkpoints.find_step(str(run_dir))
  assert step == 3
  params = checkpoints.read_params(directory, step)
  start = checkpoints.read_params(*checkpoints.find_step(roles[0]))
  assert sorted(params) == sorted(start) and "value_head" not in params
  assert float(np.abs(np.asarray(params["lm_head"]) - np.asarray(start["lm_head"])).max()) > 0


def test_microbatching_1x8_equals_8x1(straight, roles, tmp_path):
  eight = _ppo(roles, tmp_path / "eight", *ADAPTIVE, "TrainConfig.microbatches = 8")
  _assert_same(_train_records(straight[0]), _train_records(eight), atol=1e-5)


def test_eight_devices_equal_one(straight, roles, tmp_path):
  """This process has 8 fake CPU devices (conftest.py); the `batgpt train` subprocess has 1."""
  assert jax.device_count() == 8
  files = [s for s in BASE if s.endswith(".gin")]
  bindings = [s for s in BASE if not s.endswith(".gin")] + _bindings(roles, tmp_path / "one",
                                                                     *ADAPTIVE)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run([sys.executable, "-m", "batgpt_jax.cli", "train",
                         *[f"--gin_file={f}" for f in files],
                         *[f"--gin.{b}" for b in bindings]],
                        capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "over 1 cpu devices" in proc.stderr
  with open(tmp_path / "one" / "metrics.jsonl") as f:
    one = [json.loads(line) for line in f]
  one = {r["step"]: {k[len("train/"):]: v for k, v in r.items() if k.startswith("train/")}
         for r in one}
  _assert_same(_train_records(straight[0]), {s: {k: v for k, v in r.items()
                                                 if not k.startswith(SKIP)}
                                             for s, r in one.items()}, atol=1e-4)


def test_a_killed_run_resumes_exactly(straight, roles, tmp_path, monkeypatch):
  """SIGTERM while iteration 2 runs: the run saves and stops; the rerun finishes it exactly as
  the uninterrupted run did, KL coefficient included."""
  history, _ = straight
  real_batch = prompts_lib.PromptStream.batch

  def batch(stream, index):
    if index == 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_batch(stream, index)

  monkeypatch.setattr(prompts_lib.PromptStream, "batch", batch)
  first = _ppo(roles, tmp_path, *ADAPTIVE)
  assert first[-1] == {"step": 2, "kind": "preempted"}
  monkeypatch.setattr(prompts_lib.PromptStream, "batch", real_batch)
  second = _ppo(roles, tmp_path, *ADAPTIVE)
  assert [h["step"] for h in second if h["kind"] == "train"] == [3]
  resumed = {**_train_records(first), **_train_records(second)}
  _assert_same(_train_records(history), resumed, atol=1e-6)


def test_a_shared_backbone_trains_the_value_head_in_the_policy(roles, tmp_path):
  """(Its prompts come from two sources, 12 and 4 of the 16 rows: data/prompts_test.py checks
  the shares.)"""
  shared = ("TrainConfig.steps = 2", "PPOConfig.shared_backbone = True",
            "TrainConfig.checkpoint_every = 1",
            "DataConfig.sources = [(@swap/PlantedPreferences(), 3.0), "
            "(@length/PlantedPreferences(), 1.0)]",
            "swap/PlantedPreferences.family = 'sort_swap'",
            "length/PlantedPreferences.family = 'sort_length'")
  one = _train_records(_ppo(roles, tmp_path / "one", *shared))
  assert one[1]["value/loss"] > 0 and "value/grad_norm" not in one[1]  # no value model's step
  assert np.isfinite(one[2]["value/explained_variance"])
  # The head lives (and learns) in the policy's parameters, which readers still read.
  (after_one, after_two) = [checkpoints.read_params(str(tmp_path / "one" / "checkpoints"), step)
                            for step in (1, 2)]
  start = checkpoints.read_params(*checkpoints.find_step(roles[0]))
  assert sorted(after_two) == sorted([*start, "value_head"])
  assert float(np.abs(np.asarray(after_two["value_head"]["kernel"])
                      - np.asarray(after_one["value_head"]["kernel"])).max()) > 0
  with pytest.raises(ValueError, match="no value model for value_from"):
    ppo_loop.PPOConfig(reward_from=roles[1], shared_backbone=True, value_from=roles[1])


@pytest.mark.parametrize("binding,message", [
    ("PPOConfig.reward_from = None", "reward_from is not set"),
    ("PPOConfig.minibatches = 3", "not divisible by minibatches=3"),
    ("ppo_settings.gamma_sft = 0.5", "PPOConfig.sft_data is not set"),
])
def test_bad_settings_are_refused_with_the_setting_named(roles, tmp_path, binding, message):
  with pytest.raises(ValueError, match=message):
    _ppo(roles, tmp_path, binding)


def test_a_policy_of_another_size_is_refused(roles, tmp_path):
  with pytest.raises(checkpoints.CheckpointMismatchError, match="another shape"):
    _ppo(roles, tmp_path, "ModelConfig.hidden = 32")
