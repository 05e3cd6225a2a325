"""Grows a parameter-shaped pytree one array at a time, each straight into its target sharding.

Each array goes through one jitted function (copy layers, tile and rescale, identity blocks,
noise) whose `out_shardings` are the grown model's: it is created in its sharding (on a pod each
host computes only its own shards), and the temporaries alive at any time are those of one
array, never a second copy of the model.
"""

import functools
import zlib
from typing import Callable

import jax
import jax.numpy as jnp

from batgpt_jax.grow import depth, width
from batgpt_jax.grow.plan import GrowthError, GrowthPlan
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig

KINDS = ("param", "mu", "nu")  # weights, Adam first moments, Adam second moments
Progress = Callable[[str], None]


def path_name(path) -> str:
  return "/".join(str(getattr(key, "key", key)) for key in path)


def _grow_array(value, key, *, name: str, axes: tuple, plan: GrowthPlan, kind: str, dtype):
  stacked = axes[0] == "layers"
  if stacked:
    value = depth.copy_layers(value, plan.depth)
  if kind == "param":
    value = width.grow_weight(value, name, axes, plan.width)
    if stacked:
      value = depth.make_identity(value, name, plan.depth)
    if plan.noise_snr_db is not None:
      value = width.paired_noise(key, value, name, axes, plan.width, plan.noise_snr_db)
  else:
    value = width.grow_moment(value, name, axes, plan.width, power=1 if kind == "mu" else 2)
    if stacked:
      value = depth.zero_new_layers(value, plan.depth)
  return value.astype(dtype)


@functools.lru_cache(maxsize=64)
def _compiled(place):
  """One jitted `_grow_array` per output sharding; it caches a compile per array and plan."""
  return jax.jit(_grow_array, static_argnames=("name", "axes", "plan", "kind", "dtype"),
                 out_shardings=place)


def grow_tree(tree: dict, small_cfg: ModelConfig, big_cfg: ModelConfig, plan: GrowthPlan, *,
              kind: str = "param", shardings: dict | None = None,
              progress: Progress | None = None) -> dict:
  """`tree` shaped like the small model's params -> shaped like the big model's.

  kind: 'param' grows weights (rescaled by input copies, noise if planned); 'mu' / 'nu' grow Adam
  moments (rescaled by output copies, once or squared; inserted layers zero). `shardings` (a
  pytree of the big model's param shardings) places each output; None leaves it to jit.
  """
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  axes = treedef.flatten_up_to(transformer.logical_axes(small_cfg))
  targets = treedef.flatten_up_to(transformer.abstract_params(big_cfg))
  places = treedef.flatten_up_to(shardings) if shardings is not None else [None] * len(leaves)
  base_key = jax.random.key(plan.seed)
  grown = []
  for i, ((path, value), names, target, place) in enumerate(zip(leaves, axes, targets, places)):
    label = path_name(path)
    key = jax.random.fold_in(base_key, zlib.crc32(label.encode()) & 0x7FFFFFFF)
    out = _compiled(place)(value, key, name=str(path[-1].key), axes=tuple(names), plan=plan,
                           kind=kind, dtype=target.dtype)
    if out.shape != target.shape:  # the plan and the configs disagree: a bug, never silent
      raise GrowthError(f"{label}: grew {value.shape} into {out.shape}, but the target model "
                        f"has {target.shape}")
    grown.append(out)
    if progress is not None:
      progress(f"[{i + 1}/{len(leaves)}] {kind:5s} {label}: {tuple(value.shape)} -> "
               f"{tuple(out.shape)}")
  return jax.tree_util.tree_unflatten(treedef, grown)


def zeros_like_params(big_cfg: ModelConfig, shardings: dict | None = None) -> dict:
  """Zeros shaped like the big model's params, each created in its sharding."""
  leaves, treedef = jax.tree.flatten(transformer.abstract_params(big_cfg))
  places = treedef.flatten_up_to(shardings) if shardings is not None else [None] * len(leaves)
  zeros = [jax.jit(functools.partial(jnp.zeros, a.shape, a.dtype), out_shardings=s)()
           for a, s in zip(leaves, places)]
  return jax.tree.unflatten(treedef, zeros)
