"""Packing instruction data leaks nothing: the masked loss of a packed batch equals the loss of
the same conversations one at a time; loss_mask is carried through directions and packing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from batgpt_jax.data import chat, preprocessors, vocab
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig

SEQ_LEN = 256


def _conversations() -> list[chat.Conversation]:
  words = "the cat dog bird river town market baker sells bread".split()
  out = []
  for i in range(9):
    turns = tuple((f"Say {words[(i + t) % 10]} {t}", f"{words[(i + 2 * t) % 10]} {i}")
                  for t in range(1 + i % 3))
    out.append(chat.Conversation(turns, "Be brief." if i % 2 else None))
  return out


def _examples(vocabulary):
  return [chat.training_example(vocabulary, c, seq_len=SEQ_LEN, eos_id=vocab.EOS_ID)
          for c in _conversations()]


def _dataset(examples) -> tf.data.Dataset:
  return tf.data.Dataset.from_generator(
      lambda: iter(examples), output_signature={"targets": tf.TensorSpec((None,), tf.int32),
                                                "loss_mask": tf.TensorSpec((None,), tf.int32)})


def _batches(vocabulary, examples, seq_len):
  l2r_id, r2l_id = vocab.direction_ids(vocabulary)
  directed = preprocessors.assign_directions(_dataset(examples), mode="l2r", seed=0,
                                             l2r_id=l2r_id, r2l_id=r2l_id)
  rows = list(preprocessors.pack(directed, seq_len))
  return preprocessors.make_targets({k: np.stack([r[k] for r in rows]) for k in rows[0]},
                                    r2l_id)


@functools.partial(jax.jit, static_argnums=0)
def _sums(cfg, params, tokens, positions, segment_ids, targets, weights):
  logits = transformer.apply(cfg, params, tokens, positions, segment_ids)  # [b, L, vocab]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [b, L]
  return jnp.sum(nll * weights), jnp.sum(weights)


def _loss_sums(cfg, params, batch):
  """(sum of the masked token cross-entropy, sum of the weights) of a batch."""
  loss_sum, weight = _sums(cfg, params, *(jnp.asarray(batch[k]) for k in (
      "tokens", "positions", "segment_ids", "targets", "loss_weights")))
  return float(loss_sum), float(weight)


def test_packed_loss_equals_the_conversations_alone(data_tiny_vocab):
  examples = _examples(data_tiny_vocab)
  packed = _batches(data_tiny_vocab, examples, SEQ_LEN)
  assert packed["tokens"].shape[0] < len(examples)  # several conversations share rows
  assert packed["segment_ids"].max() >= 3
  cfg = ModelConfig()
  params = jax.jit(transformer.init_params, static_argnums=(0, 1))(cfg, 0)  # faster than eager
  # Padding rows (segment 0 throughout) give both batches one shape: one compilation.
  padded = {k: np.concatenate([v, np.zeros((len(examples) - len(v), SEQ_LEN), v.dtype)])
            for k, v in packed.items()}
  loss_sum, weight = _loss_sums(cfg, params, padded)
  # Each conversation alone in its own row (one segment, then padding), all rows in one call.
  alone = [_batches(data_tiny_vocab, [example], SEQ_LEN) for example in examples]
  assert all(b["segment_ids"].max() == 1 for b in alone)
  alone_sum, alone_weight = _loss_sums(cfg, params, {k: np.concatenate([b[k] for b in alone])
                                                     for k in alone[0]})
  assert weight == alone_weight == sum(int(e["loss_mask"].sum()) for e in examples)
  assert abs(loss_sum / weight - alone_sum / alone_weight) < 1e-5
  assert 5.0 < loss_sum / weight < 9.0  # a random model: about log(vocab_size) = 7.6


def test_loss_mask_through_directions_and_packing():
  docs = [{"targets": [10, 11, 12, 1], "loss_mask": [0, 1, 1, 0]},
          {"targets": [20, 21, 1], "loss_mask": [1, 0, 0]}]
  ds = tf.data.Dataset.from_generator(
      lambda: iter(docs), output_signature={"targets": tf.TensorSpec((None,), tf.int32),
                                            "loss_mask": tf.TensorSpec((None,), tf.int32)})
  both = preprocessors.assign_directions(ds, mode="both", seed=0, l2r_id=3, r2l_id=4)
  directed = [{k: v.tolist() if k != "direction" else int(v) for k, v in d.items()}
              for d in both.as_numpy_iterator()]
  assert directed[0] == {"targets": [3, 10, 11, 12, 1], "loss_mask": [0, 0, 1, 1, 0],
                         "direction": 0}
  assert directed[1] == {"targets": [4, 12, 11, 10, 1], "loss_mask": [0, 1, 1, 0, 0],
                         "direction": 1}  # reversed like the tokens, EOS kept last
  (row,) = list(preprocessors.pack(
      preprocessors.assign_directions(ds, mode="l2r", seed=0, l2r_id=3, r2l_id=4), 12))
  assert row["tokens"].tolist() == [3, 10, 11, 12, 1, 3, 20, 21, 1, 0, 0, 0]
  assert row["loss_mask"].tolist() == [0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0]
  assert row["segment_ids"].tolist() == [1] * 5 + [2] * 4 + [0] * 3
  assert row["positions"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 0]
  batch = preprocessors.make_targets({k: v[None] for k, v in row.items()}, 4)
  # i is trained iff token i+1 is masked in and in the same segment.
  assert batch["loss_weights"][0].tolist() == [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
  assert batch["targets"][0].tolist() == [0, 11, 12, 0, 0, 20, 0, 0, 0, 0, 0, 0]
  assert "loss_mask" not in batch
  # A field that does not match the tokens is refused.
  try:
    list(preprocessors.pack_documents([{"targets": [5, 1], "loss_mask": [1]}], 8))
  except ValueError as err:
    assert "Per-token field 'loss_mask' has shape (1,)" in str(err)
  else:
    raise AssertionError("expected a ValueError")
