import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig

CFG = ModelConfig(vocab_size=64, init_std=0.1)


def _packed(doc_a, doc_b, length=16):
  tokens = np.zeros((1, length), np.int32)
  segments = np.zeros((1, length), np.int32)
  positions = np.zeros((1, length), np.int32)
  tokens[0, :len(doc_a)], segments[0, :len(doc_a)] = doc_a, 1
  positions[0, :len(doc_a)] = np.arange(len(doc_a))
  end = len(doc_a) + len(doc_b)
  tokens[0, len(doc_a):end], segments[0, len(doc_a):end] = doc_b, 2
  positions[0, len(doc_a):end] = np.arange(len(doc_b))
  return jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(segments)


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CFG, seed=0)


def test_no_leak_across_packed_documents(params):
  doc_b = [5, 9, 11, 3, 7]
  logits_1 = transformer.apply(CFG, params, *_packed([1, 2, 3, 4, 5, 6], doc_b))
  logits_2 = transformer.apply(CFG, params, *_packed([40, 41, 42, 43, 44, 45], doc_b))
  b = slice(6, 11)
  np.testing.assert_array_equal(np.asarray(logits_1[0, b]), np.asarray(logits_2[0, b]))
  assert not np.allclose(logits_1[0, :6], logits_2[0, :6])  # document A itself did change


def test_packed_document_equals_the_document_alone(params):
  doc_b = [5, 9, 11, 3, 7]
  packed = transformer.apply(CFG, params, *_packed([1, 2, 3, 4, 5, 6], doc_b))
  alone = transformer.apply(CFG, params, *_packed(doc_b, []))
  np.testing.assert_allclose(np.asarray(packed[0, 6:11]), np.asarray(alone[0, :5]), atol=1e-5)


def test_causal_future_tokens_do_not_change_the_past(params):
  tokens, positions, segments = _packed([1, 2, 3, 4, 5, 6, 7, 8], [])
  changed = tokens.at[0, 5].set(60)
  before = transformer.apply(CFG, params, tokens, positions, segments)
  after = transformer.apply(CFG, params, changed, positions, segments)
  np.testing.assert_array_equal(np.asarray(before[0, :5]), np.asarray(after[0, :5]))
  assert not np.allclose(before[0, 5:8], after[0, 5:8])


@pytest.mark.parametrize("remat", ["full", "dots", "dots_no_batch"])
def test_remat_policies_change_memory_not_math(params, remat):
  tokens, positions, segments = _packed([1, 2, 3, 4, 5, 6], [7, 8, 9])

  def loss(p, cfg):
    return jnp.mean(transformer.apply(cfg, p, tokens, positions, segments) ** 2)

  plain_value, plain_grad = jax.value_and_grad(loss)(params, CFG)
  cfg = ModelConfig(**{**CFG.to_dict(), "remat": remat})
  value, grad = jax.value_and_grad(loss)(params, cfg)
  assert float(value) == pytest.approx(float(plain_value), rel=1e-6)
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(plain_grad)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_every_parameter_carries_logical_axes_of_its_rank():
  names = transformer.logical_axes(CFG)
  shapes = transformer.abstract_params(CFG)
  flat_names = jax.tree.leaves(names, is_leaf=lambda x: isinstance(x, tuple))
  flat_shapes = jax.tree.leaves(shapes)
  assert len(flat_names) == len(flat_shapes) == 15
  for axes, shape in zip(flat_names, flat_shapes):
    assert len(axes) == len(shape.shape)
  assert names["blocks"]["attn"]["q"] == ("layers", "embed", "heads", "head_dim")
  assert names["lm_head"] == ("embed", "vocab")


def test_layers_are_stacked_and_initialised_independently(params):
  q = np.asarray(params["blocks"]["attn"]["q"])
  assert q.shape == (CFG.n_layers, CFG.hidden, CFG.n_heads, CFG.head_dim)
  assert not np.allclose(q[0], q[1])
  np.testing.assert_array_equal(np.asarray(params["blocks"]["attn_norm"]["scale"]), 1.0)


@pytest.mark.parametrize("impl", ["blockwise", "splash"])
def test_attention_implementations_give_the_xla_model(params, impl):
  """Logits and gradients of the whole decoder on packed rows with padding."""
  tokens, positions, segments = _packed([1, 2, 3, 4, 5, 6], [7, 8, 9, 10], length=128)
  cfg = ModelConfig(**{**CFG.to_dict(), "attention": impl, "attention_block": 128 if impl ==
                       "splash" else 32})

  def loss(p, cfg):
    return jnp.mean(transformer.apply(cfg, p, tokens, positions, segments) ** 2)

  np.testing.assert_allclose(transformer.apply(cfg, params, tokens, positions, segments),
                             transformer.apply(CFG, params, tokens, positions, segments),
                             atol=1e-5)
  want, want_grad = jax.value_and_grad(loss)(params, CFG)
  got, grad = jax.value_and_grad(loss)(params, cfg)
  assert float(got) == pytest.approx(float(want), rel=1e-6)
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(want_grad)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_blockwise_decoding_gives_the_xla_logits(params):
  """A left-padded prefill and two single-token steps over the KV cache."""
  cfg = ModelConfig(**{**CFG.to_dict(), "attention": "blockwise", "attention_block": 4})
  tokens = jnp.array([[0, 0, 5, 9, 11], [3, 4, 5, 6, 7]])
  start = jnp.array([2, 0])
  positions = jnp.maximum(jnp.arange(5)[None] - start[:, None], 0)
  for c in (CFG, cfg):
    cache = transformer.init_cache(c, 2, 12)
    out, cache = transformer.decode(c, params, tokens, positions, cache, 0, start)
    steps = [out]
    for i in range(2):
      step_tokens = jnp.array([[13 + i], [17 + i]])
      out, cache = transformer.decode(c, params, step_tokens, positions[:, -1:] + 1 + i, cache,
                                      5 + i, start)
      steps.append(out)
    if c is CFG:
      want = steps
  for got, ref in zip(steps, want):
    np.testing.assert_allclose(got, ref, atol=1e-5)


def _shapes(lowered) -> list[tuple[int, ...]]:
  """The shape of every array in a lowered program's StableHLO."""
  import re  # pylint: disable=import-outside-toplevel
  return [tuple(int(d) for d in dims.rstrip("x").split("x"))
          for dims in re.findall(r"tensor<((?:\d+x)+)[a-z]", lowered.as_text())]


@pytest.mark.parametrize("impl", ["blockwise", "xla"])
def test_a_batgpt_15b_32k_layer_lowers_without_a_length_squared_buffer(impl):
  """One block of the released model at 32,768 tokens, forward and backward, lowered from
  shapes alone (nothing is allocated)."""
  import gin  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from batgpt_jax import config  # pylint: disable=import-outside-toplevel
  config.parse_gin(["models/batgpt_15b_32k.gin"], [])
  cfg = ModelConfig()
  gin.clear_config()
  assert cfg.attention == "blockwise" and cfg.max_len == 32768
  cfg = ModelConfig(**{**cfg.to_dict(), "attention": impl})
  graphdef, state = nnx.split(nnx.eval_shape(lambda: transformer.Block(cfg, nnx.Rngs(0))))
  length = cfg.max_len
  x = jax.ShapeDtypeStruct((1, length, cfg.hidden), cfg.dtype)
  ids = jax.ShapeDtypeStruct((1, length), jnp.int32)

  def loss(state, x, positions, segment_ids):
    out = nnx.merge(graphdef, state)(x, positions, segment_ids)
    return jnp.sum(out.astype(jnp.float32))

  lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(state, x, ids, ids)
  shapes = _shapes(lowered)
  largest = max(int(np.prod(shape)) for shape in shapes)
  square = [shape for shape in shapes if sum(d >= length for d in shape) >= 2]
  if impl == "xla":  # the check sees the mask and logits when they are there
    assert largest >= length * length and square
  else:
    assert largest < length * length and not square, (largest, square[:3])
