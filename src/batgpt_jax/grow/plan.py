"""What a growth does: width factors, the layer map and the noise, all checked before any work.

`plan_growth(small, big)` compares two `ModelConfig`s and either returns a `GrowthPlan` or raises
one `GrowthError` that lists every problem with the supported sizes spelled out.
"""

import dataclasses

from batgpt_jax.grow.modes import DEPTH_MODES
from batgpt_jax.model.config import ROPE_SCALING_FIELDS, ModelConfig

# Fields the grown model must share with the source: they shape the function, not its size.
SHARED_FIELDS = ("vocab_size", "head_dim", "rope_fraction", "rope_style", "rope_base", "norm_eps",
                 "qkv_bias", *ROPE_SCALING_FIELDS)


class GrowthError(ValueError):
  """The target cannot be reached from the source by a supported growth, or the input is bad."""


@dataclasses.dataclass(frozen=True)
class WidthPlan:
  """How many copies of each unit the grown model holds, by logical axis name."""

  hidden: int = 1    # n: copies of each residual-stream feature ('embed')
  heads: int = 1     # copies of each query head ('heads')
  kv_heads: int = 1  # copies of each key/value head; 1 when a single MQA head stays shared
  ffn: int = 1       # m: copies of each SwiGLU unit ('mlp')

  def copies(self, axis: str | None) -> int:
    return {"embed": self.hidden, "heads": self.heads, "kv_heads": self.kv_heads,
            "mlp": self.ffn}.get(axis, 1)


@dataclasses.dataclass(frozen=True)
class DepthPlan:
  """For each layer of the grown model: the source layer it copies, and whether it is inserted
  as an identity block (its attention `o` and MLP `down` zeroed, so it adds nothing)."""

  mode: str
  sources: tuple[int, ...]
  identity: tuple[bool, ...]

  @property
  def function_preserving(self) -> bool:
    return self.mode != "stack"


@dataclasses.dataclass(frozen=True)
class GrowthPlan:
  width: WidthPlan
  depth: DepthPlan
  noise_snr_db: float | None = None  # paired symmetry-breaking noise; None for none
  seed: int = 0

  @property
  def function_preserving(self) -> bool:
    return self.depth.function_preserving

  def describe(self) -> str:
    w, d = self.width, self.depth
    new = sum(d.identity)
    depth = (f"{len(d.sources) // max(1, len(set(d.sources)))}x stacked copies (G_stack, NOT "
             "function-preserving)" if d.mode == "stack" else
             f"{new} identity block(s) inserted ({d.mode})")
    noise = "no noise" if self.noise_snr_db is None else f"paired noise at {self.noise_snr_db} dB"
    return (f"width: hidden x{w.hidden}, heads x{w.heads}, KV heads x{w.kv_heads}, FFN x{w.ffn}; "
            f"depth: {len(set(d.sources))} -> {len(d.sources)} layers, {depth}; {noise}")


def _multiple(field: str, small: int, big: int, problems: list[str]) -> int:
  if big >= small and big % small == 0:
    return big // small
  problems.append(
      f"{field}: {small} -> {big} is not a whole multiple; width growth copies every unit a whole "
      f"number of times, so {field} must be k*{small} for an integer k >= 1 "
      f"({', '.join(str(k * small) for k in (1, 2, 3, 4))}, ...)")
  return 1


def plan_width(small: ModelConfig, big: ModelConfig, problems: list[str]) -> WidthPlan:
  for field in SHARED_FIELDS:
    if getattr(small, field) != getattr(big, field):
      problems.append(f"{field}: the source has {getattr(small, field)!r} and the target "
                      f"{getattr(big, field)!r}; growth keeps it, set it to "
                      f"{getattr(small, field)!r} in the target gin")
  hidden = _multiple("hidden", small.hidden, big.hidden, problems)
  heads = _multiple("n_heads", small.n_heads, big.n_heads, problems)
  ffn = _multiple("ffn", small.ffn, big.ffn, problems)
  if small.n_kv_heads == big.n_kv_heads == 1:
    kv_heads = 1  # MQA stays MQA: every query head copy keeps using the one shared KV head
  elif big.n_kv_heads == heads * small.n_kv_heads:
    kv_heads = heads
  else:
    kv_heads = 1
    mqa = " (or 1, to keep a single shared MQA head)" if small.n_kv_heads == 1 else ""
    problems.append(
        f"n_kv_heads: {small.n_kv_heads} -> {big.n_kv_heads}; with n_heads grown x{heads} the KV "
        f"heads must grow by the same factor, to {heads * small.n_kv_heads}{mqa}, so each query "
        f"head copy keeps its key/value head (grouped-query attention: query head h uses KV head "
        f"h // (n_heads / n_kv_heads))")
  return WidthPlan(hidden=hidden, heads=heads, kv_heads=kv_heads, ffn=ffn)


def plan_depth(small_layers: int, big_layers: int, mode: str, problems: list[str]) -> DepthPlan:
  if mode not in DEPTH_MODES:
    problems.append(f"depth mode {mode!r}; expected one of {DEPTH_MODES}")
    return DepthPlan(mode, tuple(range(small_layers)), (False,) * small_layers)
  if big_layers < small_layers:
    problems.append(f"n_layers: {small_layers} -> {big_layers}; growth never removes layers, the "
                    f"target needs n_layers >= {small_layers}")
    return DepthPlan(mode, tuple(range(small_layers)), (False,) * small_layers)
  if mode == "stack":
    if big_layers % small_layers:
      problems.append(f"n_layers: {small_layers} -> {big_layers}; the stack mode copies the whole "
                      f"stack g times, so n_layers must be g*{small_layers} "
                      f"({', '.join(str(g * small_layers) for g in (1, 2, 3, 4))}, ...)")
    sources = tuple(layer % small_layers for layer in range(big_layers))
    return DepthPlan(mode, sources, (False,) * len(sources))
  new = big_layers - small_layers
  layers: list[tuple[int, bool]] = [(i, False) for i in range(small_layers)]
  if mode == "interleave":  # spread the new blocks evenly, each after the old block it copies
    layers = []
    for i in range(small_layers):
      after = (i + 1) * new // small_layers - i * new // small_layers
      layers += [(i, False)] + [(i, True)] * after
  else:
    layers += [(small_layers - 1, True)] * new
  return DepthPlan(mode, tuple(s for s, _ in layers), tuple(n for _, n in layers))


def plan_growth(small: ModelConfig, big: ModelConfig, *, depth_mode: str = "interleave",
                noise_snr_db: float | None = None, seed: int = 0) -> GrowthPlan:
  """The growth from `small` to `big`, or a `GrowthError` listing everything that prevents it."""
  problems: list[str] = []
  width = plan_width(small, big, problems)
  depth = plan_depth(small.n_layers, big.n_layers, depth_mode, problems)
  if problems:
    raise GrowthError(
        f"Cannot grow the source model ({small.n_layers} layers, hidden {small.hidden}, "
        f"{small.n_heads} heads / {small.n_kv_heads} KV, FFN {small.ffn}) into the target "
        f"({big.n_layers} layers, hidden {big.hidden}, {big.n_heads} heads / {big.n_kv_heads} KV, "
        f"FFN {big.ffn}):\n  - " + "\n  - ".join(problems))
  return GrowthPlan(width=width, depth=depth, noise_snr_db=noise_snr_db, seed=seed)
