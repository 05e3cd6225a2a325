"""Logit and greedy-generation parity with transformers' Qwen2 and Llama, both directions."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# pylint: disable=wrong-import-position
from batgpt_jax import checkpoints
from batgpt_jax.convert import hf_to_orbax, orbax_to_hf, rope_scaling
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.sample import engine
from batgpt_jax.train import state as train_state

SIZES = dict(vocab_size=160, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
TOKENS = np.array([[5, 17, 99, 3, 42, 8, 150, 77, 23, 64, 1, 12],
                   [9, 33, 120, 4, 4, 71, 2, 88, 140, 10, 55, 6]], np.int32)
NEW_TOKENS = 32


def _randomize_torch(model, seed: int) -> None:
  """Large enough weights (norm gains and biases too) that logits differ in the first digits."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
      p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.15 * noise)


def _hf_model(kind: str, directory, seed: int = 0, tied: bool = False, rope: dict | None = None,
              **sizes):
  config_cls, model_cls = {
      "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
      "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM)}[kind]
  config = config_cls(**{**SIZES, **sizes}, rms_norm_eps=1e-6, tie_word_embeddings=tied,
                      rope_parameters={"rope_theta": 10000.0, **(rope or {"rope_type": "default"})},
                      bos_token_id=None, eos_token_id=None, pad_token_id=0)
  torch.manual_seed(seed)
  model = model_cls(config).eval()
  _randomize_torch(model, seed)
  model.save_pretrained(directory)
  return model


def _torch_logits(model, tokens) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens, dtype=torch.long)).logits.float().numpy()


def _our_logits(cfg: ModelConfig, params, tokens) -> np.ndarray:
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  return np.asarray(transformer.apply(cfg, params, jnp.asarray(tokens), positions,
                                      jnp.ones_like(positions)))


def _torch_greedy(model, prompt) -> list[int]:
  with torch.no_grad():
    out = model.generate(torch.tensor([prompt], dtype=torch.long), max_new_tokens=NEW_TOKENS,
                         do_sample=False, eos_token_id=None, pad_token_id=0)
  return out[0, len(prompt):].tolist()


def _our_greedy(cfg, params, prompts) -> list[list[int]]:
  sampling = engine.SamplingConfig(max_new_tokens=NEW_TOKENS, stop_ids=())
  return engine.generate_ids(cfg, params, prompts, sampling)


@pytest.mark.parametrize("kind,tied", [("qwen2", False), ("llama", False), ("llama", True)])
def test_import_matches_transformers(kind, tied, tmp_path):
  model = _hf_model(kind, tmp_path / "hf", tied=tied)
  imported = hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "run"), progress=False)
  cfg = imported.model_cfg
  assert imported.layout == kind
  assert (cfg.rope_style, cfg.rope_fraction, cfg.qkv_bias) == ("half_split", 1.0, kind == "qwen2")
  checkpoints_dir, step = checkpoints.find_step(str(tmp_path / "run"))
  assert step == 0
  params = checkpoints.read_params(checkpoints_dir, step)

  ours, theirs = _our_logits(cfg, params, TOKENS), _torch_logits(model, TOKENS)
  assert np.abs(theirs).max() > 1.0  # the comparison is not between two near-zero tensors
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)

  prompts = [TOKENS[0, :5].tolist(), TOKENS[1, :9].tolist()]  # batched, left-padded
  assert _our_greedy(cfg, params, prompts) == [_torch_greedy(model, p) for p in prompts]


@pytest.mark.parametrize("kind,qkv_bias", [("qwen2", True), ("llama", False)])
def test_export_opens_in_transformers(kind, qkv_bias, tmp_path):
  cfg = ModelConfig(vocab_size=160, hidden=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                    ffn=48, max_len=128, rope_fraction=1.0, rope_style="half_split",
                    qkv_bias=qkv_bias)
  params = transformer.init_params(dataclasses.replace(cfg, init_std=0.15), seed=3)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(4), len(leaves))
  params = treedef.unflatten([x + 0.1 * jax.random.normal(k, x.shape) for x, k in
                              zip(leaves, keys)])  # gains around 1, non-zero biases
  checkpoints.write_run_dir(str(tmp_path / "run"), cfg, params, train_state.OptimizerConfig())
  result = orbax_to_hf.export(str(tmp_path / "run"), str(tmp_path / "hf"), progress=False)
  assert result.layout == kind

  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"),
                                                            dtype=torch.float32).eval()
  assert type(model).__name__ == {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[kind]
  ours, theirs = _our_logits(cfg, params, TOKENS), _torch_logits(model, TOKENS)
  assert np.abs(theirs).max() > 1.0
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)

  prompt = TOKENS[1, :7].tolist()
  assert _torch_greedy(model, prompt) == _our_greedy(cfg, params, [prompt])[0]


# --- RoPE scaling: positions past the original context, where the scaling changes the model ---

ORIGINAL = 32  # the pretraining context the scalings extend, 4x, to max_position_embeddings
LONG_TOKENS = np.random.default_rng(7).integers(1, 160, size=(2, 96)).astype(np.int32)
SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 4.0, "original_max_position_embeddings": ORIGINAL,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL},
}
# head_dim 16: 8 frequencies, wavelengths 6 to 3500, on both sides of the scalings' bands
SCALED_SIZES = dict(head_dim=16, max_position_embeddings=4 * ORIGINAL)


def _assert_scaling_matters(cfg, params, theirs) -> None:
  """Plain RoPE is far from transformers' scaled model past the original context."""
  plain = _our_logits(dataclasses.replace(cfg, **rope_scaling.UNSCALED), params, LONG_TOKENS)
  assert np.abs(plain - theirs)[:, ORIGINAL:].max() > 0.5


@pytest.mark.parametrize("scaling", sorted(SCALINGS))
def test_scaled_rope_import_matches_transformers(scaling, tmp_path):
  model = _hf_model("llama", tmp_path / "hf", rope=SCALINGS[scaling], **SCALED_SIZES)
  imported = hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "run"), progress=False)
  cfg = imported.model_cfg
  assert (cfg.rope_scaling, cfg.rope_scaling_factor, cfg.max_len) == (scaling, 4.0, 4 * ORIGINAL)
  assert cfg.rope_original_max_len == (0 if scaling == "linear" else ORIGINAL)
  params = checkpoints.read_params(*checkpoints.find_step(str(tmp_path / "run")))

  ours, theirs = _our_logits(cfg, params, LONG_TOKENS), _torch_logits(model, LONG_TOKENS)
  assert np.abs(theirs).max() > 1.0
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
  _assert_scaling_matters(cfg, params, theirs)
  if scaling == "yarn":  # the decode path (KV cache, left padding) past the original context
    prompts = [LONG_TOKENS[0, :40].tolist(), LONG_TOKENS[1, :51].tolist()]
    assert _our_greedy(cfg, params, prompts) == [_torch_greedy(model, p) for p in prompts]


@pytest.mark.parametrize("fields", [
    dict(rope_scaling="llama3", rope_scaling_factor=4.0, rope_original_max_len=ORIGINAL,
         rope_low_freq_factor=2.0, rope_high_freq_factor=8.0),
    dict(rope_scaling="yarn", rope_scaling_factor=4.0, rope_original_max_len=ORIGINAL,
         rope_truncate=False, rope_beta_fast=16.0, rope_attention_factor=1.2),
], ids=["llama3", "yarn"])
def test_scaled_rope_export_opens_in_transformers(fields, tmp_path):
  cfg = ModelConfig(vocab_size=160, hidden=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                    ffn=48, max_len=4 * ORIGINAL, rope_fraction=1.0, rope_style="half_split",
                    qkv_bias=False, **fields)
  params = transformer.init_params(dataclasses.replace(cfg, init_std=0.15), seed=5)
  checkpoints.write_run_dir(str(tmp_path / "run"), cfg, params, train_state.OptimizerConfig())
  assert orbax_to_hf.export(str(tmp_path / "run"), str(tmp_path / "hf"),
                            progress=False).layout == "llama"

  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"),
                                                            dtype=torch.float32).eval()
  assert model.config.rope_parameters["rope_type"] == cfg.rope_scaling
  ours, theirs = _our_logits(cfg, params, LONG_TOKENS), _torch_logits(model, LONG_TOKENS)
  assert np.abs(theirs).max() > 1.0
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
  _assert_scaling_matters(cfg, params, theirs)
