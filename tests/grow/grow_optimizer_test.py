"""Adam moments carried by the gradient rule, checked against the grown model's own gradients;
reset and schedule modes; the grown state in the big model's shardings."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from testlib import trained_like_params as _random_params

from batgpt_jax import parallel
from batgpt_jax.grow import optimizer as grow_optimizer
from batgpt_jax.grow import params as grow_params
from batgpt_jax.grow import verify
from batgpt_jax.grow.plan import plan_growth
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import state as train_state


def _configs(kv_heads: int) -> tuple[ModelConfig, ModelConfig]:
  small = ModelConfig(vocab_size=64, hidden=32, n_layers=2, n_heads=4, n_kv_heads=kv_heads,
                      head_dim=8, ffn=48, rope_fraction=0.5, init_std=0.1)
  big = ModelConfig(**{**small.to_dict(), "hidden": 64, "n_heads": 8, "ffn": 144, "n_layers": 3,
                       "n_kv_heads": 1 if kv_heads == 1 else 2 * kv_heads})
  return small, big


@functools.partial(jax.jit, static_argnums=0)
def _grads(cfg: ModelConfig, params: dict, probe) -> dict:
  def loss(p):
    logits = transformer.apply(cfg, p, *probe)[:, :-1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, probe[0][:, 1:]).mean()
  return jax.grad(loss)(params)


def _old_layers(tree: dict, identity: tuple) -> dict:
  """Drops the inserted layers of stacked arrays: their moments start at zero by design."""
  keep = np.flatnonzero(~np.asarray(identity))
  return {**tree, "blocks": jax.tree.map(lambda a: a[keep], tree["blocks"])}


@pytest.mark.parametrize("kv_heads", [2, 1], ids=["gqa", "mqa"])
def test_moment_rules_match_the_grown_models_gradients(kv_heads):
  small, big = _configs(kv_heads)
  plan = plan_growth(small, big, depth_mode="interleave")
  small_params = _random_params(small)
  big_params = grow_params.grow_tree(small_params, small, big, plan)
  probe = verify.probe_batch(small.vocab_size)
  small_grads, big_grads = _grads(small, small_params, probe), _grads(big, big_params, probe)

  as_mu = grow_params.grow_tree(small_grads, small, big, plan, kind="mu")
  as_nu = grow_params.grow_tree(jax.tree.map(jnp.square, small_grads), small, big, plan,
                                kind="nu")
  identity = plan.depth.identity
  want_mu, want_nu = _old_layers(big_grads, identity), _old_layers(
      jax.tree.map(jnp.square, big_grads), identity)
  got_mu, got_nu = _old_layers(as_mu, identity), _old_layers(as_nu, identity)
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(want_mu),
                               jax.tree.leaves(got_mu)):
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(got, want, atol=1e-4 * scale + 1e-9,
                               err_msg=grow_params.path_name(path))
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(want_nu),
                               jax.tree.leaves(got_nu)):
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(got, want, atol=2e-4 * scale + 1e-12,
                               err_msg=grow_params.path_name(path))
  # Inserted layers: their moments are zero, and only their residual writes get a gradient.
  new = np.flatnonzero(np.asarray(identity))
  assert float(jnp.max(jnp.abs(as_mu["blocks"]["attn"]["q"][new]))) == 0.0
  assert float(jnp.max(jnp.abs(big_grads["blocks"]["attn"]["q"][new]))) == 0.0
  assert float(jnp.max(jnp.abs(big_grads["blocks"]["attn"]["o"][new]))) > 0.0


@pytest.fixture(scope="module")
def sharded_setup():
  rules = parallel.check_rules([("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"),
                                ("heads", "tensor"), ("kv_heads", "tensor"), ("vocab", "tensor")])
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=(2, 2, 2)))
  small, big = _configs(2)
  tx = train_state.make_optimizer(train_state.OptimizerConfig(warmup_steps=2), 10)
  params = _random_params(small)
  probe = verify.probe_batch(small.vocab_size)
  opt_state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(3):  # real moments and counts
    updates, opt_state = update(_grads(small, params, probe), opt_state, params)
    params = optax.apply_updates(params, updates)
  small_state = {"step": jnp.asarray(3, jnp.int32), "params": params, "opt_state": opt_state}
  shardings = train_state.state_shardings(big, tx, mesh, rules,
                                          train_state.abstract_state(big, tx))
  return dict(small=small, big=big, tx=tx, state=small_state, shardings=shardings)


def _adam(opt_state) -> optax.ScaleByAdamState:
  return opt_state[1][0]


def _schedule_count(opt_state) -> int:
  return int(opt_state[1][2].count)


@pytest.mark.parametrize("optimizer, schedule", [("carry", "restart"), ("carry", "continue"),
                                                 ("reset", "restart"), ("reset", "continue")])
def test_grow_state_modes(sharded_setup, optimizer, schedule):
  s = sharded_setup
  plan = plan_growth(s["small"], s["big"], depth_mode="append")
  grown = grow_optimizer.grow_state(s["state"], s["small"], s["big"], plan, tx=s["tx"],
                                    shardings=s["shardings"], optimizer=optimizer,
                                    schedule=schedule)
  assert int(grown["step"]) == (3 if schedule == "continue" else 0)
  assert _schedule_count(grown["opt_state"]) == (3 if schedule == "continue" else 0)
  adam = _adam(grown["opt_state"])
  if optimizer == "carry":
    assert int(adam.count) == 3
    want = grow_params.grow_tree(_adam(s["state"]["opt_state"]).nu, s["small"], s["big"], plan,
                                 kind="nu")
    for a, b in zip(jax.tree.leaves(adam.nu), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  else:
    assert int(adam.count) == 0
    assert all(float(jnp.max(jnp.abs(m))) == 0.0 for m in jax.tree.leaves((adam.mu, adam.nu)))
  # Every array sits in the big model's sharding, e.g. FFN units over 'tensor', hidden over 'fsdp'.
  for array, sharding in zip(jax.tree.leaves(grown), jax.tree.leaves(s["shardings"])):
    assert array.sharding.is_equivalent_to(sharding, array.ndim)
  assert grown["params"]["blocks"]["mlp"]["up"].sharding.spec == jax.sharding.PartitionSpec(
      None, "fsdp", "tensor")


def test_rescale_continues_the_learning_rate_at_the_source_s_fraction(sharded_setup):
  s = sharded_setup  # the small state is at step 3
  plan = plan_growth(s["small"], s["big"], depth_mode="append")
  grown = grow_optimizer.grow_state(s["state"], s["small"], s["big"], plan, tx=s["tx"],
                                    shardings=s["shardings"], optimizer="reset",
                                    schedule="rescale", schedule_lengths=(12, 40))
  assert int(grown["step"]) == 10 and _schedule_count(grown["opt_state"]) == 10  # 3/12 of 40
  # The big run's first update after growth uses its schedule a quarter of the way in: with reset
  # moments and zero gradients the update is the weight decay alone, -lr * wd * p.
  big_opt = train_state.OptimizerConfig(warmup_steps=4)
  tx = train_state.make_optimizer(big_opt, 40)
  params = jax.tree.map(jnp.ones_like, grown["params"])
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), grown["opt_state"],
                                  params)
  lr = float(train_state.learning_rate_schedule(big_opt, 40)(10))
  assert lr < big_opt.learning_rate  # past the warmup, on the way down
  np.testing.assert_allclose(np.asarray(updates["blocks"]["mlp"]["up"]),
                             -lr * big_opt.weight_decay, rtol=1e-5)
  assert grow_optimizer.grown_step("rescale", 30, (12, 40)) == 40  # past its end: the end
  assert grow_optimizer.grown_step("continue", 3, None) == 3
  assert grow_optimizer.grown_step("restart", 3, None) == 0
  with pytest.raises(ValueError, match="rescale' needs both schedules' lengths"):
    grow_optimizer.grown_step("rescale", 3, None)


def test_bad_modes_are_clear_errors(sharded_setup):
  s = sharded_setup
  plan = plan_growth(s["small"], s["big"])
  with pytest.raises(ValueError, match="optimizer='keep'; expected one of"):
    grow_optimizer.grow_state(s["state"], s["small"], s["big"], plan, tx=s["tx"],
                              shardings=s["shardings"], optimizer="keep")
