"""The Hugging Face `llama` layout (LlamaForCausalLM), and the tensor table qwen2 shares.

Llama rotates whole heads in pairs (i, i + d/2) (our 'half_split', rope_fraction 1.0) and has no
biases. transformers requires hidden_size to be a multiple of num_attention_heads.
"""

from batgpt_jax.convert import rope_scaling
from batgpt_jax.convert.layout import LayoutError, Tensor
from batgpt_jax.model.config import ModelConfig

NAME = "llama"
ARCHITECTURE = "LlamaForCausalLM"


def rope_problems(cfg: ModelConfig, name: str) -> list[str]:
  problems = []
  if cfg.rope_style != "half_split":
    problems.append(f"rope_style={cfg.rope_style!r} rotates pairs (2i, 2i+1); {name} rotates "
                    "pairs (i, i + head_dim/2), our 'half_split'")
  if cfg.rope_fraction != 1.0:
    problems.append(f"rope_fraction={cfg.rope_fraction} rotates part of each head; {name} "
                    "rotates all of it (rope_fraction 1.0)")
  return problems


def problems(cfg: ModelConfig) -> list[str]:
  out = rope_problems(cfg, NAME)
  if cfg.qkv_bias:
    out.append("qkv_bias=True: llama has no q/k/v biases (qwen2 has them)")
  if cfg.hidden % cfg.n_heads:
    out.append(f"hidden={cfg.hidden} is not a multiple of n_heads={cfg.n_heads}, which "
               "transformers' LlamaConfig refuses")
  return out


def common_config(cfg: ModelConfig, dtype: str, special_ids: dict) -> dict:
  """The config.json fields that llama and qwen2 share."""
  rope = rope_scaling.hf_rope_parameters(cfg)
  # transformers before 5 reads a scaling from `rope_scaling` only
  older = {"rope_scaling": dict(rope)} if cfg.rope_scaling != "none" else {}
  return {
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden, "intermediate_size": cfg.ffn,
      "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
      "max_position_embeddings": cfg.max_len, "initializer_range": cfg.init_std,
      "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_base,
      "rope_parameters": rope, **older,
      "tie_word_embeddings": False, "attention_dropout": 0.0, "use_cache": True,
      "dtype": dtype, "torch_dtype": dtype, **special_ids,
  }


def hf_config(cfg: ModelConfig, dtype: str, special_ids: dict) -> dict:
  return {"architectures": [ARCHITECTURE], "model_type": NAME,
          **common_config(cfg, dtype, special_ids), "attention_bias": False, "mlp_bias": False,
          "pretraining_tp": 1}


def _get(hf: dict, key: str, default=None):
  if key in hf and hf[key] is not None:
    return hf[key]
  if default is None:
    raise LayoutError(f"config.json has no {key!r}, which the layout needs.")
  return default


def common_fields(hf: dict, name: str) -> tuple[dict, list[str]]:
  """(ModelConfig fields, problems) from a llama-family config.json."""
  problems = []
  if _get(hf, "hidden_act", "silu") != "silu":
    problems.append(f"hidden_act={hf['hidden_act']!r}: our MLP is SwiGLU (silu)")
  rope = rope_scaling.hf_rope_dict(hf)
  max_len = _get(hf, "max_position_embeddings", 2048)
  scaling, scaling_problems = rope_scaling.scaling_fields(rope, max_len)
  problems += scaling_problems
  fraction = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
  if fraction not in (None, 1.0):
    problems.append(f"partial_rotary_factor={fraction}: {name} with partial RoPE rotates the "
                    "first half-split features, which none of our rope styles does")
  heads = _get(hf, "num_attention_heads")
  hidden = _get(hf, "hidden_size")
  fields = {
      "vocab_size": _get(hf, "vocab_size"), "hidden": hidden,
      "n_layers": _get(hf, "num_hidden_layers"), "n_heads": heads,
      "n_kv_heads": _get(hf, "num_key_value_heads", heads),
      "head_dim": _get(hf, "head_dim", hidden // heads), "ffn": _get(hf, "intermediate_size"),
      "max_len": max_len, "rope_fraction": 1.0,
      "rope_style": "half_split",
      "rope_base": float(rope.get("rope_theta") or _get(hf, "rope_theta", 10000.0)), **scaling,
      "norm_eps": float(_get(hf, "rms_norm_eps", 1e-6)),
      "init_std": float(_get(hf, "initializer_range", 0.02)),
  }
  return fields, problems


def model_fields(hf: dict) -> dict:
  fields, problems = common_fields(hf, NAME)
  if hf.get("attention_bias"):
    problems.append("attention_bias=True: llama then also has an o_proj bias, which our "
                    "attention has not")
  if hf.get("mlp_bias"):
    problems.append("mlp_bias=True: our MLP has no biases")
  if problems:
    raise LayoutError("This llama model cannot be represented exactly:\n  - "
                      + "\n  - ".join(problems))
  return {**fields, "qkv_bias": False}


def _qkv_weight(hidden: int, heads: int, head_dim: int) -> tuple:
  # ours [hidden, heads, head_dim] <-> torch Linear weight [heads * head_dim, hidden]
  return (lambda w: w.reshape(hidden, heads * head_dim).T,
          lambda w: (w.T.reshape(hidden, heads, head_dim),))


def _bias(heads: int, head_dim: int) -> tuple:
  return lambda b: b.reshape(heads * head_dim), lambda b: (b.reshape(heads, head_dim),)


def _transposed() -> tuple:
  return lambda w: w.T, lambda w: (w.T,)


def _same() -> tuple:
  return lambda w: w, lambda w: (w,)


def llama_family_tensors(cfg: ModelConfig, qkv_bias: bool) -> list[Tensor]:
  d, h, kv, hd = cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  layer = "model.layers.{i}."
  out = [Tensor("model.embed_tokens.weight", ("embed/embedding",), *_same()),
         Tensor(layer + "input_layernorm.weight", ("blocks/attn_norm/scale",), *_same())]
  for proj, ours, heads in (("q", "q", h), ("k", "k", kv), ("v", "v", kv)):
    out.append(Tensor(layer + f"self_attn.{proj}_proj.weight", (f"blocks/attn/{ours}",),
                      *_qkv_weight(d, heads, hd)))
    if qkv_bias:
      out.append(Tensor(layer + f"self_attn.{proj}_proj.bias", (f"blocks/attn/{ours}_bias",),
                        *_bias(heads, hd)))
  out += [
      Tensor(layer + "self_attn.o_proj.weight", ("blocks/attn/o",),
             lambda w: w.reshape(h * hd, d).T, lambda w: (w.T.reshape(h, hd, d),)),
      Tensor(layer + "post_attention_layernorm.weight", ("blocks/mlp_norm/scale",), *_same()),
      Tensor(layer + "mlp.gate_proj.weight", ("blocks/mlp/gate",), *_transposed()),
      Tensor(layer + "mlp.up_proj.weight", ("blocks/mlp/up",), *_transposed()),
      Tensor(layer + "mlp.down_proj.weight", ("blocks/mlp/down",), *_transposed()),
      Tensor("model.norm.weight", ("final_norm/scale",), *_same()),
      Tensor("lm_head.weight", ("lm_head",), *_transposed()),
  ]
  return out


def tensors(cfg: ModelConfig) -> list[Tensor]:
  return llama_family_tensors(cfg, qkv_bias=False)
