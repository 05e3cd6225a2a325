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


class FakeDevice:
  def __init__(self, id_, slice_index):
    self.id, self.slice_index, self.process_index = id_, slice_index, id_ // 4
    self.platform = "tpu"

  def __repr__(self):
    return f"d{self.id}"


def test_hybrid_grid_puts_slices_on_the_outer_part_of_each_axis():
  # 2 slices of 4 devices, listed interleaved: slices are grouped by their index, not list order.
  devices = [FakeDevice(i, slice_index=i % 2) for i in range(8)]
  grid = parallel.hybrid_grid(devices, (1, 2, 2), (2, 1, 1), slice_of=lambda d: d.slice_index)
  assert grid.shape == (2, 2, 2)
  assert [[d.slice_index for d in grid[i].ravel()] for i in range(2)] == [[0] * 4, [1] * 4]
  assert [d.id for d in grid[0].ravel()] == [0, 2, 4, 6]  # a slice's own order, row-major
  across_fsdp = parallel.hybrid_grid(devices, (2, 2, 1), (1, 2, 1),
                                     slice_of=lambda d: d.slice_index)
  assert across_fsdp.shape == (2, 4, 1)
  assert [d.slice_index for d in across_fsdp[0, :, 0]] == [0, 0, 1, 1]  # DCN major on fsdp


def test_hybrid_grid_checks_the_slice_count():
  devices = [FakeDevice(i, slice_index=i // 4) for i in range(8)]
  with pytest.raises(ValueError, match=r"dcn_shape=\(4, 1, 1\) asks for 4 slices but the "
                                       r"devices form 2"):
    parallel.hybrid_grid(devices, (1, 2, 1), (4, 1, 1), slice_of=lambda d: d.slice_index)


def test_a_multi_slice_mesh_needs_as_many_slices_as_processes():
  # One process here: two "slices" over DCN cannot be formed from it.
  with pytest.raises(ValueError, match="asks for 2 slices but the devices form 1"):
    parallel.mesh_from_config(parallel.MeshConfig(shape=(1, -1, 1), dcn_shape=(2, 1, 1)))
  with pytest.raises(ValueError, match=r"dcn_shape=\(0, 1, 1\) must hold 3 positive sizes"):
    parallel.mesh_from_config(parallel.MeshConfig(dcn_shape=(0, 1, 1)))


@pytest.mark.parametrize("name, devices, slices, want", [
    ("cpu", 8, 1, {"data": 8, "fsdp": 1, "tensor": 1}),
    ("tpu_v4_32", 16, 1, {"data": 1, "fsdp": 16, "tensor": 1}),
    ("tpu_v5p_128", 64, 1, {"data": 1, "fsdp": 64, "tensor": 1}),
    ("tpu_v5p_256", 128, 2, {"data": 2, "fsdp": 64, "tensor": 1}),
    ("gpu_8xh100", 16, 1, {"data": 2, "fsdp": 8, "tensor": 1}),
])
def test_mesh_gin_files_fit_their_machines(name, devices, slices, want):
  import gin  # pylint: disable=import-outside-toplevel
  from testlib import GIN_DIR  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  gin.add_config_file_search_path(str(GIN_DIR))
  try:
    gin.parse_config_files_and_bindings([str(GIN_DIR / "mesh" / f"{name}.gin")], [])
    cfg = parallel.MeshConfig()
  finally:
    gin.clear_config()
  parallel.check_rules(cfg.axis_rules)
  fake = [FakeDevice(i, slice_index=i * slices // devices) for i in range(devices)]
  per_slice = parallel.resolve_mesh_shape(cfg.shape, devices // slices)
  grid = parallel.hybrid_grid(fake, per_slice, cfg.dcn_shape, slice_of=lambda d: d.slice_index)
  assert dict(zip(parallel.MESH_AXES, grid.shape)) == want
