"""Per-host, deterministic, resumable numpy batches for training and evaluation.

The walk of a document: seqio mixture (this host's share, repeated) -> direction
(assign_directions) -> shuffle (seeded buffer) -> pack -> batch of this host's rows -> numpy
targets. Every step is deterministic for a seed, so batch k is a function of (config, host, k)
and resuming at data position k skips k batches to see exactly what an uninterrupted run saw.
Skipping still reads and packs those batches (no model work): expect it to take
k * rows * seq_len / (pipeline tokens/s).
"""

import dataclasses
from typing import Iterator

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf

from batgpt_jax.data import preprocessors, tasks, vocab as vocab_lib
from batgpt_jax.data.tasks import DefaultCorpus


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What to read and how: the source mixture, the direction mode, the tokenizer."""

  sources: tuple = ((DefaultCorpus(), 1.0),)  # (source, rate) pairs: the mixture
  direction_mode: str = "both"  # 'both' | 'sample' | 'l2r'
  seed: int = 0
  vocab_path: str | None = None  # None: the default vocabulary, trained on the embedded corpus
  vocab_size: int = 2048  # only for the default vocabulary
  shuffle_buffer: int = 10_000  # documents

  def __post_init__(self):
    # gin gives lists; keep the config hashable and comparable.
    object.__setattr__(self, "sources", tuple(tuple(pair) for pair in self.sources))
    if self.direction_mode not in preprocessors.DIRECTION_MODES:
      raise ValueError(f"DataConfig.direction_mode={self.direction_mode!r}; expected one of "
                       f"{preprocessors.DIRECTION_MODES}.")
    if self.shuffle_buffer < 1:
      raise ValueError(f"DataConfig.shuffle_buffer={self.shuffle_buffer}; it must be >= 1 "
                       "(1 = no shuffling).")


def vocabulary_for(cfg: DataConfig):
  """The configured tokenizer, or the default one (trained on first use, then cached)."""
  if cfg.vocab_path:
    return vocab_lib.load_vocabulary(cfg.vocab_path)
  return vocab_lib.default_vocabulary(cfg.vocab_size)


def _host(process_index, process_count, global_batch: int) -> tuple[int, int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f"process_index={index} is outside [0, process_count={count}).")
  if global_batch % count:
    raise ValueError(f"global_batch={global_batch} is not divisible by the {count} hosts; "
                     f"use a multiple of {count}.")
  return index, count, global_batch // count


def _packed_rows(cfg: DataConfig, vocabulary, *, split: str, mode: str, shuffle: bool,
                 seq_len: int, index: int, count: int) -> tf.data.Dataset:
  name = tasks.register_mixture(cfg.sources, vocabulary)
  documents = seqio.get_mixture_or_task(name).get_dataset(
      sequence_length=None, split=split, shuffle=False, seed=cfg.seed,
      shard_info=seqio.ShardInfo(index=index, num_shards=count), num_epochs=None,
      trim_output_features=False)  # [n] int32 token ids per document, ending in EOS
  l2r_id, r2l_id = vocab_lib.direction_ids(vocabulary)
  directed = preprocessors.assign_directions(documents, mode=mode, seed=cfg.seed,
                                             l2r_id=l2r_id, r2l_id=r2l_id)
  if shuffle and cfg.shuffle_buffer > 1:
    directed = directed.shuffle(cfg.shuffle_buffer, seed=cfg.seed)
  return preprocessors.pack(directed, seq_len)  # rows of [seq_len]


def _out_of_data(split: str, cfg: DataConfig, index: int, count: int) -> ValueError:
  return ValueError(f"The {split} split of {cfg.sources} gave host {index} of {count} no "
                    "documents. Add data, or use fewer hosts than documents.")


def train_batches(cfg: DataConfig, vocabulary, *, seq_len: int, global_batch: int,
                  start_position: int = 0, process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This host's rows of each training batch, forever, from batch number `start_position`.

  Each batch: tokens, targets, segment_ids, positions, directions int32 [b, L] and
  loss_weights float32 [b, L], with b = global_batch // process_count.
  """
  index, count, rows = _host(process_index, process_count, global_batch)
  if start_position < 0:
    raise ValueError(f"start_position={start_position}; it counts consumed batches, >= 0.")
  packed = _packed_rows(cfg, vocabulary, split="train", mode=cfg.direction_mode, shuffle=True,
                        seq_len=seq_len, index=index, count=count)
  batched = packed.batch(rows, drop_remainder=True).skip(start_position).prefetch(2)
  _, r2l_id = vocab_lib.direction_ids(vocabulary)

  def generate():
    for batch in batched.as_numpy_iterator():
      yield preprocessors.make_targets(batch, r2l_id)  # [rows, seq_len] each
    raise _out_of_data("train", cfg, index, count)

  return generate()


def eval_batches(cfg: DataConfig, vocabulary, *, seq_len: int, global_batch: int,
                 num_batches: int, process_index: int | None = None,
                 process_count: int | None = None) -> list[dict[str, np.ndarray]]:
  """`num_batches` of this host's rows from the held-out split: unshuffled, the same each call.

  Both directions are evaluated unless the run trains L2R only; a small split is cycled.
  """
  index, count, rows = _host(process_index, process_count, global_batch)
  mode = "l2r" if cfg.direction_mode == "l2r" else "both"
  packed = _packed_rows(cfg, vocabulary, split="validation", mode=mode, shuffle=False,
                        seq_len=seq_len, index=index, count=count)
  _, r2l_id = vocab_lib.direction_ids(vocabulary)
  batches = [preprocessors.make_targets(batch, r2l_id) for batch in
             packed.batch(rows, drop_remainder=True).take(num_batches).as_numpy_iterator()]
  if len(batches) < num_batches:
    raise _out_of_data("validation", cfg, index, count)
  return batches
