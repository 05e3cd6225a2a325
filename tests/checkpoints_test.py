"""Checkpoints: finding steps, reading parameters alone, old checkpoints, damage, init_from."""

import dataclasses
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from testlib import REPO, mesh_config

from batgpt_jax import checkpoints, config, logs, parallel
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


# --- damage: a step that cannot be read is passed over, moved aside, and saved again -----------

def _tiny_state(value: float, step: int) -> dict:
  return {"params": {"w": jnp.full((4, 8), value, jnp.float32)}, "step": jnp.int32(step)}


DATA_KEY = "data-config-digest"


def _packer_state(step: int) -> dict:
  return {"cursor": np.full((2, 3), step, np.int32), "tokens": np.full((2, 4, 8), step, np.int32)}


def _save_steps(directory, values: dict[int, float]) -> None:
  mngr = checkpoints.manager(str(directory), keep=5, async_save=True)
  for step, value in values.items():
    checkpoints.save(mngr, _tiny_state(value, step), data_position=10 * step, model_cfg=MODEL,
                     gin_text="", data_state=_packer_state(step), data_key=DATA_KEY)
  mngr.wait_until_finished()
  mngr.close()


def _restore(directory, model_cfg=MODEL, abstract=None, **kwargs):
  """(restore_latest's answer, the open manager) for a state shaped like `_tiny_state`'s."""
  abstract = abstract or jax.eval_shape(lambda: _tiny_state(0.0, 0))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = jax.tree.map(lambda _: device, abstract)
  mngr = checkpoints.manager(str(directory), keep=5, async_save=False)
  try:
    return checkpoints.restore_latest(mngr, abstract, shardings, model_cfg, "",
                                      data_key=DATA_KEY, **kwargs), mngr
  except BaseException:
    mngr.close()
    raise


def _damage(step_dir, item: str) -> None:
  if item in ("state", "packer"):  # a copy cut short: every array file truncated
    files = [p for p in (step_dir / item).rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, sorted(p.name for p in (step_dir / item).rglob("*"))
    for path in files:
      with open(path, "r+b") as f:
        f.truncate(10)
  else:
    (step_dir / item / "metadata").write_text('{"model": ', encoding="utf-8")


@pytest.mark.parametrize("item", ["config", "data", "state", "packer"])
def test_a_damaged_newest_step_falls_back_is_moved_aside_and_saved_again(tmp_path, item, caplog,
                                                                         monkeypatch):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, {1: 1.0, 2: 2.0})
  _damage(directory / "2", item)

  caplog.set_level(logging.INFO)
  unraisable = []  # what Python would print as "Exception ignored in ...", as the CLI filters it
  monkeypatch.setattr(sys, "unraisablehook", logs.closed_event_loop_dropped(unraisable.append))
  restored, mngr = _restore(directory, move_aside=True)
  gc.collect()
  try:
    assert not unraisable, [u.exc_value for u in unraisable][:3]
    assert restored.step == 1 and restored.data_position == 10
    np.testing.assert_array_equal(np.asarray(restored.state["params"]["w"]), 1.0)
    for name, values in _packer_state(1).items():  # the input state of the same step
      np.testing.assert_array_equal(restored.data_state[name], values)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Skipping {directory}/2: it cannot be read ("), lines
    assert lines[0].endswith("Moved it aside to 2.damaged."), lines
    assert not any(r.name == "asyncio" for r in caplog.records)  # no unretrieved-future dumps
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("_")) == [
        "1", "2.damaged"]
    assert mngr.all_steps() == [1]
    # The run goes on from step 1 and writes step 2 again, over nothing.
    assert checkpoints.save(mngr, _tiny_state(5.0, 2), data_position=25, model_cfg=MODEL,
                            gin_text="")
    mngr.wait_until_finished()
  finally:
    mngr.close()
  again, mngr = _restore(directory, move_aside=True)
  mngr.close()
  assert again.step == 2 and again.data_position == 25
  np.testing.assert_array_equal(np.asarray(again.state["params"]["w"]), 5.0)


def test_a_reader_passes_over_a_damaged_step_and_leaves_it_in_place(tmp_path, caplog):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, {1: 1.0, 2: 2.0})
  _damage(directory / "2", "state")
  caplog.set_level(logging.INFO)
  restored, mngr = _restore(directory)  # eval, grow: not the run's owner
  mngr.close()
  assert restored.step == 1
  assert (directory / "2" / "state").is_dir() and not (directory / "2.damaged").exists()
  lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(lines) == 1 and "Moved" not in lines[0], lines


def test_a_second_damaged_copy_of_a_step_is_moved_beside_the_first(tmp_path):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, {1: 1.0, 2: 2.0})
  (directory / "2.damaged").mkdir()
  _damage(directory / "2", "config")
  restored, mngr = _restore(directory, move_aside=True)
  mngr.close()
  assert restored.step == 1
  assert (directory / "2.damaged.1" / "state").is_dir()


def test_every_step_damaged_is_one_clear_error(tmp_path):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, {1: 1.0})
  _damage(directory / "1", "data")
  with pytest.raises(checkpoints.UnreadableCheckpointError, match="No checkpoint in .* could be "
                     r"restored \(steps \[1\]\).*Move the directory away"):
    _restore(directory)


def test_a_config_of_another_model_is_refused_not_moved_aside(tmp_path):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, {1: 1.0})
  with pytest.raises(checkpoints.CheckpointMismatchError, match="hidden: checkpoint has 32, "
                     "config has 64"):
    _restore(directory, dataclasses.replace(MODEL, hidden=64), move_aside=True)
  assert (directory / "1" / "state").is_dir()


_SAVE_AND_HANG = """
import sys, time
import jax.numpy as jnp
from batgpt_jax import checkpoints
from batgpt_jax.model.config import ModelConfig
mngr = checkpoints.manager(sys.argv[1], keep=5, async_save=True)
model = ModelConfig(vocab_size=512, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64)
for step, size in ((1, 32), (2, 64 << 20)):  # step 2: 256 MB, long enough to be killed mid-write
  state = {"params": {"w": jnp.full((size // 8, 8), float(step), jnp.float32)},
           "step": jnp.int32(step)}
  checkpoints.save(mngr, state, data_position=10 * step, model_cfg=model, gin_text="")
  if step == 1:
    mngr.wait_until_finished()
print("saving", flush=True)
time.sleep(600)
"""


def test_a_save_killed_before_it_commits_is_never_listed(tmp_path):
  """kill -9 while step 2 is still being written: the run resumes from step 1, and step 2 can
  be written again."""
  directory = tmp_path / "checkpoints"
  proc = subprocess.Popen([sys.executable, "-c", _SAVE_AND_HANG, str(directory)],
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "saving"
    deadline = time.monotonic() + 60
    while not any(p.name.startswith("2.") for p in directory.iterdir()):
      assert time.monotonic() < deadline and proc.poll() is None
      time.sleep(0.01)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert not (directory / "2").exists(), "the kill came after the commit: make step 2 larger"
  restored, mngr = _restore(directory, move_aside=True)
  try:
    assert restored.step == 1 and restored.data_position == 10
    assert sorted(p.name for p in directory.iterdir() if p.name[0].isdigit()) == ["1"]
    assert checkpoints.save(mngr, _tiny_state(2.0, 2), data_position=20, model_cfg=MODEL,
                            gin_text="")
    mngr.wait_until_finished()
  finally:
    mngr.close()
  again, mngr = _restore(directory)
  mngr.close()
  assert again.step == 2


def test_a_state_of_another_optimizer_is_refused_not_moved_aside(tmp_path):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, {1: 1.0})
  abstract = jax.eval_shape(lambda: {**_tiny_state(0.0, 0), "mu": jnp.zeros((4, 8))})
  with pytest.raises(checkpoints.CheckpointMismatchError, match=r"holds another training state "
                     r"than this run builds: 2 arrays against 3, the parameters alike"):
    _restore(directory, abstract=abstract, move_aside=True)
  assert (directory / "1" / "state").is_dir() and not (directory / "1.damaged").exists()


def _as_an_ordinary_writer(command: list[str]) -> list[str]:
  """`command`, run so that file permissions bind it: for root, without the capabilities that
  let it write where chmod forbids (util-linux's setpriv drops them before the exec). Running it
  as `nobody` instead fails where the interpreter lives under /root, as with pyenv."""
  if os.geteuid() != 0:
    return command
  return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *command]


def test_a_read_only_checkpoint_directory_during_an_async_save_stops_the_run(tmp_path):
  run_dir = tmp_path / "run"
  env = dict(os.environ, BATGPT_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
  command = [sys.executable, "-m", "batgpt_jax.cli", "train", f"--gin_file={FIXTURE / 'micro.gin'}",
             f"--gin.TrainConfig.run_dir='{run_dir}'", "--gin.TrainConfig.steps=100000",
             "--gin.TrainConfig.checkpoint_every=1", "--gin.TrainConfig.async_checkpoint=True",
             "--gin.TrainConfig.keep_checkpoints=3", "--gin.TrainConfig.log_every=1000"]
  proc = subprocess.Popen(_as_an_ordinary_writer(command), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  directory = run_dir / "checkpoints"
  try:
    deadline = time.monotonic() + 180
    # Polled often enough to catch the first save in flight (its step directory made, its items'
    # not yet): orbax's background threads fail then, the case that once hung the run.
    while not (directory.is_dir() and any(p.name[0].isdigit() for p in directory.iterdir())):
      assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()[-3000:]
      time.sleep(0.001)
    for folder, _, _ in os.walk(directory):
      os.chmod(folder, 0o555)
    try:
      stderr = proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
      proc.kill()
      stderr = proc.communicate()[1]
      pytest.fail(f"still running 60 s after its checkpoints became read-only:\n{stderr[-3000:]}")
  finally:
    for folder, _, _ in os.walk(directory):
      os.chmod(folder, 0o755)  # so that pytest can remove it
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode not in (0, None), stderr[-3000:]
  lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, stderr[-3000:]
  assert f"Cannot save checkpoints in {directory}: it is not writable" in lines[0]
  assert "Permission denied" in lines[0] and "Make it writable" in lines[0]
  # No screenfuls of tracebacks; orbax logs one line per failed thread, as many as it started.
  assert "Traceback" not in stderr and len(stderr.splitlines()) < 100, stderr[-3000:]
