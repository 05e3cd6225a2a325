"""The one place that decides sharding: the mesh, the logical axis rules, and batch placement.

Every parameter and main activation carries logical axis names (`batch`, `length`, `embed`,
`mlp`, `heads`, `kv_heads`, `head_dim`, `vocab`, `layers`). `MeshConfig.axis_rules` (gin) maps each
name to mesh axes of the `('data', 'fsdp', 'tensor')` mesh. A rule is used for an array dimension
when its mesh axes are not already taken by another dimension of that array and their size divides
the dimension; otherwise that dimension is replicated (T5X/MaxText semantics).
"""

import contextlib
import contextvars
import dataclasses
import logging
import math
from typing import Any, Sequence

import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, Any]]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """The ('data', 'fsdp', 'tensor') mesh: its shape inside a slice and across slices.

  `shape` is the layout inside one slice (fast ICI or NVLink); one entry may be -1 (the rest of
  the slice's devices). `dcn_shape` multiplies it across slices (the slower data-centre network):
  a run over 2 TPU slices with `dcn_shape = (2, 1, 1)` is data parallel across them and keeps
  FSDP and tensor traffic inside each. Each mesh axis has size shape[i] * dcn_shape[i].
  """

  shape: tuple = (-1, 1, 1)
  dcn_shape: tuple = (1, 1, 1)
  axis_rules: tuple = ()


def resolve_mesh_shape(shape: Sequence[int], n_devices: int) -> tuple[int, ...]:
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"MeshConfig.shape={shape} must have {len(MESH_AXES)} entries, one per axis "
                     f"{MESH_AXES}, e.g. --gin.MeshConfig.shape='(-1, 1, 1)'")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"MeshConfig.shape={shape}: use positive sizes and at most one -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if n_devices % known:
      raise ValueError(
          f"MeshConfig.shape={shape} does not divide the {n_devices} devices: the fixed axes "
          f"multiply to {known}. Choose fixed sizes whose product divides {n_devices}.")
    shape = tuple(n_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != n_devices:
    raise ValueError(
        f"MeshConfig.shape={shape} needs {math.prod(shape)} devices but {n_devices} are "
        f"available. Set MeshConfig.shape so its product is {n_devices} (or put -1 on one axis).")
  return shape


def _slice_of(device) -> int:
  """A device's slice: its TPU slice, else its process (a host joined over the network)."""
  return device.slice_index if device.platform == "tpu" else device.process_index


def hybrid_grid(devices: Sequence, ici_shape: Sequence[int], dcn_shape: Sequence[int],
                slice_of=_slice_of) -> np.ndarray:
  """Devices laid out so that each mesh axis is (DCN index major, ICI index minor).

  Slices are ordered by id and each slice's devices row-major: [dcn0*ici0, dcn1*ici1, dcn2*ici2].
  """
  groups: dict[int, list] = {}
  for device in devices:
    groups.setdefault(slice_of(device), []).append(device)
  if len(groups) != math.prod(dcn_shape):
    raise ValueError(
        f"MeshConfig.dcn_shape={tuple(dcn_shape)} asks for {math.prod(dcn_shape)} slices but the "
        f"devices form {len(groups)} (TPU slices, or processes elsewhere). Set dcn_shape so its "
        f"product is {len(groups)}, or (1, 1, 1) for a single slice.")
  sizes = {len(g) for g in groups.values()}
  if sizes != {math.prod(ici_shape)}:
    raise ValueError(f"Slices hold {sorted(sizes)} devices each; MeshConfig.shape={tuple(ici_shape)} "
                     f"needs {math.prod(ici_shape)} in every slice.")
  grid = np.empty(len(devices), dtype=object)
  grid[:] = [d for key in sorted(groups) for d in groups[key]]
  n = len(MESH_AXES)
  grid = grid.reshape(tuple(dcn_shape) + tuple(ici_shape))  # [dcn axes..., ici axes...]
  grid = grid.transpose([i for axis in range(n) for i in (axis, n + axis)])
  return grid.reshape([d * i for d, i in zip(dcn_shape, ici_shape)])


def mesh_from_config(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  dcn = tuple(int(d) for d in cfg.dcn_shape)
  if len(dcn) != len(MESH_AXES) or min(dcn) < 1:
    raise ValueError(f"MeshConfig.dcn_shape={dcn} must hold {len(MESH_AXES)} positive sizes, one "
                     f"per axis {MESH_AXES}, e.g. (2, 1, 1) for data parallelism over 2 slices.")
  slices = math.prod(dcn)
  if len(devices) % slices:
    raise ValueError(f"MeshConfig.dcn_shape={dcn} asks for {slices} slices, which do not divide "
                     f"the {len(devices)} devices.")
  shape = resolve_mesh_shape(cfg.shape, len(devices) // slices)
  if slices > 1:
    if devices[0].platform == "tpu":  # follows the ICI topology inside each slice
      grid = mesh_utils.create_hybrid_device_mesh(shape, dcn, devices)
    else:
      grid = hybrid_grid(devices, shape, dcn)
  elif devices[0].platform == "cpu":
    grid = np.asarray(devices).reshape(shape)  # no interconnect topology: plain row-major order
  else:
    grid = mesh_utils.create_device_mesh(shape, devices)  # follows the ICI / NVLink topology
  return Mesh(grid, MESH_AXES)


def check_rules(rules: Rules) -> tuple[tuple[str, Any], ...]:
  if not rules:
    raise ValueError("No logical axis rules: include gin/mesh/rules.gin (or set "
                     "MeshConfig.axis_rules) so parameters and batches know how to shard.")
  for name, target in rules:
    axes = target if isinstance(target, (tuple, list)) else (target,)
    bad = [a for a in axes if a is not None and a not in MESH_AXES]
    if bad:
      raise ValueError(f"Axis rule ({name!r}, {target!r}) names mesh axes {bad}; the mesh axes "
                       f"are {MESH_AXES}")
  return tuple((name, tuple(t) if isinstance(t, list) else t) for name, t in rules)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Rules) -> PartitionSpec:
  """Maps one array's logical axis names to a PartitionSpec under `rules`."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name, dim in zip(names, shape):
    target = table.get(name) if name is not None else None
    axes = tuple(a for a in (target if isinstance(target, tuple) else (target,)) if a)
    axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
    if axes and dim % math.prod(mesh.shape[a] for a in axes) == 0:
      used.update(axes)
      spec.append(axes[0] if len(axes) == 1 else axes)
    else:
      spec.append(None)
  return PartitionSpec(*spec)


def logical_sharding(names, shape, mesh: Mesh, rules: Rules) -> NamedSharding:
  return NamedSharding(mesh, logical_to_spec(names, shape, mesh, rules))


# Activation constraints: set while tracing the step, a no-op elsewhere (tests, eager calls).
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("batgpt_mesh_rules", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules):
  token = _ACTIVE.set((mesh, tuple(rules)))
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def active() -> tuple[Mesh, tuple] | None:
  """(mesh, rules) while a step is traced under `activation_sharding`, else None."""
  return _ACTIVE.get()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, rules = active
  return jax.lax.with_sharding_constraint(x, logical_sharding(names, x.shape, mesh, rules))


BATCH_AXES = ("batch", "length")


def batch_sharding(mesh: Mesh, rules: Rules, shape: Sequence[int]) -> NamedSharding:
  return logical_sharding(BATCH_AXES[: len(shape)], shape, mesh, rules)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, rules: Rules) -> dict[str, jax.Array]:
  """Assembles each host's rows into global `jax.Array`s sharded over the batch axes."""
  out = {}
  for key, value in local.items():
    global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
    sharding = batch_sharding(mesh, rules, global_shape)
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out


def log_mesh(mesh: Mesh) -> None:
  logging.info("Mesh %s over %d %s devices (%d processes)",
               dict(mesh.shape), mesh.size, jax.devices()[0].platform, jax.process_count())
