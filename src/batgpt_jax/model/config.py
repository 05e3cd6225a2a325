"""`ModelConfig`: every size and switch of the BatGPT decoder, set from gin size files."""

import dataclasses

import gin
import jax.numpy as jnp

ROPE_STYLES = ("interleaved", "half_split")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder-only LM. Defaults are the `tiny` size; `gin/models/*.gin` set the others."""

  vocab_size: int = 2048
  hidden: int = 64
  n_layers: int = 2
  n_heads: int = 4
  n_kv_heads: int = 2
  head_dim: int = 16
  ffn: int = 192
  max_len: int = 1024
  rope_fraction: float = 1.0  # share of head_dim that is rotated (BatGPT: 0.5)
  rope_style: str = "interleaved"  # BatGPT/ChatGLM pairs (2i, 2i+1); Llama/Qwen pairs (i, i + d/2)
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  qkv_bias: bool = True
  init_std: float = 0.02
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  remat: str = "none"

  def __post_init__(self):
    problems = []
    if self.n_heads % self.n_kv_heads:
      problems.append(
          f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}"
          " (grouped-query attention shares each KV head among n_heads/n_kv_heads queries)")
    if self.rope_style not in ROPE_STYLES:
      problems.append(f"rope_style={self.rope_style!r}; expected one of {ROPE_STYLES}")
    if not 0.0 < self.rope_fraction <= 1.0:
      problems.append(f"rope_fraction={self.rope_fraction}; expected a value in (0, 1]")
    elif self.rope_dim % 2:
      problems.append(
          f"rope_fraction={self.rope_fraction} of head_dim={self.head_dim} gives an odd "
          f"rotary width {self.rope_dim}; rotation works on pairs, choose an even width")
    if self.remat not in REMAT_POLICIES:
      problems.append(f"remat={self.remat!r}; expected one of {REMAT_POLICIES}")
    for field in ("param_dtype", "compute_dtype"):
      if getattr(self, field) not in ("float32", "bfloat16", "float16"):
        problems.append(f"{field}={getattr(self, field)!r}; expected float32, bfloat16 or float16")
    if problems:
      raise ValueError("Invalid ModelConfig: " + "; ".join(problems))

  @property
  def rope_dim(self) -> int:
    return int(round(self.head_dim * self.rope_fraction))

  @property
  def params_dtype(self):
    return jnp.dtype(self.param_dtype)

  @property
  def dtype(self):
    return jnp.dtype(self.compute_dtype)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"Unknown ModelConfig fields {unknown}; known fields are {sorted(known)}")
    return cls(**values)


def count_params(cfg: ModelConfig) -> int:
  """The parameter count in closed form; tests check it against the built model."""
  d, h, kv, hd = cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  attn = d * h * hd + 2 * d * kv * hd + h * hd * d
  if cfg.qkv_bias:
    attn += h * hd + 2 * kv * hd
  block = attn + 3 * d * cfg.ffn + 2 * d
  return cfg.n_layers * block + 2 * cfg.vocab_size * d + d


def describe(cfg: ModelConfig) -> str:
  n = count_params(cfg)
  scale = next((s, u) for s, u in ((1e9, "B"), (1e6, "M"), (1e3, "K"), (1, "")) if n >= s or s == 1)
  return (f"{n / scale[0]:.{0 if scale[0] == 1 else 1}f}{scale[1]} params: {cfg.n_layers} layers, "
          f"hidden {cfg.hidden}, {cfg.n_heads} heads / {cfg.n_kv_heads} KV x {cfg.head_dim}, "
          f"FFN {cfg.ffn}, vocab {cfg.vocab_size}, RoPE {cfg.rope_style} on {cfg.rope_dim} dims")
