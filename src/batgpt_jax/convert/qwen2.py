"""The Hugging Face `qwen2` layout (Qwen2ForCausalLM): llama's tensors plus q/k/v biases.

Qwen2 always has q/k/v biases (never an o_proj bias), full half-split RoPE, SwiGLU and RMSNorm;
sliding-window attention is not something our model does, so such configs are refused.
"""

from batgpt_jax.convert import llama
from batgpt_jax.convert.layout import LayoutError, Tensor
from batgpt_jax.model.config import ModelConfig

NAME = "qwen2"
ARCHITECTURE = "Qwen2ForCausalLM"


def problems(cfg: ModelConfig) -> list[str]:
  out = llama.rope_problems(cfg, NAME)
  if not cfg.qkv_bias:
    out.append("qkv_bias=False: qwen2 always has q/k/v biases (llama has none)")
  return out


def hf_config(cfg: ModelConfig, dtype: str, special_ids: dict) -> dict:
  return {"architectures": [ARCHITECTURE], "model_type": NAME,
          **llama.common_config(cfg, dtype, special_ids), "use_sliding_window": False,
          "sliding_window": None, "max_window_layers": cfg.n_layers,
          "layer_types": ["full_attention"] * cfg.n_layers}


def model_fields(hf: dict) -> dict:
  fields, problems = llama.common_fields(hf, NAME)
  if hf.get("use_sliding_window"):
    problems.append("use_sliding_window=True: our attention is full causal attention")
  other = sorted({t for t in hf.get("layer_types") or [] if t != "full_attention"})
  if other and not problems:
    problems.append(f"layer_types {other}: our attention is full causal attention")
  if problems:
    raise LayoutError("This qwen2 model cannot be represented exactly:\n  - "
                      + "\n  - ".join(problems))
  return {**fields, "qkv_bias": True}


def tensors(cfg: ModelConfig) -> list[Tensor]:
  return llama.llama_family_tensors(cfg, qkv_bias=True)
