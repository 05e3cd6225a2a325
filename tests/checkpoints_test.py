"""The one checkpoint module: finding steps, reading parameters alone, old checkpoints, init_from."""

import os
import shutil

import gin
import jax
import numpy as np
import pytest
from testlib import REPO, mesh_config

from batgpt_jax import checkpoints, config, parallel
from batgpt_jax.data import pipeline
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import loop, metrics
from batgpt_jax.train import state as train_state

FIXTURE = REPO / "tests" / "fixtures" / "checkpoint_v1"
MODEL = ModelConfig(vocab_size=512, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64)


def _train_configs(run_dir, *bindings):
  gin.clear_config()
  gin_text = config.parse_gin([str(FIXTURE / "micro.gin")],
                              [f"TrainConfig.run_dir = '{run_dir}'", *bindings])
  return config.run_configs(), gin_text


def test_a_checkpoint_from_before_the_objective_contract_resumes_with_its_losses(tmp_path):
  """Written by the previous core (see the fixture's README): same format, same numbers."""
  run_dir = tmp_path / "run"
  shutil.copytree(FIXTURE, run_dir)
  configs, gin_text = _train_configs(run_dir, "TrainConfig.steps = 4")
  history = loop.train(**configs, gin_text=gin_text)
  got = {h["step"]: h for h in history if h["kind"] == "train"}
  want = {r["step"]: r for r in metrics.read_jsonl(str(FIXTURE / "expected_steps_3_4.jsonl"))}
  assert sorted(got) == [3, 4]
  for step, record in want.items():
    for name in ("loss", "l2r/loss", "r2l/loss", "grad_norm"):
      assert got[step][name] == pytest.approx(record[f"train/{name}"], abs=1e-6), (step, name)


def _write_random_run(run_dir, cfg: ModelConfig, seed=0) -> dict:
  params = transformer.init_params(cfg, seed)
  checkpoints.write_run_dir(str(run_dir), cfg, params, train_state.OptimizerConfig())
  return params


def test_find_step_accepts_a_run_a_checkpoints_and_a_step_directory(tmp_path):
  _write_random_run(tmp_path / "run", MODEL)
  run = tmp_path / "run"
  expected = (os.fspath(run / "checkpoints"), 0)
  assert checkpoints.find_step(str(run)) == expected
  assert checkpoints.find_step(str(run / "checkpoints")) == expected
  assert checkpoints.find_step(str(run / "checkpoints" / "0")) == expected
  with pytest.raises(FileNotFoundError, match="No step 7 .* it has steps \\[0\\]"):
    checkpoints.find_step(str(run), 7)
  with pytest.raises(FileNotFoundError, match="is not an orbax checkpoint"):
    checkpoints.find_step(str(tmp_path))


def test_parameters_are_read_alone_and_into_the_asked_shardings(tmp_path, axis_rules):
  params = _write_random_run(tmp_path / "run", MODEL)
  directory, step = checkpoints.find_step(str(tmp_path / "run"))
  assert checkpoints.read_config(directory, step)[0] == MODEL
  plain = checkpoints.read_params(directory, step)
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=(2, 2, 2)))
  shardings = train_state.param_shardings(MODEL, mesh, axis_rules)
  sharded = checkpoints.read_params(directory, step, shardings)
  for want, a, b, s in zip(jax.tree.leaves(params), jax.tree.leaves(plain),
                           jax.tree.leaves(sharded), jax.tree.leaves(shardings)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(b), np.asarray(want))
    assert b.sharding == s


def _init_from_cfg(run_dir, source, steps=2):
  return loop.TrainConfig(run_dir=str(run_dir), steps=steps, global_batch=8, seq_len=32,
                          log_every=1, eval_every=0, checkpoint_every=100,
                          async_checkpoint=False, init_from=str(source))


@pytest.fixture(scope="module")
def init_setup(tmp_path_factory):
  os.environ["BATGPT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
  return dict(data_cfg=pipeline.DataConfig(vocab_size=MODEL.vocab_size), mesh_cfg=mesh_config(),
              opt_cfg=train_state.OptimizerConfig(learning_rate=1e-3, warmup_steps=1))


def test_init_from_starts_at_step_0_with_the_source_parameters(tmp_path, init_setup):
  source = _write_random_run(tmp_path / "source", MODEL, seed=3)
  # steps=1 with a zero learning rate: the first update leaves the parameters as they came.
  setup = {**init_setup, "opt_cfg": train_state.OptimizerConfig(learning_rate=0.0)}
  history = loop.train(_init_from_cfg(tmp_path / "run", tmp_path / "source", steps=1),
                       model_cfg=MODEL, **setup)
  assert [h["step"] for h in history if h["kind"] == "train"] == [1]
  directory, step = checkpoints.find_step(str(tmp_path / "run"))
  assert step == 1
  for want, got in zip(jax.tree.leaves(source),
                       jax.tree.leaves(checkpoints.read_params(directory, step))):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_init_from_a_model_of_another_shape_is_refused_naming_the_parameters(tmp_path,
                                                                             init_setup):
  _write_random_run(tmp_path / "source", ModelConfig(**{**MODEL.to_dict(), "ffn": 96}))
  with pytest.raises(checkpoints.CheckpointMismatchError) as err:
    loop.train(_init_from_cfg(tmp_path / "run", tmp_path / "source"), model_cfg=MODEL,
               **init_setup)
  message = str(err.value)
  assert "init_from" in message and "blocks/mlp" in message and "(2, 32, 96)" in message
  assert not (tmp_path / "run" / "checkpoints").exists() or not os.listdir(
      tmp_path / "run" / "checkpoints")
