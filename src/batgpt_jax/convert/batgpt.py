"""The BatGPT-15B-sirius layout (`model_type` 'batgpt', BatGPTForCausalLM with remote code).

Tensor names and layout follow the released modeling_batgpt.py / configuration_batgpt.py:
separate query_proj / key_proj / value_proj (with biases when qkv_bias), an output `dense`
without bias, and SwiGLU fused as `dense_h_to_4h` = [gate; up] along the output rows (the first
half goes through silu). RoPE rotates the first half of each head in interleaved pairs
(2i, 2i+1) with base 10000, fixed in that code: our interleaved / rope_fraction 0.5 / base
10000. head_dim is hidden_size / n_head there, and `num_heads_per_kv` is the number of KV heads.
The export writes config.json with the `auto_map` of the released model; loading it in
transformers needs those two Python files next to the weights (trust_remote_code=True).
"""

from batgpt_jax.convert import rope_scaling
from batgpt_jax.convert.layout import LayoutError, Tensor, concat
from batgpt_jax.model.config import ModelConfig

NAME = "batgpt"
ARCHITECTURE = "BatGPTForCausalLM"
ROPE_BASE = 10000.0  # hard-coded in modeling_batgpt.get_rotary_tensor


def problems(cfg: ModelConfig) -> list[str]:
  out = []
  if cfg.rope_style != "interleaved":
    out.append(f"rope_style={cfg.rope_style!r}: BatGPT rotates interleaved pairs (2i, 2i+1)")
  if cfg.rope_fraction != 0.5:
    out.append(f"rope_fraction={cfg.rope_fraction}: BatGPT rotates half of each head (0.5)")
  if cfg.rope_base != ROPE_BASE:
    out.append(f"rope_base={cfg.rope_base}: BatGPT's RoPE base is fixed at {ROPE_BASE:g}")
  if cfg.rope_scaling != "none":
    out.append(f"rope_scaling={cfg.rope_scaling!r}: BatGPT's released modeling_batgpt.py has "
               "no RoPE scaling, so only an unscaled model (rope_scaling='none') exports as "
               "batgpt")
  if cfg.hidden != cfg.n_heads * cfg.head_dim:
    out.append(f"hidden={cfg.hidden} != n_heads * head_dim = {cfg.n_heads * cfg.head_dim}: "
               "BatGPT derives head_dim as hidden_size / n_head")
  return out


def hf_config(cfg: ModelConfig, dtype: str, special_ids: dict) -> dict:
  return {
      "architectures": [ARCHITECTURE], "model_type": NAME,
      "auto_map": {"AutoConfig": "configuration_batgpt.BatGPTConfig",
                   "AutoModel": "modeling_batgpt.BatGPTForCausalLM",
                   "AutoModelForCausalLM": "modeling_batgpt.BatGPTForCausalLM"},
      "vocab_size": cfg.vocab_size, "emb_dim": cfg.hidden, "hidden_size": cfg.hidden,
      "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "layer_norm_epsilon": cfg.norm_eps,
      "use_multi_query_attn": cfg.n_kv_heads != cfg.n_heads,
      "num_heads_per_kv": cfg.n_kv_heads, "qkv_bias": cfg.qkv_bias,
      "use_native_attn_impl": True, "mlp_activation": "swiglu", "hidden_dropout": 0.0,
      "ffn_hidden_size": cfg.ffn, "prefix_size": None, "prefix_proj": False,
      "max_seq_len": cfg.max_len, "pos_emb_impl": "rope", "use_emb_factorization": False,
      "empty_init": True, "use_cache": True, "dtype": dtype, "torch_dtype": dtype,
      **special_ids,
  }


def model_fields(hf: dict) -> dict:
  problems = []
  hidden, heads = hf.get("hidden_size"), hf.get("n_head")
  missing = [k for k in ("vocab_size", "hidden_size", "n_layer", "n_head", "ffn_hidden_size")
             if hf.get(k) is None]
  if missing:
    raise LayoutError(f"config.json lacks {missing}, which the batgpt layout needs.")
  if hf.get("emb_dim", hidden) != hidden or hf.get("use_emb_factorization"):
    problems.append(f"emb_dim={hf.get('emb_dim')} with an embedding factorization: our "
                    f"embedding is [vocab, hidden={hidden}]")
  if hf.get("pos_emb_impl", "rope") != "rope":
    problems.append(f"pos_emb_impl={hf['pos_emb_impl']!r}: our model uses RoPE")
  if hf.get("mlp_activation", "swiglu") != "swiglu":
    problems.append(f"mlp_activation={hf['mlp_activation']!r}: only the fused 'swiglu' MLP "
                    "is supported")
  if hf.get("prefix_size") is not None:
    problems.append(f"prefix_size={hf['prefix_size']}: prefix-tuning encoders are not supported")
  if hidden % heads:
    problems.append(f"hidden_size={hidden} is not a multiple of n_head={heads}")
  if problems:
    raise LayoutError("This batgpt model cannot be represented exactly:\n  - "
                      + "\n  - ".join(problems))
  kv = hf.get("num_heads_per_kv", heads) if hf.get("use_multi_query_attn", True) else heads
  return {
      "vocab_size": hf["vocab_size"], "hidden": hidden, "n_layers": hf["n_layer"],
      "n_heads": heads, "n_kv_heads": kv, "head_dim": hidden // heads,
      "ffn": hf["ffn_hidden_size"], "max_len": hf.get("max_seq_len", 32768),
      "rope_fraction": 0.5, "rope_style": "interleaved", "rope_base": ROPE_BASE,
      **rope_scaling.UNSCALED,
      "norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
      "qkv_bias": bool(hf.get("qkv_bias", True)),
  }


def tensors(cfg: ModelConfig) -> list[Tensor]:
  d, h, kv, hd, ffn = cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn
  layer = "model.encoder.layers.{i}."
  same = (lambda w: w, lambda w: (w,))
  out = [Tensor("model.word_embeddings.weight", ("embed/embedding",), *same),
         Tensor(layer + "input_layernorm.weight", ("blocks/attn_norm/scale",), *same)]
  for proj, ours, heads in (("query", "q", h), ("key", "k", kv), ("value", "v", kv)):
    out.append(Tensor(
        layer + f"self_attention.{proj}_proj.weight", (f"blocks/attn/{ours}",),
        lambda w, n=heads: w.reshape(d, n * hd).T,
        lambda w, n=heads: (w.T.reshape(d, n, hd),)))
    if cfg.qkv_bias:
      out.append(Tensor(
          layer + f"self_attention.{proj}_proj.bias", (f"blocks/attn/{ours}_bias",),
          lambda b, n=heads: b.reshape(n * hd), lambda b, n=heads: (b.reshape(n, hd),)))
  out += [
      Tensor(layer + "self_attention.dense.weight", ("blocks/attn/o",),
             lambda w: w.reshape(h * hd, d).T, lambda w: (w.T.reshape(h, hd, d),)),
      Tensor(layer + "post_attention_layernorm.weight", ("blocks/mlp_norm/scale",), *same),
      # [gate; up] as rows of one Linear: swiglu chunks the output and applies silu to the first
      Tensor(layer + "mlp.dense_h_to_4h.weight", ("blocks/mlp/gate", "blocks/mlp/up"),
             lambda gate, up: concat(gate.T, up.T), lambda w: (w[:ffn].T, w[ffn:].T)),
      Tensor(layer + "mlp.dense_4h_to_h.weight", ("blocks/mlp/down",),
             lambda w: w.T, lambda w: (w.T,)),
      Tensor("model.encoder.ln_f.weight", ("final_norm/scale",), *same),
      Tensor("lm_head.weight", ("lm_head",), lambda w: w.T, lambda w: (w.T,)),
  ]
  return out
