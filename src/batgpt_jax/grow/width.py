"""Width growth of one array (HyperCloning, arXiv 2409.12903): tile, rescale, optional noise.

The grown model carries every small activation as copies: the residual stream x (width d) becomes
x' = [x, x, ..., x] (n copies), query heads, KV heads and FFN units likewise. Each parameter is
tiled on every axis by the copies of that axis; a kernel is then divided by the copies of its
input (contracted) axis r, so each output unit sums its r identical inputs at 1/r and
x' @ W' = tile(x @ W). Embeddings, norm gains and biases have no input axis: tiled, not scaled.
RMSNorm is exact because a tiled vector has the RMS of the original.

Attention: query head h' = c*H + h (copy c) is small head h; KV heads tile the same way, so h'
uses KV head h' // (H/K) = c*K + h // (H/K), a copy of small KV head h // (H/K): the grouping
holds (an MQA head is not tiled; all copies share it). head_dim, RoPE and the softmax scale
1/sqrt(head_dim) are untouched, so every head copy outputs exactly the small head's output; the
output projection `o` reads n copies of each head and is divided by n.

Gradients: at a tiled point each copy of an activation gets 1/copies of the small gradient, so a
weight whose output axis has r_out copies gets grad' = tile(grad) / r_out. That gives the rule for
carrying Adam moments: mu' = tile(mu) / r_out, nu' = tile(nu) / r_out**2.
"""

import math

import jax
import jax.numpy as jnp

from batgpt_jax.grow.plan import GrowthError, WidthPlan

# The contracted (input) axis of each kernel, by parameter name.
KERNEL_INPUT_AXIS = {"q": "embed", "k": "embed", "v": "embed", "o": "heads", "gate": "embed",
                     "up": "embed", "down": "mlp", "lm_head": "embed"}
# Parameters with no input axis: tiled and never rescaled.
UNSCALED = ("embedding", "scale", "q_bias", "k_bias", "v_bias")


def input_axis(name: str) -> str | None:
  if name in KERNEL_INPUT_AXIS:
    return KERNEL_INPUT_AXIS[name]
  if name in UNSCALED:
    return None
  raise GrowthError(f"No width-growth rule for the parameter {name!r}; add it to "
                    "KERNEL_INPUT_AXIS (a kernel) or UNSCALED (an embedding, gain or bias) in "
                    "batgpt_jax/grow/width.py")


def input_copies(name: str, plan: WidthPlan) -> int:
  axis = input_axis(name)
  return 1 if axis is None else plan.copies(axis)


def output_copies(name: str, axes: tuple, plan: WidthPlan) -> int:
  axis = input_axis(name)
  return math.prod(plan.copies(a) for a in axes if a != axis)


def tile(value: jax.Array, axes: tuple, plan: WidthPlan) -> jax.Array:
  """Copy-major tiling: along an axis with r copies, index c*size + i holds element i."""
  return jnp.tile(value, [plan.copies(a) for a in axes])


def grow_weight(value: jax.Array, name: str, axes: tuple, plan: WidthPlan) -> jax.Array:
  return tile(value, axes, plan) / input_copies(name, plan)


def grow_moment(value: jax.Array, name: str, axes: tuple, plan: WidthPlan,
                power: int) -> jax.Array:
  """An Adam moment: `power` 1 for mu (like a gradient), 2 for nu (like a squared gradient)."""
  return tile(value, axes, plan) / output_copies(name, axes, plan) ** power


def paired_noise(key: jax.Array, grown: jax.Array, name: str, axes: tuple, plan: WidthPlan,
                 snr_db: float) -> jax.Array:
  """Adds +N to input copy 2p of a kernel and -N to its twin 2p+1 (an odd last copy gets none).

  The twins read identical inputs, so their contributions still sum to the same output and the
  function is unchanged; but the copies now differ, so their gradients differ in training and the
  cloned units can diverge. N is Gaussian with power 10^(-snr_db/10) of the kernel's (per layer).
  """
  copies = input_copies(name, plan)
  if copies < 2:
    return grown
  axis = axes.index(input_axis(name))
  per_layer = tuple(i for i in range(grown.ndim) if not (i == 0 and axes[0] == "layers"))
  power = jnp.mean(jnp.square(grown.astype(jnp.float32)), axis=per_layer, keepdims=True)
  std = jnp.sqrt(power / 10.0 ** (snr_db / 10.0))
  block = list(grown.shape)
  block[axis] //= copies
  pairs = jax.random.normal(key, (copies // 2, *block), jnp.float32) * std
  parts = []
  for c in range(copies):
    if c // 2 < copies // 2:
      parts.append(pairs[c // 2] if c % 2 == 0 else -pairs[c // 2])
    else:
      parts.append(jnp.zeros(block, jnp.float32))
  return (grown + jnp.concatenate(parts, axis=axis)).astype(grown.dtype)
