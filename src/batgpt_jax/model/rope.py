"""Rotary position embedding: the frequencies, scaled for a longer context, and the rotation.

The frequencies depend on the config alone, so they are computed once on the host in float64 and
enter the graph as a float32 constant. The scalings follow transformers' `modeling_rope_utils`
(linear, llama3, yarn) number for number, so a converted model rotates as it does here;
`docs/long_context.md` says what each one does.
"""

import math

import jax.numpy as jnp
import numpy as np

from batgpt_jax.model.config import ModelConfig


def _unscaled_inv_freq(cfg: ModelConfig) -> np.ndarray:
  """base^(-2i/d) for i < d/2, d = rope_dim: [rope_dim // 2] float64."""
  return 1.0 / cfg.rope_base ** (np.arange(0, cfg.rope_dim, 2, dtype=np.float64) / cfg.rope_dim)


def _llama3(inv: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth band between."""
  factor, original = cfg.rope_scaling_factor, cfg.rope_original_max_len
  low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
  wavelen = 2 * math.pi / inv
  smooth = (original / wavelen - low) / (high - low)  # 0 at original/low, 1 at original/high
  banded = (1 - smooth) * inv / factor + smooth * inv
  return np.where(wavelen > original / low, inv / factor,
                  np.where(wavelen < original / high, inv, banded))


def yarn_ramp_bounds(cfg: ModelConfig) -> tuple[float, float]:
  """YaRN's (low, high) frequency indices: below low a frequency is kept, above high it is
  interpolated. Index i rotates original_max_len * inv_freq[i] / 2pi times over the original
  context; low has rope_beta_fast turns, high rope_beta_slow."""
  d, base, original = cfg.rope_dim, cfg.rope_base, cfg.rope_original_max_len

  def index_with_turns(turns: float) -> float:
    return d * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(base))

  low, high = index_with_turns(cfg.rope_beta_fast), index_with_turns(cfg.rope_beta_slow)
  if cfg.rope_truncate:
    low, high = math.floor(low), math.ceil(high)
  return max(low, 0), min(high, d - 1)


def _yarn(inv: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """YaRN ("NTK-by-parts"): fast frequencies kept, slow ones interpolated, a linear ramp between."""
  low, high = yarn_ramp_bounds(cfg)
  if low == high:
    high += 0.001  # as transformers does, so that the ramp is a step rather than 0 / 0
  ramp = np.clip((np.arange(cfg.rope_dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
  return inv / cfg.rope_scaling_factor * ramp + inv * (1.0 - ramp)


def inv_freq(cfg: ModelConfig) -> np.ndarray:
  """The rotation frequency of each pair of rotated features, scaled: [rope_dim // 2] float32."""
  inv = _unscaled_inv_freq(cfg)
  if cfg.rope_scaling == "linear":
    inv = inv / cfg.rope_scaling_factor
  elif cfg.rope_scaling == "llama3":
    inv = _llama3(inv, cfg)
  elif cfg.rope_scaling == "yarn":
    inv = _yarn(inv, cfg)
  return inv.astype(np.float32)


def attention_factor(cfg: ModelConfig) -> float:
  """The factor on cos and sin (so on q.k, squared): YaRN's mscale, 1.0 for the other types."""
  if cfg.rope_scaling != "yarn":
    return 1.0
  if cfg.rope_attention_factor:
    return cfg.rope_attention_factor
  factor = cfg.rope_scaling_factor
  return 1.0 if factor <= 1.0 else 0.1 * math.log(factor) + 1.0


def angles(positions, cfg: ModelConfig):
  """[batch, length] -> cos, sin of shape [batch, length, rope_dim // 2], float32."""
  theta = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq(cfg))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  scale = attention_factor(cfg)
  if scale != 1.0:
    cos, sin = cos * scale, sin * scale
  return cos, sin


def apply_rope(x, cos, sin, rope_dim: int, style: str):
  """Rotates the first `rope_dim` features of each head; the rest pass through.

  x: [batch, length, heads, head_dim]; cos, sin: [batch, length, rope_dim // 2].
  'interleaved' rotates pairs (2i, 2i+1) as BatGPT and ChatGLM do; 'half_split' rotates pairs
  (i, i + rope_dim/2) as Llama and Qwen do.
  """
  rot, rest = x[..., :rope_dim].astype(jnp.float32), x[..., rope_dim:]
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  if style == "interleaved":
    pairs = rot.reshape(rot.shape[:-1] + (rope_dim // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    rot = jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(rot.shape)
  else:
    a, b = rot[..., : rope_dim // 2], rot[..., rope_dim // 2:]
    rot = jnp.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
  return jnp.concatenate([rot.astype(x.dtype), rest], axis=-1)
