"""Width and depth growth keep the function: logits, every layer's residual stream, every prefix."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from testlib import trained_like_params

from batgpt_jax.grow import params as grow_params
from batgpt_jax.grow import verify
from batgpt_jax.grow.plan import plan_growth
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig

KV_HEADS = {"mha": 4, "gqa": 2, "mqa": 1}
DEPTH = {"interleave": 5, "append": 3}  # 2 -> 5 spreads 3 new blocks unevenly (1 + 2)
TOL = 1e-5


def small_config(attention: str, rope_fraction: float = 0.5) -> ModelConfig:
  return ModelConfig(vocab_size=64, hidden=32, n_layers=2, n_heads=4,
                     n_kv_heads=KV_HEADS[attention], head_dim=8, ffn=48,
                     rope_fraction=rope_fraction, init_std=0.1)


def grown_config(small: ModelConfig, n: int, m: int, n_layers: int) -> ModelConfig:
  kv = 1 if small.n_kv_heads == 1 else n * small.n_kv_heads
  return ModelConfig(**{**small.to_dict(), "hidden": n * small.hidden, "n_heads": n * small.n_heads,
                        "n_kv_heads": kv, "ffn": m * small.ffn, "n_layers": n_layers})


def prefix_probe(vocab_size: int, length: int = 12, seed: int = 3):
  """Row k holds the first k + 1 tokens as one document and unrelated tokens as another, so the
  last logits of document 1 in row k are the full forward of that prefix (decoding step k)."""
  rng = np.random.default_rng(seed)
  text = rng.integers(0, vocab_size, length)
  index = np.arange(length)
  tokens, positions, segments = [], [], []
  for k in range(length):
    tokens.append(np.where(index <= k, text, rng.integers(0, vocab_size, length)))
    segments.append(np.where(index <= k, 1, 2))
    positions.append(np.where(index <= k, index, index - k - 1))
  return tuple(jnp.asarray(np.stack(a), jnp.int32) for a in (tokens, positions, segments))


# A pairwise design: every pair of values of the four factors appears in at least one case, in
# 6 cases instead of the 24 of the full product (each case compiles two models, ~3 s on 2 cores).
CASES = [
    ("mha", 2, "interleave", 1.0),
    ("mha", 3, "append", 0.5),
    ("gqa", 2, "append", 0.5),
    ("gqa", 3, "interleave", 1.0),
    ("mqa", 2, "interleave", 0.5),
    ("mqa", 3, "append", 1.0),
]


@pytest.mark.parametrize("attention, n, depth_mode, rope_fraction", CASES)
def test_grown_model_computes_the_same_function(attention, n, depth_mode, rope_fraction):
  small = small_config(attention, rope_fraction)
  big = grown_config(small, n, m=5 - n, n_layers=DEPTH[depth_mode])  # m != n: 3 for 2, 2 for 3
  plan = plan_growth(small, big, depth_mode=depth_mode)
  small_params = trained_like_params(small)
  big_params = grow_params.grow_tree(small_params, small, big, plan)

  probe = prefix_probe(small.vocab_size)
  report = verify.compare(small, small_params, big, big_params, plan, probe=probe)
  assert report.passed and report.max_logit_diff <= TOL
  assert len(report.layer_diffs) == big.n_layers + 1  # the embedding, then every grown block
  assert max(report.layer_diffs) <= TOL, report.layer_diffs
  if attention == "mqa":  # the single KV head is shared by all query head copies, not tiled
    assert big_params["blocks"]["attn"]["k"].shape[2] == 1
  # Decoding steps: the last logits of every prefix.
  steps = np.arange(probe[0].shape[0])
  small_steps = verify.logits(small, small_params, *probe)[steps, steps]
  big_steps = verify.logits(big, big_params, *probe)[steps, steps]
  np.testing.assert_allclose(big_steps, small_steps, atol=TOL, rtol=0)


@functools.partial(jax.jit, static_argnums=0)
def _decode(cfg: ModelConfig, params: dict, tokens, cache, index):
  """One KV-cache step of `tokens` [batch, t] at slot `index`: (last logits, cache)."""
  positions = index + jnp.arange(tokens.shape[1])[None].repeat(tokens.shape[0], 0)
  start = jnp.zeros((tokens.shape[0],), jnp.int32)
  logits, cache = transformer.decode(cfg, params, tokens, positions, cache, index, start)
  return logits[:, -1], cache


def test_grown_model_decodes_like_the_small_one_with_a_kv_cache():
  small = small_config("mqa")  # a single shared KV head: the cache's odd case
  big = grown_config(small, 2, 3, n_layers=3)
  plan = plan_growth(small, big, depth_mode="interleave", noise_snr_db=20.0)
  small_params = trained_like_params(small)
  big_params = grow_params.grow_tree(small_params, small, big, plan)
  prompt = jnp.asarray([[5, 17, 3, 42], [9, 9, 60, 1]], jnp.int32)
  steps = 6
  caches = [transformer.init_cache(cfg, 2, prompt.shape[1] + steps) for cfg in (small, big)]
  small_logits, caches[0] = _decode(small, small_params, prompt, caches[0], 0)
  big_logits, caches[1] = _decode(big, big_params, prompt, caches[1], 0)
  for step in range(steps):
    np.testing.assert_allclose(big_logits, small_logits, atol=TOL, rtol=0)
    token = jnp.argmax(small_logits, axis=-1)[:, None].astype(jnp.int32)  # greedy, both fed alike
    index = prompt.shape[1] + step
    small_logits, caches[0] = _decode(small, small_params, token, caches[0], index)
    big_logits, caches[1] = _decode(big, big_params, token, caches[1], index)
  np.testing.assert_allclose(big_logits, small_logits, atol=TOL, rtol=0)


def test_inserted_blocks_are_identity_and_old_blocks_keep_their_place():
  small = small_config("gqa")
  big = grown_config(small, 1, 1, n_layers=5)
  plan = plan_growth(small, big, depth_mode="interleave")
  assert plan.depth.sources == (0, 0, 1, 1, 1)
  assert plan.depth.identity == (False, True, False, True, True)
  append = plan_growth(small, big, depth_mode="append").depth
  assert append.sources == (0, 1, 1, 1, 1) and append.identity == (False, False, True, True, True)
  grown = grow_params.grow_tree(trained_like_params(small), small, big, plan)
  o, down = grown["blocks"]["attn"]["o"], grown["blocks"]["mlp"]["down"]
  for layer, new in enumerate(plan.depth.identity):
    assert bool(jnp.all(o[layer] == 0)) == new and bool(jnp.all(down[layer] == 0)) == new


def test_layer_states_unroll_the_decoder_exactly():
  cfg = small_config("gqa")
  params = trained_like_params(cfg)
  probe = prefix_probe(cfg.vocab_size)
  states = verify.layer_states(cfg, params, *probe)
  assert len(states) == cfg.n_layers + 1
  final = states[-1] * jax.lax.rsqrt(jnp.mean(states[-1] ** 2, -1, keepdims=True) + cfg.norm_eps)
  final = final * params["final_norm"]["scale"]
  np.testing.assert_allclose(
      final, transformer.apply(cfg, params, *probe, method="hidden_states"), atol=1e-5)


def test_stack_mode_is_reported_not_refused():
  small = small_config("gqa")
  big = grown_config(small, 2, 3, n_layers=4)
  plan = plan_growth(small, big, depth_mode="stack")
  assert plan.depth.sources == (0, 1, 0, 1) and not plan.function_preserving
  small_params = trained_like_params(small)
  report = verify.compare(small, small_params, big,
                          grow_params.grow_tree(small_params, small, big, plan), plan)
  assert report.max_logit_diff > 1e-3 and report.passed and report.layer_diffs == ()
  assert "does not preserve the function" in report.lines()[0]


def _hidden_copy_gap(cfg: ModelConfig, params: dict, probe, copies: int) -> float:
  """How far the copies of the final residual stream are from each other."""
  final = verify.layer_states(cfg, params, *probe)[-1]
  parts = jnp.split(final, copies, axis=-1)
  return float(max(jnp.max(jnp.abs(p - parts[0])) for p in parts[1:]))


ADAM = optax.adam(1e-2)


@functools.partial(jax.jit, static_argnums=0)
def _adam_step(cfg: ModelConfig, params: dict, opt_state, tokens, positions, segments):
  def loss(p):
    logits = transformer.apply(cfg, p, tokens, positions, segments)[:, :-1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  updates, opt_state = ADAM.update(jax.grad(loss)(params), opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _train(cfg: ModelConfig, params: dict, probe, steps: int) -> dict:
  opt_state = ADAM.init(params)
  for _ in range(steps):
    params, opt_state = _adam_step(cfg, params, opt_state, *probe)
  return params


def test_paired_noise_keeps_the_function_and_lets_copies_diverge():
  small = small_config("gqa")
  big = grown_config(small, 2, 3, n_layers=3)
  small_params = trained_like_params(small)
  noisy_plan = plan_growth(small, big, depth_mode="interleave", noise_snr_db=10.0, seed=7)
  plain_plan = plan_growth(small, big, depth_mode="interleave")
  noisy = grow_params.grow_tree(small_params, small, big, noisy_plan)
  plain = grow_params.grow_tree(small_params, small, big, plain_plan)

  report = verify.compare(small, small_params, big, noisy, noisy_plan)
  assert report.max_logit_diff <= TOL and max(report.layer_diffs) <= TOL
  # Twin input blocks differ by +-N, sum to the plain pair, at the asked SNR.
  d = small.hidden
  q, q_plain = noisy["blocks"]["attn"]["q"][0], plain["blocks"]["attn"]["q"][0]
  noise = q[:d] - q_plain[:d]
  assert float(jnp.max(jnp.abs(q[:d] - q[d:]))) > 1e-3
  np.testing.assert_allclose(q[:d] + q[d:], q_plain[:d] + q_plain[d:], atol=1e-6)
  snr = 10 * np.log10(float(jnp.mean(q_plain[:d] ** 2) / jnp.mean(noise ** 2)))
  assert snr == pytest.approx(10.0, abs=1.0)
  inserted = noisy_plan.depth.identity.index(True)
  assert float(jnp.max(jnp.abs(noisy["blocks"]["mlp"]["down"][inserted]))) == 0.0  # identity

  probe = verify.probe_batch(small.vocab_size)
  assert _hidden_copy_gap(big, noisy, probe, 2) <= TOL
  assert _hidden_copy_gap(big, _train(big, noisy, probe, 4), probe, 2) > 1e-3  # diverged
  assert _hidden_copy_gap(big, _train(big, plain, probe, 4), probe, 2) <= TOL  # still clones
