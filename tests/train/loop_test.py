"""End-to-end training on the embedded corpus: resume exactness, preemption, bad input."""

import json
import os

import jax
import numpy as np
import pytest
from testlib import mesh_config, preempt_at_batch

from batgpt_jax import checkpoints, parallel
from batgpt_jax.data import pipeline
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import faults, loop, metrics
from batgpt_jax.train import state as train_state

MODEL = ModelConfig(vocab_size=512, n_heads=4, n_kv_heads=2)
STEPS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  os.environ["BATGPT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
  mesh_cfg = mesh_config()
  return dict(model_cfg=MODEL, data_cfg=pipeline.DataConfig(vocab_size=MODEL.vocab_size),
              mesh_cfg=mesh_cfg,
              opt_cfg=train_state.OptimizerConfig(learning_rate=3e-3, warmup_steps=2))


def _train_cfg(run_dir, **overrides):
  values = dict(run_dir=str(run_dir), steps=STEPS, global_batch=8, seq_len=64, log_every=1,
                eval_every=0, checkpoint_every=100, async_checkpoint=True)
  return loop.TrainConfig(**{**values, **overrides})


def _losses(history):
  return {h["step"]: (h["loss"], h["l2r/loss"], h["r2l/loss"]) for h in history
          if h["kind"] == "train"}


def metrics_of(run_dir) -> list[dict]:
  return metrics.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))


def _final_params(run_dir, setup):
  cfg = setup["model_cfg"]
  tx = train_state.make_optimizer(setup["opt_cfg"], STEPS)
  abstract = train_state.abstract_state(cfg, tx)
  mesh = parallel.mesh_from_config(setup["mesh_cfg"])
  shardings = train_state.state_shardings(cfg, tx, mesh, setup["mesh_cfg"].axis_rules, abstract)
  mngr = checkpoints.manager(os.path.join(run_dir, "checkpoints"), keep=3, async_save=False)
  restored = checkpoints.restore_latest(mngr, abstract, shardings, cfg, "")
  mngr.close()
  return restored.step, jax.device_get(restored.state["params"])


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("straight")
  history = loop.train(_train_cfg(run_dir), **setup)
  return run_dir, history


def test_straight_run_trains_both_directions(straight):
  _, history = straight
  losses = _losses(history)
  assert sorted(losses) == list(range(1, STEPS + 1))
  first, last = losses[1], losses[STEPS]
  assert all(np.isfinite(first)) and last[0] < first[0]
  assert first[1] > 0 and first[2] > 0  # both directions present in the batches


def test_sigterm_saves_and_resume_is_exact(straight, setup, tmp_path, monkeypatch):
  run_dir, history = straight
  taken = preempt_at_batch(monkeypatch, 3)  # while step 3 runs
  real_skip, skipped = pipeline.TrainBatches.skip, []

  def skip(batches, n):
    skipped.append(n)
    return real_skip(batches, n)

  monkeypatch.setattr(pipeline.TrainBatches, "skip", skip)
  first = loop.train(_train_cfg(tmp_path), **setup)
  assert max(_losses(first)) == 3
  assert _final_params(tmp_path, setup)[0] == 3  # saved at the step it was stopped at
  second = loop.train(_train_cfg(tmp_path), **setup)
  assert min(_losses(second)) == 4
  assert len(taken) == 3 + 3 and skipped == [0]  # the resume went on from the packer state
  resumed = {**_losses(first), **_losses(second)}
  expected = _losses(history)
  assert sorted(resumed) == sorted(expected)
  for step in expected:
    np.testing.assert_allclose(resumed[step], expected[step], rtol=1e-6, atol=1e-6)
  step_a, params_a = _final_params(run_dir, setup)
  step_b, params_b = _final_params(tmp_path, setup)
  assert step_a == step_b == STEPS
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_finished_run_is_not_retrained(straight, setup):
  run_dir, _ = straight
  assert loop.train(_train_cfg(run_dir), **setup) == []


def test_checkpoint_of_another_size_is_refused_and_kept(straight, setup):
  run_dir, _ = straight
  bigger = ModelConfig(**{**MODEL.to_dict(), "hidden": 128, "n_layers": 3})
  with pytest.raises(checkpoints.CheckpointMismatchError) as err:
    loop.train(_train_cfg(run_dir, steps=STEPS + 2), **{**setup, "model_cfg": bigger})
  assert "hidden: checkpoint has 64, config has 128" in str(err.value)
  assert "n_layers: checkpoint has 2, config has 3" in str(err.value)
  assert _final_params(run_dir, setup)[0] == STEPS  # the checkpoint is intact


def test_empty_data_source_is_a_clear_error(setup, tmp_path):
  from batgpt_jax.data import tasks  # pylint: disable=import-outside-toplevel
  data_cfg = pipeline.DataConfig(sources=((tasks.TextFiles(str(tmp_path / "none*.txt")), 1.0),),
                                 vocab_size=MODEL.vocab_size)
  with pytest.raises(ValueError, match="none\\*.txt"):
    loop.train(_train_cfg(tmp_path / "run"), **{**setup, "data_cfg": data_cfg})
  assert not (tmp_path / "run" / "checkpoints").exists() or not os.listdir(
      tmp_path / "run" / "checkpoints")


def test_tokenizer_larger_than_the_embedding_is_refused(setup, tmp_path):
  small = ModelConfig(**{**MODEL.to_dict(), "vocab_size": 256})
  with pytest.raises(ValueError, match="ModelConfig.vocab_size"):
    loop.train(_train_cfg(tmp_path), **{**setup, "model_cfg": small})


def test_eval_command_scores_the_latest_checkpoint(straight, setup):
  run_dir, _ = straight
  result = loop.evaluate_checkpoint(_train_cfg(run_dir, eval_batches=2), **setup)
  assert result["step"] == STEPS
  for name in ("l2r", "r2l"):
    assert result[f"{name}/tokens"] > 0
    assert result[f"{name}/perplexity"] == pytest.approx(np.exp(result[f"{name}/loss"]), rel=1e-4)


def test_eval_without_a_checkpoint_says_so(setup, tmp_path):
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    loop.evaluate_checkpoint(_train_cfg(tmp_path), **setup)


def test_metrics_reach_tensorboard(setup, tmp_path):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  loop.train(_train_cfg(tmp_path, steps=4, log_every=2, eval_every=4, eval_batches=1), **setup)
  tags, values = {}, {}
  for path in (tmp_path / "tensorboard").iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
        values[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
        assert value.metadata.plugin_data.plugin_name == "scalars"  # what TensorBoard plots
  assert tags["train/l2r/loss"] == [2, 4] and tags["train/r2l/loss"] == [2, 4]
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  last_train = [r for r in records if "train/l2r/loss" in r][-1]
  assert values[("train/l2r/loss", 4)] == pytest.approx(last_train["train/l2r/loss"], rel=1e-6)
  assert tags["eval/l2r/loss"] == [4] and tags["eval/r2l/perplexity"] == [4]
  assert "train/perf/tokens_per_second" in tags and "train/learning_rate" in tags


def test_checkpoint_records_data_position_and_config(straight):
  run_dir, _ = straight
  mngr = checkpoints.manager(os.path.join(run_dir, "checkpoints"), keep=3, async_save=False)
  saved = mngr.restore(STEPS, args=checkpoints.ocp.args.Composite(
      data=checkpoints.ocp.args.JsonRestore(), config=checkpoints.ocp.args.JsonRestore()))
  mngr.close()
  cfg, data_cfg = _train_cfg(run_dir), pipeline.DataConfig(vocab_size=MODEL.vocab_size)
  key = pipeline.resume_key(data_cfg, pipeline.vocabulary_for(data_cfg), seq_len=cfg.seq_len,
                            global_batch=cfg.global_batch)
  assert saved["data"] == {"position": STEPS, "step": STEPS, "skipped_steps": 0,
                           "packer_key": key}
  packer = checkpoints.ocp.PyTreeCheckpointer().metadata(
      os.path.join(run_dir, "checkpoints", str(STEPS), "packer")).item_metadata.tree
  shards = cfg.global_batch  # DataConfig.shards = 0: one per row
  assert {name: tuple(m.shape) for name, m in packer.items()} == {
      "cursor": (shards, 3), "slots": (shards, 10),
      **{name: (shards, 10, cfg.seq_len)
         for name in ("tokens", "segment_ids", "positions", "directions")}}
  assert ModelConfig.from_dict(saved["config"]["model"]) == MODEL


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(setup, tmp_path, monkeypatch):
  real_next, taken = pipeline.TrainBatches.__next__, []
  poisoned_steps = {3, 5, 6}

  def with_nan_loss(batches):
    batch = real_next(batches)
    taken.append(1)
    if len(taken) in poisoned_steps:
      batch = dict(batch, loss_weights=batch["loss_weights"] * np.float32(np.nan))
    return batch

  monkeypatch.setattr(pipeline.TrainBatches, "__next__", with_nan_loss)
  with pytest.raises(faults.TrainingDivergedError, match=r"Steps 5\.\.6 .*max_bad_steps=2"):
    loop.train(_train_cfg(tmp_path, checkpoint_every=2, max_bad_steps=2), **setup)
  mngr = checkpoints.manager(os.path.join(tmp_path, "checkpoints"), keep=3, async_save=False)
  assert mngr.all_steps() == [2, 4]  # nothing was written after the bad run of steps
  data = mngr.restore(4, args=checkpoints.ocp.args.Composite(
      data=checkpoints.ocp.args.JsonRestore()))["data"]
  mngr.close()
  assert data["skipped_steps"] == 1  # step 3, skipped; step 4 trained on
  records = metrics_of(tmp_path)
  assert [r["train/skipped_steps"] for r in records] == [0, 0, 1, 1, 2]  # step 6 raised
  assert not np.isfinite(records[2]["train/loss"]) and np.isfinite(records[3]["train/loss"])
