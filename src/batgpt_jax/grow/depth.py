"""Depth growth of one stacked array (leading 'layers' axis): copy layers, zero the new outputs.

A block adds attn(norm(x)) @ o and mlp(norm(x)) @ down to the residual stream. With `o` and `down`
zero it adds nothing: the block is the identity, whatever its other weights. Inserted blocks copy
the block they follow (so their projections start trained) with those two kernels zeroed; the
first optimizer steps then grow `o` and `down` from zero. `stack` mode (G_stack, arXiv 2405.15319)
copies the whole stack g times with nothing zeroed: a good start, but not the same function.
"""

import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax.grow.plan import DepthPlan

# The two kernels that write into the residual stream.
RESIDUAL_WRITES = ("o", "down")


def copy_layers(stacked: jax.Array, plan: DepthPlan) -> jax.Array:
  # [small_layers, ...] -> [big_layers, ...]
  return jnp.take(stacked, np.asarray(plan.sources), axis=0)


def _where_new(stacked: jax.Array, plan: DepthPlan, value) -> jax.Array:
  new = np.asarray(plan.identity).reshape((-1,) + (1,) * (stacked.ndim - 1))
  return jnp.where(new, jnp.asarray(value, stacked.dtype), stacked)


def make_identity(stacked: jax.Array, name: str, plan: DepthPlan) -> jax.Array:
  """Zeroes the residual writes of the inserted layers; other weights stay copied."""
  return _where_new(stacked, plan, 0) if name in RESIDUAL_WRITES else stacked


def zero_new_layers(stacked: jax.Array, plan: DepthPlan) -> jax.Array:
  """For optimizer moments: inserted layers start with no history."""
  return _where_new(stacked, plan, 0)
