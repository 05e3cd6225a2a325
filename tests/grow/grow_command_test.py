"""`batgpt grow` end to end: train small, grow 2x wide and 2x deep, resume training; bad input."""

import argparse
import os

import jax
import pytest
from testlib import mesh_config

from batgpt_jax.data import pipeline
from batgpt_jax.grow import command, params as grow_params, width
from batgpt_jax.grow import parser as grow_parser
from batgpt_jax.grow.plan import GrowthError, plan_growth
from batgpt_jax.model.config import ModelConfig
from batgpt_jax import checkpoints
from batgpt_jax.train import loop
from batgpt_jax.train import state as train_state

SMALL = ModelConfig(vocab_size=512, n_heads=4, n_kv_heads=2)  # tiny: hidden 64, 2 layers
BIG = ModelConfig(**{**SMALL.to_dict(), "hidden": 128, "n_heads": 8, "n_kv_heads": 4, "ffn": 384,
                     "n_layers": 4})
SMALL_STEPS, BIG_STEPS, EVAL_EVERY = 24, 12, 4
BIG_OPTIMIZER = train_state.OptimizerConfig(learning_rate=1e-3, warmup_steps=3)
BIG_GIN = """
include 'mesh/cpu.gin'
ModelConfig.vocab_size = 512
ModelConfig.hidden = 128
ModelConfig.n_layers = 4
ModelConfig.n_heads = 8
ModelConfig.n_kv_heads = 4
ModelConfig.ffn = 384
OptimizerConfig.learning_rate = 1e-3
OptimizerConfig.warmup_steps = 3
TrainConfig.steps = 12
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  os.environ["BATGPT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
  mesh_cfg = mesh_config()
  return dict(data_cfg=pipeline.DataConfig(vocab_size=SMALL.vocab_size, shards=2),
              mesh_cfg=mesh_cfg,
              opt_cfg=train_state.OptimizerConfig(learning_rate=3e-3, warmup_steps=5))


def _train_cfg(run_dir, steps: int) -> loop.TrainConfig:
  return loop.TrainConfig(run_dir=str(run_dir), steps=steps, global_batch=8, seq_len=64,
                          log_every=EVAL_EVERY, eval_every=EVAL_EVERY, eval_batches=2,
                          checkpoint_every=100, async_checkpoint=False)


def _eval_losses(history) -> list[float]:
  return [h["loss"] for h in history if h["kind"] == "eval"]


@pytest.fixture(scope="module")
def small_run(setup, tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("small")
  history = loop.train(_train_cfg(run_dir, SMALL_STEPS), model_cfg=SMALL, **setup)
  return run_dir, history


def _grow_args(*argv: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="batgpt")
  grow_parser.add_grow_command(parser.add_subparsers(dest="command"))
  return parser.parse_args(["grow", *argv])


@pytest.fixture(scope="module")
def big_gin(tmp_path_factory):
  path = tmp_path_factory.mktemp("gin") / "big.gin"
  path.write_text(BIG_GIN)
  return str(path)


def test_grown_run_starts_where_the_small_run_ended_and_keeps_learning(
    setup, small_run, big_gin, tmp_path, capsys):
  small_dir, small_history = small_run
  small_last = _eval_losses(small_history)[-1]
  args = _grow_args("--from_checkpoint", str(small_dir), "--to_gin", big_gin, "--out",
                    str(tmp_path), "--noise_snr_db", "20")
  assert args.run(args, "") == 0

  step_dir = tmp_path / "checkpoints" / "0"  # schedule restart: step 0
  assert sorted(p.name for p in step_dir.iterdir() if p.is_dir()) == ["config", "data", "state"]
  assert checkpoints.read_config(str(tmp_path / "checkpoints"), 0)[0] == BIG

  big_setup = {**setup, "opt_cfg": BIG_OPTIMIZER}  # as in BIG_GIN: a wider model, a lower rate
  grown_first = loop.evaluate_checkpoint(_train_cfg(tmp_path, BIG_STEPS), model_cfg=BIG,
                                         **big_setup)["loss"]
  assert grown_first == pytest.approx(small_last, abs=0.01)
  history = loop.train(_train_cfg(tmp_path, BIG_STEPS), model_cfg=BIG, **big_setup)
  losses = [grown_first] + _eval_losses(history)
  assert len(losses) == 1 + BIG_STEPS // EVAL_EVERY
  assert losses[-1] < losses[0] - 0.1 and min(losses[1:]) < losses[0], losses  # it learns on


def test_cli_prints_progress_and_the_probe_difference(small_run, big_gin, tmp_path, caplog):
  small_dir, _ = small_run
  args = _grow_args("--from_checkpoint", str(small_dir / "checkpoints"), "--to_gin", big_gin,
                    "--out", str(tmp_path), "--depth_mode", "append", "--optimizer", "reset",
                    "--schedule", "continue")
  with caplog.at_level("INFO"):
    assert args.run(args, "ModelConfig.n_layers = 3") == 0  # --gin.X flags apply on top
  text = caplog.text
  assert "[15/15] param lm_head: (64, 512) -> (128, 512)" in text
  assert "largest logit difference" in text and "2 -> 3 layers" in text
  assert (tmp_path / "checkpoints" / str(SMALL_STEPS)).is_dir()  # schedule continue: step kept
  with pytest.raises(SystemExit, match="already holds checkpoints"):  # never overwrites
    args.run(args, "ModelConfig.n_layers = 3")


def test_a_directory_that_is_not_a_checkpoint_is_a_clear_error(big_gin, tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  args = _grow_args("--from_checkpoint", str(tmp_path), "--to_gin", big_gin, "--out",
                    str(tmp_path / "out"))
  with pytest.raises(SystemExit, match="is not an orbax checkpoint of this project: expected a run directory"):
    args.run(args, "")
  assert not (tmp_path / "out").exists()


def test_unsupported_target_sizes_are_clear_errors(small_run, big_gin, tmp_path):
  small_dir, _ = small_run
  args = _grow_args("--from_checkpoint", str(small_dir), "--to_gin", big_gin, "--out",
                    str(tmp_path / "out"))
  with pytest.raises(SystemExit) as err:
    args.run(args, "ModelConfig.hidden = 100\nModelConfig.n_layers = 1")
  message = str(err.value)
  assert "hidden: 64 -> 100 is not a whole multiple" in message and "64, 128, 192" in message
  assert "n_layers: 2 -> 1; growth never removes layers" in message
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, expected", [
    (dict(ffn=200), "ffn: 192 -> 200 is not a whole multiple"),
    (dict(n_kv_heads=2), "n_kv_heads: 2 -> 2; with n_heads grown x2 the KV heads must grow by "
                         "the same factor, to 4"),
    (dict(head_dim=32), "head_dim: the source has 16 and the target 32"),
    (dict(vocab_size=1024), "vocab_size: the source has 512"),
    (dict(rope_scaling="linear", rope_scaling_factor=2.0),
     "rope_scaling: the source has 'none' and the target 'linear'; growth keeps it"),
])
def test_plan_names_what_is_supported(change, expected):
  with pytest.raises(GrowthError, match=expected):
    plan_growth(SMALL, ModelConfig(**{**BIG.to_dict(), **change}))


def test_stack_needs_a_multiple_of_the_layers_and_mqa_may_stay_shared():
  with pytest.raises(GrowthError, match="n_layers must be g\\*2"):
    plan_growth(SMALL, ModelConfig(**{**BIG.to_dict(), "n_layers": 5}), depth_mode="stack")
  mqa = ModelConfig(**{**SMALL.to_dict(), "n_kv_heads": 1})
  assert plan_growth(mqa, ModelConfig(**{**BIG.to_dict(), "n_kv_heads": 1})).width.kv_heads == 1
  assert plan_growth(mqa, ModelConfig(**{**BIG.to_dict(), "n_kv_heads": 2})).width.kv_heads == 2


def test_a_growth_that_breaks_the_function_writes_nothing(setup, small_run, tmp_path,
                                                         monkeypatch):
  small_dir, _ = small_run
  try:
    with monkeypatch.context() as patch:
      patch.setattr(width, "input_copies", lambda name, plan: 1)  # "forgets" to rescale
      grow_params._compiled.cache_clear()  # pylint: disable=protected-access
      with pytest.raises(GrowthError, match="Refusing to write"):
        command.grow_checkpoint(str(small_dir), str(tmp_path), big_cfg=BIG,
                                mesh_cfg=setup["mesh_cfg"], opt_cfg=setup["opt_cfg"],
                                total_steps=10, optimizer="reset")
  finally:
    # JAX keeps the broken traces of `_grow_array` past the lru cache: drop them once the patch
    # is undone, or a later growth in this process reuses them.
    grow_params._compiled.cache_clear()  # pylint: disable=protected-access
    jax.clear_caches()
  assert not (tmp_path / "checkpoints").exists()


def test_source_schedule_length_reads_the_recorded_gin():
  assert command.source_schedule_length("OptimizerConfig.schedule_steps = 2200\n"
                                        "TrainConfig.steps = 880\n") == 2200
  assert command.source_schedule_length("TrainConfig.steps = 100\nTrainConfig.steps = 880\n") == 880
  assert command.source_schedule_length("OptimizerConfig.schedule_steps = 0\n"
                                        "TrainConfig.steps = 50\n") == 50  # 0: TrainConfig.steps
  assert command.source_schedule_length("") == loop.TrainConfig().steps


def test_rescale_puts_the_grown_run_at_the_source_s_fraction_of_its_schedule(setup, big_gin,
                                                                            tmp_path, caplog):
  # A small run that stops at step 8 of a 16-step schedule: half way.
  small_dir = tmp_path / "small"
  opt_cfg = train_state.OptimizerConfig(learning_rate=3e-3, warmup_steps=2, schedule_steps=16)
  loop.train(_train_cfg(small_dir, 8), model_cfg=SMALL, **{**setup, "opt_cfg": opt_cfg},
             gin_text="TrainConfig.steps = 8\nOptimizerConfig.schedule_steps = 16\n")
  args = _grow_args("--from_checkpoint", str(small_dir), "--to_gin", big_gin, "--out",
                    str(tmp_path / "big"), "--schedule", "rescale")
  with caplog.at_level("INFO"):
    assert args.run(args, "") == 0
  assert "the source's step 8 of 16 becomes step 6 of the target's 12" in caplog.text
  assert (tmp_path / "big" / "checkpoints" / "6").is_dir()  # BIG_GIN: TrainConfig.steps = 12
