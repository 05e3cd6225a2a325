"""Every attention implementation against `xla`: values and gradients on packed rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax.model import attention


def test_visible_is_causal_within_segments_only():
  segments, index = attention.self_attention_index(jnp.array([[1, 1, 2, 2, 2, 0]]))
  mask = np.asarray(attention.visible(segments, segments, index, index))[0]
  expected = np.array([
      [1, 0, 0, 0, 0, 0],
      [1, 1, 0, 0, 0, 0],
      [0, 0, 1, 0, 0, 0],
      [0, 0, 1, 1, 0, 0],
      [0, 0, 1, 1, 1, 0],
      [0, 0, 0, 0, 0, 1],
  ], dtype=bool)
  np.testing.assert_array_equal(mask, expected)


def _packed_rows(batch, length, seed):
  """Segment ids of packed rows: documents of random lengths, some cut at the row's end (a
  chunked document), then padding (segment 0) on some rows."""
  rng = np.random.default_rng(seed)
  rows = []
  for r in range(batch):
    ids, doc = [], 1
    fill = length - (r % 2) * rng.integers(1, length // 4)  # odd rows end in padding
    while len(ids) < fill:
      ids += [doc] * int(rng.integers(1, length // 3))
      doc += 1
    rows.append((ids[:fill] + [0] * length)[:length])
  return jnp.asarray(rows, jnp.int32)


def _inputs(batch=2, length=48, heads=4, kv_heads=2, dim=8, dtype=jnp.float32, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(keys[0], (batch, length, heads, dim), dtype)
  k = jax.random.normal(keys[1], (batch, length, kv_heads, dim), dtype)
  v = jax.random.normal(keys[2], (batch, length, kv_heads, dim), dtype)
  return q, k, v, _packed_rows(batch, length, seed)


def _run(impl, q, k, v, segment_ids, block):
  segments, index = attention.self_attention_index(segment_ids)
  return attention.attend(q, k, v, segments, segments, index, index, impl=impl, block=block,
                          self_attention=True)


def _loss_and_grads(impl, q, k, v, segment_ids, block):
  weights = jax.random.normal(jax.random.key(9), q.shape, jnp.float32)

  def loss(q, k, v):
    out = _run(impl, q, k, v, segment_ids, block).astype(jnp.float32)
    return jnp.sum(out * weights)

  return jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (4, 1)])  # MHA, GQA, MQA
@pytest.mark.parametrize("block", [8, 20, 64])  # several blocks, a ragged last block, one block
def test_blockwise_equals_xla_values_and_gradients(heads, kv_heads, block):
  q, k, v, segment_ids = _inputs(heads=heads, kv_heads=kv_heads)
  np.testing.assert_allclose(_run("blockwise", q, k, v, segment_ids, block),
                             _run("xla", q, k, v, segment_ids, block), atol=1e-5)
  want_loss, want_grads = _loss_and_grads("xla", q, k, v, segment_ids, block)
  loss, grads = _loss_and_grads("blockwise", q, k, v, segment_ids, block)
  assert float(loss) == pytest.approx(float(want_loss), abs=1e-4)
  for got, want in zip(grads, want_grads):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_blockwise_equals_xla_in_bfloat16():
  q, k, v, segment_ids = _inputs(dtype=jnp.bfloat16)
  got = _run("blockwise", q, k, v, segment_ids, 16).astype(jnp.float32)
  want = _run("xla", q, k, v, segment_ids, 16).astype(jnp.float32)
  np.testing.assert_allclose(got, want, atol=2e-2)
  _, grads = _loss_and_grads("blockwise", q, k, v, segment_ids, 16)
  _, want_grads = _loss_and_grads("xla", q, k, v, segment_ids, 16)
  for got, want in zip(grads, want_grads):
    scale = float(jnp.abs(want.astype(jnp.float32)).max())
    np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32),
                               atol=2e-2 * scale)


def test_blockwise_decoding_over_a_left_padded_cache_equals_xla():
  """Queries at cache slots index.. over keys in every slot; row 1 starts at slot 5, so its
  queries before slot 5 see nothing (a uniform average in both implementations)."""
  b, slots, t, index = 2, 40, 3, 9
  keys = jax.random.split(jax.random.key(1), 3)
  q = jax.random.normal(keys[0], (b, t, 4, 8))
  k = jax.random.normal(keys[1], (b, slots, 2, 8))
  v = jax.random.normal(keys[2], (b, slots, 2, 8))
  start = jnp.array([0, 5])
  slot = jnp.broadcast_to(jnp.arange(slots), (b, slots))
  query_slot = jnp.broadcast_to(index + jnp.arange(t), (b, t))
  kv_segments = (slot >= start[:, None]).astype(jnp.int32)
  args = (q, k, v, jnp.ones_like(query_slot), kv_segments, query_slot, slot)
  np.testing.assert_allclose(attention.attend(*args, impl="blockwise", block=16),
                             attention.attend(*args, impl="xla", block=16), atol=1e-5)
  # splash and cudnn are for self-attention: decoding with them runs the blockwise path.
  np.testing.assert_allclose(attention.attend(*args, impl="splash", block=16),
                             attention.attend(*args, impl="blockwise", block=16), atol=0)


def _temp_bytes(impl, length):
  q = jax.ShapeDtypeStruct((1, length, 4, 16), jnp.float32)
  kv = jax.ShapeDtypeStruct((1, length, 2, 16), jnp.float32)
  segment_ids = jax.ShapeDtypeStruct((1, length), jnp.int32)

  def loss(q, k, v, segment_ids):
    return jnp.sum(_run(impl, q, k, v, segment_ids, 512))

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  return grad.lower(q, kv, kv, segment_ids).compile().memory_analysis().temp_size_in_bytes


def test_blockwise_memory_at_8k_is_below_a_tenth_of_xla():
  xla, blockwise = _temp_bytes("xla", 8192), _temp_bytes("blockwise", 8192)
  assert xla > 8192 * 8192 * 4  # the float32 logits of one head at least
  assert blockwise < 0.1 * xla, (blockwise, xla)


def test_packed_layout_describes_each_segment():
  offsets, lengths = attention.packed_layout(jnp.array([[1, 1, 2, 2, 2, 0], [3, 3, 3, 3, 3, 3]]))
  np.testing.assert_array_equal(offsets, [[0, 2, 5, 6, -1, -1, -1], [0, 6, -1, -1, -1, -1, -1]])
  np.testing.assert_array_equal(lengths, [[2, 3, 1, -1, -1, -1], [6, -1, -1, -1, -1, -1]])
  offsets, lengths = attention.packed_layout(jnp.array([[1, 2, 3]]))  # every token its own
  np.testing.assert_array_equal(offsets, [[0, 1, 2, 3]])
  np.testing.assert_array_equal(lengths, [[1, 1, 1]])


def test_cudnn_is_refused_off_gpu_with_the_reason_and_the_fix():
  q, k, v, segment_ids = _inputs()
  with pytest.raises(ValueError, match=r"NVIDIA GPU.*bfloat16 or float16.*attention='blockwise'"):
    _run("cudnn", q, k, v, segment_ids, 16)
  problems = attention.cudnn_problems(jnp.zeros((1, 8, 2, 12), jnp.bfloat16), "gpu")
  assert problems == ["head_dim 12 must be a multiple of 8 and at most 256 (128 before Hopper)"]
  assert attention.cudnn_problems(jnp.zeros((1, 8, 2, 128), jnp.bfloat16), "gpu") == []


def test_splash_refuses_rows_that_do_not_fit_its_blocks():
  q, k, v, segment_ids = _inputs(length=48)
  with pytest.raises(ValueError, match="multiple of 128.*attention='blockwise'"):
    _run("splash", q, k, v, segment_ids, 48)


def test_splash_in_interpret_mode_equals_xla():
  """The TPU kernel through Pallas interpret mode on CPU: one 128-token block per row."""
  q, k, v, segment_ids = _inputs(batch=1, length=256, dim=16)
  np.testing.assert_allclose(_run("splash", q, k, v, segment_ids, 128),
                             _run("xla", q, k, v, segment_ids, 128), atol=1e-5)
  want_loss, want_grads = _loss_and_grads("xla", q, k, v, segment_ids, 128)
  loss, grads = _loss_and_grads("splash", q, k, v, segment_ids, 128)
  assert float(loss) == pytest.approx(float(want_loss), abs=1e-4)
  for got, want in zip(grads, want_grads):
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("impl", ["splash", "blockwise"])
def test_under_a_mesh_the_output_is_one_devices(impl, axis_rules):
  """Mesh (2, 2, 2): rows over data and fsdp, KV heads (and their query groups) over
  tensor; splash runs per shard under shard_map."""
  from batgpt_jax import parallel  # pylint: disable=import-outside-toplevel
  q, k, v, segment_ids = _inputs(batch=4, length=256, dim=16)
  want = _run("xla", q, k, v, segment_ids, 128)
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=(2, 2, 2)))

  def sharded(q, k, v, segment_ids):
    with parallel.activation_sharding(mesh, axis_rules):
      return _run(impl, q, k, v, segment_ids, 128)

  np.testing.assert_allclose(jax.jit(sharded)(q, k, v, segment_ids), want, atol=1e-5)
