"""`ModelConfig`: every size and switch of the BatGPT decoder, set from gin size files."""

import dataclasses

import gin
import jax.numpy as jnp

ROPE_STYLES = ("interleaved", "half_split")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ROPE_SCALINGS = ("none", "linear", "llama3", "yarn")  # model/rope.py; docs/long_context.md
# Which scaling fields each scaling reads; the others must keep their defaults.
ROPE_SCALING_USES = {
    "none": (),
    "linear": ("rope_scaling_factor",),
    "llama3": ("rope_scaling_factor", "rope_original_max_len", "rope_low_freq_factor",
               "rope_high_freq_factor"),
    "yarn": ("rope_scaling_factor", "rope_original_max_len", "rope_beta_fast", "rope_beta_slow",
             "rope_truncate", "rope_attention_factor"),
}
ROPE_SCALING_FIELDS = ("rope_scaling", "rope_scaling_factor", "rope_original_max_len",
                       "rope_low_freq_factor", "rope_high_freq_factor", "rope_beta_fast",
                       "rope_beta_slow", "rope_truncate", "rope_attention_factor")
ATTENTION_IMPLS = ("xla", "blockwise", "splash", "cudnn")
# How a model is run, not what it computes: a checkpoint resumes under other values of these.
EXECUTION_FIELDS = ("remat", "attention", "attention_block")


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
  # Scaling for a context longer than pretraining saw (defaults are transformers').
  rope_scaling: str = "none"  # none | linear | llama3 | yarn
  rope_scaling_factor: float = 1.0  # the new context length over the original one
  rope_original_max_len: int = 0  # the context pretraining used; llama3 and yarn need it
  rope_low_freq_factor: float = 1.0  # llama3: wavelengths over original/this are interpolated
  rope_high_freq_factor: float = 4.0  # llama3: wavelengths under original/this are kept
  rope_beta_fast: float = 32.0  # yarn: dims turning more often than this are kept
  rope_beta_slow: float = 1.0  # yarn: dims turning less often than this are interpolated
  rope_truncate: bool = True  # yarn: the ramp's ends rounded to whole dims (gpt-oss: False)
  rope_attention_factor: float = 0.0  # yarn: the factor on cos, sin; 0 is 0.1 ln(factor) + 1
  norm_eps: float = 1e-5
  qkv_bias: bool = True
  init_std: float = 0.02
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  remat: str = "none"
  attention: str = "xla"  # model/attention.py: xla | blockwise | splash | cudnn
  attention_block: int = 512  # key/value block of `blockwise` (and `splash`'s blocks)

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
    problems += _rope_scaling_problems(self)
    if self.remat not in REMAT_POLICIES:
      problems.append(f"remat={self.remat!r}; expected one of {REMAT_POLICIES}")
    if self.attention not in ATTENTION_IMPLS:
      problems.append(f"attention={self.attention!r}; expected one of {ATTENTION_IMPLS}")
    if self.attention_block < 1:
      problems.append(f"attention_block={self.attention_block}; expected a positive block size")
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
    # A field the saved config predates is that model's default, whatever gin binds now; how
    # the model is run (EXECUTION_FIELDS) follows the bindings of this run where it sets them.
    return cls(**{**field_defaults(), **values, **bound_execution_fields()})


def field_defaults() -> dict:
  """Every field's default as declared, not as gin binds it."""
  return {f.name: f.default for f in dataclasses.fields(ModelConfig)}


def bound_execution_fields() -> dict:
  """The EXECUTION_FIELDS that this run's gin bindings set (attention, remat), by name."""
  bound = {}
  for name in EXECUTION_FIELDS:
    try:
      bound[name] = gin.query_parameter(f"ModelConfig.{name}")
    except ValueError:  # not bound
      pass
  return bound


def _rope_scaling_problems(cfg: ModelConfig) -> list[str]:
  kind = cfg.rope_scaling
  if kind not in ROPE_SCALINGS:
    return [f"rope_scaling={kind!r}; expected one of {ROPE_SCALINGS}"]
  problems = []
  defaults = {field.name: field.default for field in dataclasses.fields(cfg)}
  for name in ROPE_SCALING_FIELDS[1:]:
    if name not in ROPE_SCALING_USES[kind] and getattr(cfg, name) != defaults[name]:
      users = [k for k, uses in ROPE_SCALING_USES.items() if name in uses]
      problems.append(f"{name}={getattr(cfg, name)!r} has no effect with rope_scaling={kind!r}: "
                      f"set rope_scaling to one of {users}, or leave it at {defaults[name]!r}")
  if kind == "none":
    return problems
  if cfg.rope_scaling_factor < 1.0:
    problems.append(f"rope_scaling_factor={cfg.rope_scaling_factor}; expected >= 1, the new "
                    "context over the original (4.0 takes a 4096-token model to 16384)")
  if kind in ("llama3", "yarn"):
    original = cfg.rope_original_max_len
    if original < 1:
      problems.append(f"rope_scaling={kind!r} needs rope_original_max_len: the context length "
                      "the model was pretrained with (e.g. 4096)")
    elif original > cfg.max_len:
      problems.append(f"rope_original_max_len={original} exceeds max_len={cfg.max_len}; max_len "
                      "is the extended context: set it to about rope_original_max_len * "
                      f"rope_scaling_factor = {round(original * cfg.rope_scaling_factor)}")
  if kind == "llama3" and not 0 < cfg.rope_low_freq_factor < cfg.rope_high_freq_factor:
    problems.append(f"rope_low_freq_factor={cfg.rope_low_freq_factor} and rope_high_freq_factor="
                    f"{cfg.rope_high_freq_factor}; expected 0 < low < high (defaults 1 and 4)")
  if kind == "yarn":
    if not 0 < cfg.rope_beta_slow < cfg.rope_beta_fast:
      problems.append(f"rope_beta_slow={cfg.rope_beta_slow} and rope_beta_fast="
                      f"{cfg.rope_beta_fast}; expected 0 < slow < fast (defaults 1 and 32)")
    if cfg.rope_attention_factor < 0:
      problems.append(f"rope_attention_factor={cfg.rope_attention_factor}; expected a positive "
                      "factor, or 0 for YaRN's own 0.1 ln(factor) + 1")
  return problems


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
          f"FFN {cfg.ffn}, vocab {cfg.vocab_size}, RoPE {cfg.rope_style} on {cfg.rope_dim} dims"
          + _describe_rope_scaling(cfg))


def _describe_rope_scaling(cfg: ModelConfig) -> str:
  if cfg.rope_scaling == "none":
    return ""
  origin = f" from {cfg.rope_original_max_len}" if cfg.rope_original_max_len else ""
  return (f", {cfg.rope_scaling} scaling x{cfg.rope_scaling_factor:g}{origin} to "
          f"{cfg.max_len} tokens")
