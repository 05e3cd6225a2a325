"""The proof that a grown model computes the small model's function, on a probe batch.

`compare` runs both models and reports the largest logit difference and, for function-preserving
growth, the largest difference of the residual stream at every layer: after the embedding and
after each block, big layer l must hold `hidden` copies of the small state after layer
`plan.depth.sources[l]` (an inserted block repeats the state of the block it follows).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from batgpt_jax.grow.plan import GrowthPlan
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig

# The largest logit difference accepted, by the coarser compute dtype of the two models.
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


def probe_batch(vocab_size: int, *, batch: int = 2, length: int = 32, seed: int = 0):
  """(tokens, positions, segment_ids) [batch, length] int32; each row packs two documents, so the
  segment mask and the position restart are part of what is checked."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab_size, (batch, length))
  index = np.arange(length)[None].repeat(batch, axis=0)
  split = max(1, length * 5 // 8)
  segment_ids = np.where(index < split, 1, 2)
  positions = np.where(index < split, index, index - split)
  return tuple(jnp.asarray(a, jnp.int32) for a in (tokens, positions, segment_ids))


@functools.lru_cache(maxsize=16)
def _graphdef(cfg: ModelConfig):
  return nnx.split(nnx.eval_shape(lambda: transformer.build(cfg)), nnx.Param)[0]


def layer_states(cfg: ModelConfig, params: dict, tokens, positions, segment_ids) -> list:
  """The residual stream after the embedding and after each block, layer by layer:
  n_layers + 1 arrays [batch, length, hidden] (the scan of `Decoder.hidden_states`, unrolled)."""
  return forward(cfg, params, tokens, positions, segment_ids)[1]


def logits(cfg: ModelConfig, params: dict, tokens, positions, segment_ids):
  return forward(cfg, params, tokens, positions, segment_ids)[0]


@functools.partial(jax.jit, static_argnums=0)
def forward(cfg: ModelConfig, params: dict, tokens, positions, segment_ids):
  """(logits [batch, length, vocab] float32, the residual stream at every layer).

  The logits come from `transformer.apply`, the scanned path that training runs; the states from
  the same blocks unrolled, one merge of sliced parameters per layer."""
  model = nnx.merge(_graphdef(cfg), params)
  x = model.embed(tokens)
  block_def, stacked = nnx.split(model.blocks)
  states = [x]
  for layer in range(cfg.n_layers):
    block = nnx.merge(block_def, jax.tree.map(lambda a, i=layer: a[i], stacked))
    x = block(x, positions, segment_ids)
    states.append(x)
  return transformer.apply(cfg, params, tokens, positions, segment_ids), states


@dataclasses.dataclass(frozen=True)
class Report:
  max_logit_diff: float
  layer_diffs: tuple[float, ...]  # per grown layer state, the embedding first; () for stack
  function_preserving: bool
  tolerance: float

  @property
  def passed(self) -> bool:
    """The logits are within tolerance; always true for a growth that does not claim to preserve
    the function. (Layer differences are reported: their scale is the residual stream's.)"""
    diff = self.max_logit_diff
    return not self.function_preserving or bool(np.isfinite(diff) and diff <= self.tolerance)

  def lines(self) -> list[str]:
    out = [f"Probe: largest logit difference {self.max_logit_diff:.3g} "
           + (f"(tolerance {self.tolerance:.0e})" if self.function_preserving else
              "(this growth does not preserve the function; reported, not enforced)")]
    if self.layer_diffs:
      out.append("Probe: largest residual-stream difference per layer (embedding first): "
                 + " ".join(f"{d:.2g}" for d in self.layer_diffs))
    return out


def tolerance_for(small_cfg: ModelConfig, big_cfg: ModelConfig) -> float:
  return max(TOLERANCE[small_cfg.compute_dtype], TOLERANCE[big_cfg.compute_dtype])


def compare(small_cfg: ModelConfig, small_params: dict, big_cfg: ModelConfig, big_params: dict,
            plan: GrowthPlan, *, probe=None, tolerance: float | None = None) -> Report:
  probe = probe_batch(small_cfg.vocab_size) if probe is None else probe
  small_logits, small_states = forward(small_cfg, small_params, *probe)
  big_logits, big_states = forward(big_cfg, big_params, *probe)
  logit_diff = float(jnp.max(jnp.abs(big_logits - small_logits)))
  layer_diffs = ()
  if plan.function_preserving:
    sources = (-1,) + plan.depth.sources  # state 0 is the embedding, state l + 1 follows layer l
    layer_diffs = tuple(
        float(jnp.max(jnp.abs(big - jnp.tile(small_states[s + 1], plan.width.hidden))))
        for big, s in zip(big_states, sources))
  return Report(max_logit_diff=logit_diff, layer_diffs=layer_diffs,
                function_preserving=plan.function_preserving,
                tolerance=tolerance_for(small_cfg, big_cfg) if tolerance is None else tolerance)
