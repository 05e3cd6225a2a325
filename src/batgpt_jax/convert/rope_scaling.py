"""RoPE scaling in a Hugging Face config.json: our ModelConfig fields <-> transformers' dict.

transformers 5 reads `rope_parameters` ({'rope_type', 'rope_theta', 'factor', ...}); older
versions read `rope_scaling`, which also wins when both are present, as transformers does. Only
the types model/rope.py computes (default, linear, llama3, yarn) are represented; others are
refused by name. The values are the ones transformers' `modeling_rope_utils` reads, defaults and
fall-backs included, so the imported model rotates as transformers rotates it.
"""

import dataclasses
import math

from batgpt_jax.model.config import ROPE_SCALING_FIELDS, ModelConfig

_DEFAULTS = {field.name: field.default for field in dataclasses.fields(ModelConfig)}
UNSCALED = {name: _DEFAULTS[name] for name in ROPE_SCALING_FIELDS}  # plain RoPE
SUPPORTED = ("default", "linear", "llama3", "yarn")


def hf_rope_parameters(cfg: ModelConfig) -> dict:
  """The `rope_parameters` dict of transformers for `cfg`'s RoPE."""
  kind = cfg.rope_scaling
  out = {"rope_type": "default" if kind == "none" else kind, "rope_theta": cfg.rope_base}
  if kind != "none":
    out["factor"] = cfg.rope_scaling_factor
  if kind in ("llama3", "yarn"):
    out["original_max_position_embeddings"] = cfg.rope_original_max_len
  if kind == "llama3":
    out.update(low_freq_factor=cfg.rope_low_freq_factor,
               high_freq_factor=cfg.rope_high_freq_factor)
  if kind == "yarn":
    out.update(beta_fast=cfg.rope_beta_fast, beta_slow=cfg.rope_beta_slow,
               truncate=cfg.rope_truncate)
    if cfg.rope_attention_factor:
      out["attention_factor"] = cfg.rope_attention_factor
  return out


def hf_rope_dict(hf: dict) -> dict:
  """The RoPE dict transformers uses from a config.json (`rope_scaling` first, as it does)."""
  return dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
  return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


def scaling_fields(rope: dict, max_len: int) -> tuple[dict, list[str]]:
  """(our rope_scaling fields, problems) from `hf_rope_dict` of a config.json whose
  max_position_embeddings is `max_len`."""
  kind = rope.get("rope_type", rope.get("type", "default"))
  if kind not in SUPPORTED:
    return dict(UNSCALED), [
        f"rope type {kind!r}: only 'default', 'linear', 'llama3' and 'yarn' RoPE can be "
        "represented (ModelConfig.rope_scaling)"]
  if kind == "default":
    return dict(UNSCALED), []
  # transformers falls back to max_position_embeddings for llama3 and yarn
  original = rope.get("original_max_position_embeddings") or max_len
  factor = rope.get("factor")
  if factor is None and kind == "yarn":  # as transformers: the ratio of the two contexts
    factor = max_len / original
  required = {"factor": factor}
  if kind == "llama3":
    required.update(low_freq_factor=rope.get("low_freq_factor"),
                    high_freq_factor=rope.get("high_freq_factor"))
  missing = [key for key, value in required.items() if value is None]
  if missing:
    return dict(UNSCALED), [f"rope type {kind!r} without {missing}, which transformers requires"]

  fields = {**UNSCALED, "rope_scaling": kind, "rope_scaling_factor": float(factor)}
  if kind in ("llama3", "yarn"):
    fields["rope_original_max_len"] = int(original)
  if kind == "llama3":
    fields.update(rope_low_freq_factor=float(rope["low_freq_factor"]),
                  rope_high_freq_factor=float(rope["high_freq_factor"]))
  if kind == "yarn":
    fields.update(rope_beta_fast=float(rope.get("beta_fast") or 32.0),
                  rope_beta_slow=float(rope.get("beta_slow") or 1.0),
                  rope_truncate=bool(rope.get("truncate", True)))
    attention = rope.get("attention_factor")
    if attention is None and rope.get("mscale") and rope.get("mscale_all_dim"):
      attention = (_yarn_mscale(factor, rope["mscale"])
                   / _yarn_mscale(factor, rope["mscale_all_dim"]))
    if attention is not None and float(attention) <= 0:
      return dict(UNSCALED), [f"yarn attention_factor={attention}: expected a positive factor"]
    if attention is not None and float(attention) != _yarn_mscale(factor):
      fields["rope_attention_factor"] = float(attention)  # else 0: derived from the factor
  return fields, []
