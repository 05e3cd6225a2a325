"""RoPE: the rotation itself, and the scaled frequencies against transformers' own functions."""

import dataclasses

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax import checkpoints
from batgpt_jax.model import rope
from batgpt_jax.model.config import ROPE_SCALING_FIELDS, ModelConfig, describe


def _rope(x, positions, rope_dim, style, base=10000.0):
  cfg = ModelConfig(head_dim=x.shape[-1], rope_fraction=rope_dim / x.shape[-1], rope_base=base)
  cos, sin = rope.angles(positions, cfg)
  return rope.apply_rope(x, cos, sin, rope_dim, style)


def test_interleaved_rotates_adjacent_pairs_by_position_times_frequency():
  head_dim, rope_dim = 8, 4
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 1, head_dim)), jnp.float32)
  positions = jnp.arange(3)[None]
  out = np.asarray(_rope(x, positions, rope_dim, "interleaved"))
  x = np.asarray(x)
  for p in range(3):
    for i in range(rope_dim // 2):
      theta = p * 10000.0 ** (-2 * i / rope_dim)
      a, b = x[0, p, 0, 2 * i], x[0, p, 0, 2 * i + 1]
      np.testing.assert_allclose(out[0, p, 0, 2 * i], a * np.cos(theta) - b * np.sin(theta),
                                 atol=1e-5)
      np.testing.assert_allclose(out[0, p, 0, 2 * i + 1], a * np.sin(theta) + b * np.cos(theta),
                                 atol=1e-5)
  # The unrotated half (BatGPT rotates half of each head) passes through untouched.
  np.testing.assert_array_equal(out[..., rope_dim:], x[..., rope_dim:])


def test_half_split_is_interleaved_with_permuted_features():
  rope_dim = 8
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 3, rope_dim)), jnp.float32)
  positions = jnp.tile(jnp.arange(5), (2, 1))
  # Feature i of the half-split layout is pair member (i mod d/2) of interleaved pair i // ...
  perm = np.concatenate([np.arange(0, rope_dim, 2), np.arange(1, rope_dim, 2)])
  half = _rope(x[..., perm], positions, rope_dim, "half_split")
  inter = _rope(x, positions, rope_dim, "interleaved")
  np.testing.assert_allclose(np.asarray(half), np.asarray(inter)[..., perm], atol=1e-6)


@pytest.mark.parametrize("style", ["interleaved", "half_split"])
def test_rope_scores_depend_only_on_relative_position(style):
  rng = np.random.default_rng(2)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  def score(pq, pk):
    rq = _rope(q, jnp.array([[pq]]), 16, style)
    rk = _rope(k, jnp.array([[pk]]), 16, style)
    return float(jnp.sum(rq * rk))
  assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
  assert score(7, 3) != pytest.approx(score(7, 5), abs=1e-3)


# --- the frequencies ------------------------------------------------------------------------

def _old_angles(positions, rope_dim: int, base: float):
  """layers.rope_angles before scaling existed, verbatim."""
  inv_freq = 1.0 / (base ** (jnp.arange(0, rope_dim, 2, dtype=jnp.float32) / rope_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.cos(angles), jnp.sin(angles)


@pytest.mark.parametrize("head_dim,fraction,base", [(16, 1.0, 10000.0), (64, 0.5, 10000.0),
                                                    (128, 0.5, 10000.0), (128, 1.0, 500000.0)])
def test_unscaled_rope_is_the_old_formula_exactly(head_dim, fraction, base):
  cfg = ModelConfig(head_dim=head_dim, rope_fraction=fraction, rope_base=base)
  d = cfg.rope_dim
  want = (1.0 / base ** (np.arange(0, d, 2) / d)).astype(np.float32)
  np.testing.assert_array_equal(rope.inv_freq(cfg), want)
  assert rope.attention_factor(cfg) == 1.0
  # what the jitted model computed before: bit for bit (the shipped sizes rotate 2^k dims)
  positions = jnp.arange(0, 40000, 7)[None]
  old = jax.jit(lambda p: _old_angles(p, d, base))(positions)
  new = jax.jit(lambda p: rope.angles(p, cfg))(positions)
  for a, b in zip(old, new):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_factor_one_scalings_are_plain_rope():
  cfg = ModelConfig(head_dim=64, rope_fraction=0.5, max_len=4096)
  for scaled in (dataclasses.replace(cfg, rope_scaling="linear"),
                 dataclasses.replace(cfg, rope_scaling="yarn", rope_original_max_len=4096)):
    np.testing.assert_array_equal(rope.inv_freq(scaled), rope.inv_freq(cfg))
    assert rope.attention_factor(scaled) == 1.0


# Each case: transformers' rope_parameters and the same scaling in our fields. head_dim 64 with
# a rotated half (HF's partial_rotary_factor 0.5, our rope_fraction) -> 16 frequencies.
CASES = {
    "default": ({"rope_type": "linear", "factor": 1.0}, {}),  # HF's default ignores the fraction
    "linear": ({"rope_type": "linear", "factor": 4.0},
               dict(rope_scaling="linear", rope_scaling_factor=4.0)),
    "llama3": ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 2048,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "rope_theta": 500000.0},
               dict(rope_scaling="llama3", rope_scaling_factor=8.0, rope_original_max_len=2048,
                    rope_base=500000.0)),
    "llama3_factors": ({"rope_type": "llama3", "factor": 4.0, "rope_theta": 10000.0,
                        "original_max_position_embeddings": 4096, "low_freq_factor": 2.0,
                        "high_freq_factor": 8.0},
                       dict(rope_scaling="llama3", rope_scaling_factor=4.0,
                            rope_original_max_len=4096, rope_low_freq_factor=2.0,
                            rope_high_freq_factor=8.0)),
    "yarn": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
             dict(rope_scaling="yarn", rope_scaling_factor=4.0, rope_original_max_len=4096)),
    "yarn_untruncated": ({"rope_type": "yarn", "factor": 8.0, "truncate": False,
                          "original_max_position_embeddings": 2048, "beta_fast": 16.0,
                          "beta_slow": 2.0},
                         dict(rope_scaling="yarn", rope_scaling_factor=8.0,
                              rope_original_max_len=2048, rope_truncate=False,
                              rope_beta_fast=16.0, rope_beta_slow=2.0)),
    "yarn_attention_factor": ({"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.3,
                               "original_max_position_embeddings": 4096},
                              dict(rope_scaling="yarn", rope_scaling_factor=4.0,
                                   rope_original_max_len=4096, rope_attention_factor=1.3)),
}


def _transformers_rope(hf_params: dict):
  """(inv_freq, attention factor, rotary embedding module) of transformers for these params."""
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("torch")
  # pylint: disable=import-outside-toplevel
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  from transformers.models.llama import modeling_llama
  config = transformers.LlamaConfig(
      hidden_size=256, num_attention_heads=4, head_dim=64, partial_rotary_factor=0.5,
      max_position_embeddings=16384, rope_parameters={"rope_theta": 10000.0, **hf_params})
  inv_freq, factor = ROPE_INIT_FUNCTIONS[hf_params["rope_type"]](config, "cpu")
  return inv_freq.numpy(), factor, modeling_llama.LlamaRotaryEmbedding(config)


def _cfg(fields: dict) -> ModelConfig:
  return ModelConfig(hidden=256, n_heads=4, head_dim=64, rope_fraction=0.5, max_len=16384,
                     **fields)


@pytest.mark.parametrize("case", sorted(CASES))
def test_frequencies_match_transformers(case):
  hf_params, fields = CASES[case]
  theirs, their_factor, _ = _transformers_rope(hf_params)
  cfg = _cfg(fields)
  ours = rope.inv_freq(cfg)
  assert ours.shape == theirs.shape == (16,) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
  assert rope.attention_factor(cfg) == pytest.approx(their_factor, rel=1e-12)

  # The scaling does what its name says (so the comparison is not between two plain RoPEs).
  ratio = ours / rope.inv_freq(_cfg({"rope_base": cfg.rope_base}))
  factor = cfg.rope_scaling_factor
  kept, divided = np.isclose(ratio, 1.0, rtol=1e-6), np.isclose(ratio, 1 / factor, rtol=1e-6)
  between = (ratio < 1.0) & (ratio > 1 / factor) & ~kept & ~divided
  if case == "default":
    assert kept.all()
  elif case == "linear":
    assert divided.all()
  else:  # the fast frequencies kept, the slow ones divided by the factor, a ramp between
    assert kept[0] and divided[-1] and between.any(), ratio
    assert np.all(np.diff(ratio) <= 1e-7), ratio  # monotone from kept to divided


def test_attention_factor_is_yarns_mscale():
  assert rope.attention_factor(_cfg(CASES["yarn"][1])) == pytest.approx(0.1 * np.log(4) + 1)
  assert rope.attention_factor(_cfg(CASES["yarn_attention_factor"][1])) == 1.3
  assert rope.attention_factor(_cfg(CASES["llama3"][1])) == 1.0


@pytest.mark.parametrize("case", ["llama3", "yarn", "yarn_attention_factor"])
def test_cos_sin_match_transformers_rotary_embedding(case):
  torch = pytest.importorskip("torch")
  hf_params, fields = CASES[case]
  _, _, rotary = _transformers_rope(hf_params)
  positions = np.array([[0, 1, 2, 17, 63, 64], [2, 3, 5, 8, 13, 21]])
  with torch.no_grad():
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), torch.tensor(positions))
  ours = rope.angles(jnp.asarray(positions), _cfg(fields))
  for mine, theirs in zip(ours, (cos.numpy(), sin.numpy())):
    assert mine.shape == (2, 6, 16)
    np.testing.assert_array_equal(theirs[..., :16], theirs[..., 16:])  # HF repeats the halves
    np.testing.assert_allclose(np.asarray(mine), theirs[..., :16], atol=1e-5, rtol=0)
  if case.startswith("yarn"):
    assert float(np.abs(np.asarray(ours[0])).max()) > 1.05  # mscale is applied


# --- the config ------------------------------------------------------------------------------

@pytest.mark.parametrize("fields,message", [
    (dict(rope_scaling="ntk"), r"rope_scaling='ntk'; expected one of \('none', 'linear'"),
    (dict(rope_scaling="linear", rope_scaling_factor=0.5),
     r"rope_scaling_factor=0.5; expected >= 1"),
    (dict(rope_scaling_factor=4.0),
     r"rope_scaling_factor=4.0 has no effect with rope_scaling='none': set rope_scaling to one "
     r"of \['linear', 'llama3', 'yarn'\], or leave it at 1.0"),
    (dict(rope_scaling="yarn", rope_scaling_factor=4.0),
     r"rope_scaling='yarn' needs rope_original_max_len: the context length the model was "
     r"pretrained with"),
    (dict(rope_scaling="llama3", rope_scaling_factor=4.0, rope_original_max_len=4096),
     r"rope_original_max_len=4096 exceeds max_len=1024; .* = 16384"),
    (dict(rope_scaling="linear", rope_scaling_factor=2.0, rope_beta_fast=8.0),
     r"rope_beta_fast=8.0 has no effect with rope_scaling='linear'.*\['yarn'\]"),
    (dict(rope_scaling="llama3", rope_scaling_factor=2.0, rope_original_max_len=512,
          rope_low_freq_factor=4.0), r"rope_low_freq_factor=4.0 and rope_high_freq_factor=4.0; "
                                     r"expected 0 < low < high"),
    (dict(rope_scaling="yarn", rope_scaling_factor=2.0, rope_original_max_len=512,
          rope_beta_slow=40.0), r"rope_beta_slow=40.0 and rope_beta_fast=32.0; expected 0 < slow"),
    (dict(rope_scaling="yarn", rope_scaling_factor=2.0, rope_original_max_len=512,
          rope_attention_factor=-1.0), r"rope_attention_factor=-1.0; expected a positive"),
])
def test_bad_scaling_is_refused_by_name(fields, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig(**fields)


def test_scaled_config_is_hashable_and_described():
  cfg = ModelConfig(max_len=16384, rope_scaling="yarn", rope_scaling_factor=4.0,
                    rope_original_max_len=4096)
  assert hash(cfg) == hash(dataclasses.replace(cfg))
  assert describe(cfg).endswith("RoPE interleaved on 16 dims, yarn scaling x4 from 4096 to "
                                "16384 tokens")
  assert "scaling" not in describe(ModelConfig())


def test_a_checkpoint_saved_before_rope_scaling_is_the_same_model():
  saved = {k: v for k, v in ModelConfig().to_dict().items() if k not in ROPE_SCALING_FIELDS}
  assert checkpoints.model_config_differences(saved, ModelConfig()) == []
  scaled = ModelConfig(rope_scaling="linear", rope_scaling_factor=2.0)
  diffs = checkpoints.model_config_differences(saved, scaled)
  assert diffs == ["rope_scaling: checkpoint has 'none', config has 'linear'",
                   "rope_scaling_factor: checkpoint has 1.0, config has 2.0"], diffs


def test_a_config_saved_before_rope_scaling_reads_as_unscaled_under_any_gin():
  saved = {k: v for k, v in ModelConfig().to_dict().items() if k not in ROPE_SCALING_FIELDS}
  gin.parse_config(["ModelConfig.rope_scaling = 'linear'", "ModelConfig.rope_scaling_factor = 2.0"])
  assert ModelConfig().rope_scaling == "linear"
  assert ModelConfig.from_dict(saved) == ModelConfig(**saved, rope_scaling="none",
                                                     rope_scaling_factor=1.0)
