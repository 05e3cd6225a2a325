import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from batgpt_jax import parallel
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import state as train_state


def test_device_count_is_eight():
  assert jax.device_count() == 8  # tests/conftest.py fakes 8 CPU devices


@pytest.mark.parametrize("shape, want", [((-1, 1, 1), (8, 1, 1)), ((2, -1, 2), (2, 2, 2)),
                                         ((1, 1, 8), (1, 1, 8))])
def test_mesh_shape_resolution(shape, want):
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=shape))
  assert tuple(mesh.shape.values()) == want
  assert mesh.axis_names == parallel.MESH_AXES


@pytest.mark.parametrize("shape, message", [
    ((3, 1, 1), "needs 3 devices but 8 are available"),
    ((3, -1, 1), "does not divide the 8 devices"),
    ((-1, -1, 1), "at most one -1"),
    ((8, 1), "must have 3 entries"),
])
def test_a_mesh_that_does_not_fit_the_devices_is_a_clear_error(shape, message):
  with pytest.raises(ValueError, match=message):
    parallel.mesh_from_config(parallel.MeshConfig(shape=shape))


def test_rules_are_required_and_checked():
  with pytest.raises(ValueError, match="rules.gin"):
    parallel.check_rules(())
  with pytest.raises(ValueError, match="names mesh axes"):
    parallel.check_rules((("embed", "model"),))


def test_logical_to_spec_follows_the_rules(axis_rules):
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=(2, 2, 2)))
  spec = lambda names, shape: parallel.logical_to_spec(names, shape, mesh, axis_rules)
  assert spec(("embed", "mlp"), (64, 192)) == P("fsdp", "tensor")
  assert spec(("batch", "length"), (8, 16)) == P(("data", "fsdp"), None)
  # An axis that does not divide the dimension is left out (replicated), never an error.
  assert spec(("embed", "mlp"), (63, 192)) == P(None, "tensor")
  # A mesh axis is used once per array: the second 'tensor' dimension stays whole.
  assert spec(("heads", "vocab"), (4, 64)) == P("tensor", None)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)])
def test_parameters_are_created_in_the_sharding_the_rules_give(shape, axis_rules):
  cfg = ModelConfig(n_heads=8, n_kv_heads=8)
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=shape))
  tx = train_state.make_optimizer(train_state.OptimizerConfig(), 10)
  state, _ = train_state.create_state(cfg, tx, mesh, axis_rules, seed=0)
  from batgpt_jax.model import transformer  # pylint: disable=import-outside-toplevel
  names = transformer.logical_axes(cfg)
  for axes, array in zip(jax.tree.leaves(names, is_leaf=lambda x: isinstance(x, tuple)),
                         jax.tree.leaves(state["params"])):
    assert array.sharding.spec == parallel.logical_to_spec(axes, array.shape, mesh, axis_rules)
  # Adam moments are sharded like their parameters.
  mu = state["opt_state"][1][0].mu
  assert mu["blocks"]["mlp"]["gate"].sharding == state["params"]["blocks"]["mlp"]["gate"].sharding
  if shape == (2, 2, 2):
    assert state["params"]["blocks"]["mlp"]["gate"].sharding.spec == P(None, "fsdp", "tensor")


def test_global_batch_is_sharded_over_the_batch_axes(axis_rules):
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=(2, 2, 2)))
  local = {"tokens": np.arange(8 * 4, dtype=np.int32).reshape(8, 4)}
  out = parallel.global_batch(local, mesh, axis_rules)["tokens"]
  assert out.shape == (8, 4)
  assert out.sharding.spec == P(("data", "fsdp"), None)
  np.testing.assert_array_equal(np.asarray(out), local["tokens"])
