import jax
import numpy as np
import pytest

from batgpt_jax import parallel
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import pretrain
from batgpt_jax.train import state as train_state
from batgpt_jax.train import step as train_step

CFG = ModelConfig(vocab_size=128, n_heads=8, n_kv_heads=2)
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)]


def synthetic_batch(seed: int, rows: int = 16, length: int = 24) -> dict:
  """Two packed documents a row, half the rows R2L, padding at the end."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, CFG.vocab_size, (rows, length)).astype(np.int32)
  cut = length // 2
  segments = np.ones((rows, length), np.int32)
  segments[:, cut:] = 2
  segments[:, -3:] = 0
  positions = np.where(np.arange(length) < cut, np.arange(length), np.arange(length) - cut)
  positions = np.tile(positions, (rows, 1)).astype(np.int32)
  nxt = np.roll(tokens, -1, axis=1)
  same = np.roll(segments, -1, axis=1) == segments
  same[:, -1] = False
  weights = (same & (segments > 0)).astype(np.float32)
  return {"tokens": tokens, "targets": np.where(weights > 0, nxt, 0).astype(np.int32),
          "segment_ids": segments, "positions": positions, "loss_weights": weights,
          "directions": (np.arange(rows)[:, None] % 2 * np.ones((1, length))).astype(np.int32)}


def _objective(cfg, z_loss, loss_chunk=0):
  return pretrain.objective(cfg, loss_chunk, weights={"r2l_weight": 1.0, "z_loss": z_loss})


def run_steps(shape, rules, n_steps=3, microbatches=1, seed=0, cfg=CFG, loss_chunk=0,
              batch=synthetic_batch):
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=shape))
  # Adam divides by sqrt(v) + eps: for a gradient near zero, float reduction-order noise (which
  # differs per mesh) is amplified by |g| / eps. eps 1e-6 keeps that below the 1e-5 tolerance.
  opt = train_state.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, eps=1e-6)
  tx, schedule = train_state.make_optimizer(opt, 10), train_state.schedule_numbers(opt, 10)
  state, shardings = train_state.create_state(cfg, tx, mesh, rules, seed=seed)
  train, _ = train_step.jit_steps(_objective(cfg, z_loss=1e-4, loss_chunk=loss_chunk), tx, mesh,
                                  rules, shardings, microbatches=microbatches)
  losses = []
  for i in range(n_steps):
    state, metrics = train(state, parallel.global_batch(batch(i), mesh, rules), {}, schedule)
    losses.append({k: float(v) for k, v in metrics.items()})
  return losses, jax.device_get(state)


def _gin_rules(name):
  from testlib import GIN_DIR  # pylint: disable=import-outside-toplevel
  import gin  # pylint: disable=import-outside-toplevel
  gin.parse_config_files_and_bindings([str(GIN_DIR / "mesh" / f"{name}.gin")], [])
  rules = parallel.check_rules(parallel.MeshConfig().axis_rules)
  gin.clear_config()
  return rules


@pytest.fixture(scope="module")
def reference(request):
  rules = _gin_rules("rules")
  return rules, run_steps(MESHES[0], rules)


def _assert_same_run(a, b, atol):
  for step_a, step_b in zip(a[0], b[0]):
    for key in ("loss", "l2r/loss", "r2l/loss", "grad_norm"):
      assert step_a[key] == pytest.approx(step_b[key], abs=atol), key
  for x, y in zip(jax.tree.leaves(a[1]["params"]), jax.tree.leaves(b[1]["params"])):
    np.testing.assert_allclose(x, y, atol=atol, rtol=0)


@pytest.mark.parametrize("shape", MESHES[1:])
def test_every_mesh_trains_the_same_model(shape, reference):
  rules, ref = reference
  _assert_same_run(run_steps(shape, rules), ref, atol=1e-5)


def test_long_context_rules_shard_the_sequence_and_train_the_same_model():
  """Context parallelism: rows of 1024 tokens split over 8 devices (mesh (1, 8, 1) under
  gin/mesh/rules_long.gin) against data parallelism (8, 1, 1), blockwise attention and the
  chunked cross-entropy in both."""
  cfg = ModelConfig(vocab_size=128, n_heads=8, n_kv_heads=2, attention="blockwise",
                    attention_block=128)
  long_rules = _gin_rules("rules_long")
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=(1, 8, 1)))
  assert tuple(parallel.batch_sharding(mesh, long_rules, (8, 1024)).spec) == (None, "fsdp")
  batch = lambda i: synthetic_batch(i, rows=8, length=1024)
  run = lambda shape, rules: run_steps(shape, rules, n_steps=2, cfg=cfg, loss_chunk=256,
                                       batch=batch)
  _assert_same_run(run((1, 8, 1), long_rules), run((8, 1, 1), _gin_rules("rules")), atol=1e-5)


def test_loss_falls_and_both_directions_are_reported(reference):
  _, (losses, state) = reference
  assert losses[0]["l2r/tokens"] > 0 and losses[0]["r2l/tokens"] > 0
  assert int(state["step"]) == 3
  assert np.isfinite([l["loss"] for l in losses]).all()


def test_gradient_accumulation_equals_one_big_batch(reference):
  rules, ref = reference
  _assert_same_run(run_steps((2, 2, 2), rules, microbatches=4), ref, atol=1e-5)


def test_optimised_step_matches_the_plain_one_over_five_steps(reference):
  """Chunked cross-entropy and rematerialisation change memory and speed, not the losses."""
  rules, _ = reference
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=(2, 2, 2)))
  opt = train_state.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, eps=1e-6)
  tx, schedule = train_state.make_optimizer(opt, 10), train_state.schedule_numbers(opt, 10)
  runs = []
  for cfg, chunk in ((CFG, 0), (ModelConfig(**{**CFG.to_dict(), "remat": "dots"}), 8)):
    state, shardings = train_state.create_state(cfg, tx, mesh, rules, seed=0)
    train, _ = train_step.jit_steps(_objective(cfg, z_loss=1e-4, loss_chunk=chunk), tx, mesh,
                                    rules, shardings, microbatches=1)
    losses = []
    for i in range(5):
      state, metrics = train(state, parallel.global_batch(synthetic_batch(i), mesh, rules), {},
                             schedule)
      losses.append(float(metrics["loss"]))
    runs.append(losses)
  np.testing.assert_allclose(runs[1], runs[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("poison", [np.nan, np.inf])
def test_a_non_finite_step_is_skipped_and_leaves_the_state_untouched(reference, poison):
  rules, _ = reference
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=MESHES[0]))
  opt = train_state.OptimizerConfig(learning_rate=1e-3, warmup_steps=1)
  tx, schedule = train_state.make_optimizer(opt, 10), train_state.schedule_numbers(opt, 10)
  state, shardings = train_state.create_state(CFG, tx, mesh, rules, seed=0)
  train, _ = train_step.jit_steps(_objective(CFG, z_loss=0.0), tx, mesh, rules, shardings,
                                  microbatches=1)
  state, good = train(state, parallel.global_batch(synthetic_batch(0), mesh, rules), {}, schedule)
  before = jax.device_get(state)
  bad = synthetic_batch(1)
  bad["loss_weights"][3, 5] = poison  # one token's weight: the loss and every gradient follow
  state, skipped = train(state, parallel.global_batch(bad, mesh, rules), {}, schedule)
  after = jax.device_get(state)
  assert int(good["skipped"]) == 0 and int(skipped["skipped"]) == 1
  assert not np.isfinite(float(skipped["loss"]))
  assert int(after["step"]) == int(before["step"]) + 1  # the batch is consumed, not retried
  for a, b in zip(jax.tree.leaves(before["params"]) + jax.tree.leaves(before["opt_state"]),
                  jax.tree.leaves(after["params"]) + jax.tree.leaves(after["opt_state"])):
    np.testing.assert_array_equal(a, b)
  state, resumed = train(state, parallel.global_batch(synthetic_batch(2), mesh, rules), {},
                         schedule)
  assert int(resumed["skipped"]) == 0 and np.isfinite(float(resumed["loss"]))
  moved = jax.device_get(state["params"])
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(before["params"]), jax.tree.leaves(moved)))
