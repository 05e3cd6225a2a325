"""Attention behind one interface, `ModelConfig.attention`: xla | blockwise | splash | cudnn.

Every implementation computes the same function. Query i sees key j when both carry the same
segment id and `kv_index[j] <= q_index[i]` (causal within each packed document; decoding uses
the cache slot as index and segment 0 for the left padding). q is [batch, lq, heads, head_dim];
k and v are [batch, lk, kv_heads, head_dim] with `heads` a multiple of `kv_heads` (grouped-query
attention); segment ids and indexes are [batch, lq] and [batch, lk] integers.

- `xla`: one [batch, 1, lq, lk] mask and float32 logits; the fastest for short rows on CPU.
- `blockwise`: pure JAX. Queries and keys go in blocks of `block`; an online softmax keeps a
  running max and sum per query, so nothing of size lq x lk is ever built, forward or backward
  (a custom VJP recomputes each block's probabilities from the saved max and sum). Query blocks
  are strided (block i holds positions i, i + n, i + 2n, ...), so a sequence sharded over the
  mesh keeps every block spread over all its shards: the long-context rules shard queries and
  gather keys and values without moving a query.
- `splash`: the TPU Pallas splash-attention kernel (segment ids, causal mask, grouped KV heads
  through its multi-query form); on other platforms it runs in Pallas interpret mode (slow, for
  checking).
- `cudnn`: cuDNN's fused flash attention through its packed layout (segment offsets and
  lengths), bfloat16 or float16, head_dim a multiple of 8 and at most 128 (256 on Hopper);
  anything else is refused with the reason.

`splash` and `cudnn` cover self-attention in training; decoding with either runs `blockwise`.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax import parallel

# Masked logits: finite, so a query that sees no key (left padding while decoding) gets a
# uniform average instead of NaN, as in `jax.nn.dot_product_attention`.
_MASKED = -1e30
_KV = ("batch", None, "kv_heads", "head_dim")  # keys and values whole along the sequence


def visible(q_segments, kv_segments, q_index, kv_index):
  """[batch, lq, lk] bool: which keys each query attends to."""
  same = q_segments[:, :, None] == kv_segments[:, None, :]
  return same & (kv_index[:, None, :] <= q_index[:, :, None])


def self_attention_index(segment_ids):
  """(segments, index) of a packed training row, for queries and keys alike."""
  index = jnp.broadcast_to(jnp.arange(segment_ids.shape[-1], dtype=jnp.int32),
                           segment_ids.shape)
  return segment_ids, index


def attend(q, k, v, q_segments, kv_segments, q_index, kv_index, *, impl: str, block: int,
           self_attention: bool = False):
  """The attention output [batch, lq, heads, head_dim] in q's dtype.

  self_attention: q and k are the same packed rows (training), which `splash` and `cudnn`
  need; with False they fall back to `blockwise`.
  """
  if impl in ("splash", "cudnn") and not self_attention:
    impl = "blockwise"
  k = parallel.constrain(k, _KV)
  v = parallel.constrain(v, _KV)
  if impl == "xla":
    mask = visible(q_segments, kv_segments, q_index, kv_index)[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask)
  if impl == "blockwise":
    return blockwise(q, k, v, q_segments, kv_segments, q_index, kv_index, block=block)
  if impl == "splash":
    return splash(q, k, v, q_segments, block=block)
  if impl == "cudnn":
    return cudnn(q, k, v, q_segments)
  raise ValueError(f"attention={impl!r}; expected xla, blockwise, splash or cudnn")


# --- blockwise -----------------------------------------------------------------------------------


def _pad_to(x, length: int, value):
  pad = length - x.shape[1]
  if pad == 0:
    return x
  widths = [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)
  return jnp.pad(x, widths, constant_values=value)


def _kv_blocks(x, block: int):
  """[batch, n * block, ...] -> [n, batch, block, ...] (contiguous blocks)."""
  b, length = x.shape[:2]
  return jnp.moveaxis(x.reshape((b, length // block, block) + x.shape[2:]), 1, 0)


def _q_blocks(x, n: int):
  """[batch, block * n, ...] -> [n, batch, block, ...]: block i holds positions i, i + n, ..."""
  b, length = x.shape[:2]
  return jnp.moveaxis(x.reshape((b, length // n, n) + x.shape[2:]), 2, 0)


def _q_unblocks(x):
  """The inverse of `_q_blocks`."""
  n, b, block = x.shape[:3]
  return jnp.moveaxis(x, 0, 2).reshape((b, block * n) + x.shape[3:])


def blockwise(q, k, v, q_segments, kv_segments, q_index, kv_index, *, block: int):
  """Online-softmax attention over blocks of `block` queries and keys (see the module doc)."""
  b, lq, heads, dim = q.shape
  lk, kv_heads = k.shape[1], k.shape[2]
  bq, bk = min(block, lq), min(block, lk)
  lq_pad, lk_pad = -(-lq // bq) * bq, -(-lk // bk) * bk
  # Padded keys carry segment -1 and padded queries -2: no query sees a padded key.
  q = _pad_to(q, lq_pad, 0).reshape(b, lq_pad, kv_heads, heads // kv_heads, dim)
  k, v = _pad_to(k, lk_pad, 0), _pad_to(v, lk_pad, 0)
  qs, qi = _pad_to(q_segments, lq_pad, -2), _pad_to(q_index, lq_pad, 0)
  ks, ki = _pad_to(kv_segments, lk_pad, -1), _pad_to(kv_index, lk_pad, 0)
  out = _flash(q, k, v, qs.astype(jnp.int32), ks.astype(jnp.int32), qi.astype(jnp.int32),
               ki.astype(jnp.int32), lq_pad // bq, bk)
  return out.reshape(b, lq_pad, heads, dim)[:, :lq]


def _logits(q_blk, k_blk, qs, qi, ks, ki, scale):
  """Masked float32 logits [batch, kv_heads, groups, bq, bk] and the visibility mask."""
  s = jnp.einsum("bqhgd,bkhd->bhgqk", q_blk, k_blk, preferred_element_type=jnp.float32) * scale
  seen = visible(qs, ks, qi, ki)[:, None, None]
  return jnp.where(seen, s, _MASKED), seen


def _forward(q, k, v, qs, ks, qi, ki, n_q: int, bk: int):
  """(out [batch, lq, kv_heads, groups, dim], row max, row sum [n_q, batch, h, g, bq])."""
  scale = 1.0 / math.sqrt(q.shape[-1])
  kv = tuple(_kv_blocks(x, bk) for x in (k, v, ks, ki))

  def one_query_block(_, query):
    q_blk, qs_blk, qi_blk = query
    b, bq, h, g, d = q_blk.shape
    init = (jnp.zeros((b, bq, h, g, d), jnp.float32),
            jnp.full((b, h, g, bq), _MASKED, jnp.float32), jnp.zeros((b, h, g, bq), jnp.float32))

    def one_key_block(carry, keys):
      acc, row_max, row_sum = carry
      k_blk, v_blk, ks_blk, ki_blk = keys
      s, _ = _logits(q_blk, k_blk, qs_blk, qi_blk, ks_blk, ki_blk, scale)
      new_max = jnp.maximum(row_max, s.max(axis=-1))
      p = jnp.exp(s - new_max[..., None])
      correction = jnp.exp(row_max - new_max)
      row_sum = row_sum * correction + p.sum(axis=-1)
      pv = jnp.einsum("bhgqk,bkhd->bqhgd", p.astype(v_blk.dtype), v_blk,
                      preferred_element_type=jnp.float32)
      acc = acc * jnp.moveaxis(correction, 3, 1)[..., None] + pv
      return (acc, new_max, row_sum), None

    (acc, row_max, row_sum), _ = jax.lax.scan(one_key_block, init, kv)
    out = acc / jnp.moveaxis(row_sum, 3, 1)[..., None]
    return None, (out.astype(q_blk.dtype), row_max, row_sum)

  queries = tuple(_q_blocks(x, n_q) for x in (q, qs, qi))
  _, (out, row_max, row_sum) = jax.lax.scan(one_query_block, None, queries)
  return _q_unblocks(out), row_max, row_sum


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _flash(q, k, v, qs, ks, qi, ki, n_q, bk):
  return _forward(q, k, v, qs, ks, qi, ki, n_q, bk)[0]


def _flash_fwd(q, k, v, qs, ks, qi, ki, n_q, bk):
  out, row_max, row_sum = _forward(q, k, v, qs, ks, qi, ki, n_q, bk)
  return out, (q, k, v, qs, ks, qi, ki, out, row_max, row_sum)


def _flash_bwd(n_q, bk, residuals, d_out):
  q, k, v, qs, ks, qi, ki, out, row_max, row_sum = residuals
  scale = 1.0 / math.sqrt(q.shape[-1])
  kv = tuple(_kv_blocks(x, bk) for x in (k, v, ks, ki))
  d_out32 = d_out.astype(jnp.float32)
  # delta_i = sum_d dO_id O_id = sum_j P_ij dP_ij: the softmax Jacobian's diagonal term.
  delta = jnp.einsum("bqhgd,bqhgd->bhgq", d_out32, out.astype(jnp.float32))
  queries = tuple(_q_blocks(x, n_q) for x in (q, qs, qi, d_out32))
  stats = (jnp.moveaxis(_q_blocks(jnp.moveaxis(delta, 3, 1), n_q), 2, 4), row_max, row_sum)

  def one_query_block(dkv, query):
    (q_blk, qs_blk, qi_blk, do_blk), (delta_blk, max_blk, sum_blk) = query

    def one_key_block(dq, keys):
      k_blk, v_blk, ks_blk, ki_blk = keys
      s, seen = _logits(q_blk, k_blk, qs_blk, qi_blk, ks_blk, ki_blk, scale)
      p = jnp.exp(s - max_blk[..., None]) / sum_blk[..., None]
      dv = jnp.einsum("bhgqk,bqhgd->bkhd", p, do_blk)
      dp = jnp.einsum("bqhgd,bkhd->bhgqk", do_blk, v_blk.astype(jnp.float32))
      ds = jnp.where(seen, p * (dp - delta_blk[..., None]), 0.0) * scale
      dq = dq + jnp.einsum("bhgqk,bkhd->bqhgd", ds, k_blk.astype(jnp.float32))
      dk = jnp.einsum("bhgqk,bqhgd->bkhd", ds, q_blk.astype(jnp.float32))
      return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(one_key_block, jnp.zeros(q_blk.shape, jnp.float32), kv)
    dkv = (dkv[0] + dk, dkv[1] + dv)
    return dkv, dq

  zeros = jnp.zeros(kv[0].shape, jnp.float32)
  (dk, dv), dq = jax.lax.scan(one_query_block, (zeros, zeros), (queries, stats))
  unblock = lambda x: jnp.moveaxis(x, 0, 1).reshape((x.shape[1], -1) + x.shape[3:])
  return (_q_unblocks(dq).astype(q.dtype), unblock(dk).astype(k.dtype),
          unblock(dv).astype(v.dtype), None, None, None, None)


_flash.defvjp(_flash_fwd, _flash_bwd)


# --- splash (TPU Pallas) -------------------------------------------------------------------------


def splash(q, k, v, segment_ids, *, block: int):
  """The splash kernel on packed self-attention rows; interpret mode off TPU."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

  b, length, heads, dim = q.shape
  kv_heads = k.shape[2]
  groups = heads // kv_heads
  size = min(block, length)
  if length % size or size % 128:
    raise ValueError(
        f"attention='splash' needs the row length ({length}) to be a multiple of a block that "
        f"is itself a multiple of 128 (attention_block={block}); pad the rows (seq_len) or "
        "use attention='blockwise'")
  interpret = jax.devices()[0].platform != "tpu"
  sizes = kernel.BlockSizes(block_q=size, block_kv=size, block_kv_compute=size,
                            block_q_dkv=size, block_kv_dkv=size, block_kv_dkv_compute=size,
                            block_q_dq=size, block_kv_dq=size)
  mask = masks.MultiHeadMask([masks.CausalMask((length, length))] * groups)
  attention = kernel.make_splash_mqa_single_device(mask, block_sizes=sizes, interpret=interpret)

  def one_row(q_row, k_row, v_row, seg_row):
    # q_row [kv_heads, groups, length, dim]; k_row, v_row [kv_heads, length, dim].
    ids = kernel.SegmentIds(q=seg_row, kv=seg_row)
    return jax.vmap(lambda qh, kh, vh: attention(qh, kh, vh, segment_ids=ids))(q_row, k_row,
                                                                                v_row)

  scaled = (q * (1.0 / math.sqrt(dim))).astype(q.dtype)
  q_rows = scaled.reshape(b, length, kv_heads, groups, dim).transpose(0, 2, 3, 1, 4)
  k_rows, v_rows = (x.transpose(0, 2, 1, 3) for x in (k, v))
  out = _per_shard(jax.vmap(one_row), (q_rows, k_rows, v_rows, segment_ids.astype(jnp.int32)),
                   _splash_specs(k_rows))
  return out.transpose(0, 3, 1, 2, 4).reshape(b, length, heads, dim)


def _splash_specs(k_rows):
  active = parallel.active()
  if active is None:
    return None
  mesh, rules = active
  kv = parallel.logical_to_spec(("batch", "kv_heads", None, None), k_rows.shape, mesh, rules)
  q = jax.sharding.PartitionSpec(kv[0], kv[1], None, None, None)
  return (q, kv, kv, jax.sharding.PartitionSpec(kv[0], None)), q


# --- cudnn (GPU) ---------------------------------------------------------------------------------


def packed_layout(segment_ids):
  """cuDNN's packed-row description: (offsets [batch, length + 1], lengths [batch, length]).

  Segment k of a row starts at offsets[k] and holds lengths[k] tokens, offsets[count] is the
  row's end, and unused entries are -1. Segments are contiguous runs, as packing writes them."""
  b, length = segment_ids.shape
  starts = jnp.concatenate([jnp.ones((b, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
                           axis=1)
  count = starts.sum(axis=1, keepdims=True)
  position = jnp.arange(length, dtype=jnp.int32)
  first = jnp.sort(jnp.where(starts, position, length), axis=1).astype(jnp.int32)  # starts, then L
  ends = jnp.concatenate([first[:, 1:], jnp.full((b, 1), length, jnp.int32)], axis=1)
  lengths = jnp.where(position < count, ends - first, -1)
  offsets = jnp.concatenate([first, jnp.full((b, 1), length, jnp.int32)], axis=1)
  offsets = jnp.where(jnp.arange(length + 1) <= count, offsets, -1)
  return offsets, lengths


def cudnn_problems(q, platform: str) -> list[str]:
  """Why cuDNN's flash attention cannot run these queries here (empty when it can)."""
  out = []
  if platform != "gpu":
    out.append(f"it needs an NVIDIA GPU and this run is on {platform}")
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    out.append(f"it computes in bfloat16 or float16, not {q.dtype} "
               "(set ModelConfig.compute_dtype = 'bfloat16')")
  if q.shape[-1] % 8 or q.shape[-1] > 256:
    out.append(f"head_dim {q.shape[-1]} must be a multiple of 8 and at most 256 (128 before "
               "Hopper)")
  return out


def cudnn(q, k, v, segment_ids):
  problems = cudnn_problems(q, jax.devices()[0].platform)
  if problems:
    raise ValueError("attention='cudnn' cannot run: " + "; ".join(problems)
                     + ". Use attention='blockwise' (any platform) or 'xla'.")
  from jax._src.cudnn import fused_attention_stablehlo as fused

  def run(q, k, v, segment_ids):
    offsets, lengths = packed_layout(segment_ids)
    return fused.dot_product_attention(
        q, k, v, q_seqlen=lengths, kv_seqlen=lengths, q_offsets=offsets, kv_offsets=offsets,
        scale=1.0 / math.sqrt(q.shape[-1]), mask_type=fused.MaskType.PADDING_CAUSAL)

  return _per_shard(run, (q, k, v, segment_ids), _cudnn_specs(q, k))


def _cudnn_specs(q, k):
  """Shard specs for q, k, v, segment ids and the output, or None without an active mesh. The
  query heads follow the KV heads' sharding, so every shard keeps whole groups."""
  active = parallel.active()
  if active is None:
    return None
  mesh, rules = active
  kv = parallel.logical_to_spec(_KV, k.shape, mesh, rules)
  batch = parallel.logical_to_spec(("batch",), q.shape[:1], mesh, rules)[0]
  qo = jax.sharding.PartitionSpec(batch, None, kv[2], None)
  return (qo, kv, kv, jax.sharding.PartitionSpec(batch, None)), qo


def _per_shard(fn, args, specs):
  """`fn` on each device's shard (a kernel is opaque to GSPMD) when `specs` = (in_specs,
  out_spec) is given, else plainly. The sequence is never split: these kernels see whole rows."""
  if specs is None:
    return fn(*args)
  mesh, _ = parallel.active()
  return jax.shard_map(fn, mesh=mesh, in_specs=specs[0], out_specs=specs[1],
                       check_vma=False)(*args)
