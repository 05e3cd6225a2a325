"""Per-host, deterministic, resumable numpy batches for training and evaluation.

The data is cut into `DataConfig.shards` disjoint shards (default: one per row of the global
batch). Each shard is its own walk: seqio mixture (documents j = s mod shards, repeated) ->
direction (assign_directions) -> shuffle (seeded buffer) -> pack. Global batch k is the
concatenation, in shard order, of global_batch/shards rows from every shard, and each host
builds only the rows of the shards it owns (a contiguous block, matching its block of the
batch-sharded global array). So batch k is a function of (config, k) alone: the same for 1, 2 or
4 hosts, and a run resumed on another process count sees exactly the batches it would have seen.
A resume goes on from the packers' state saved with the checkpoint (`TrainBatches.state`): for
prepared data (data/prepared.py, read by index) that costs the same at any position; for raw
sources the documents before the position are read again but not packed. Without a usable state
(another data config) it skips k batches, reading and packing them (no model work): about
k * rows * seq_len / (pipeline tokens/s). That skip-ahead path is also the tests' oracle.

Instruction data (tasks.ChatJsonl, tasks.DefaultInstructions) walks the same way, L2R only, with
its per-token loss mask packed beside the tokens; `seq_len` (TrainConfig.seq_len) reaches the
task, which fits each conversation into one row (data/chat.py), so a conversation is never
split across rows. Its batches have the same keys; loss_weights is 1 only where the next token
is part of an assistant reply.

Preference data (data/preference_tasks.py) walks the same way too: a pair is one document, so it
is never split across rows or hosts, and `preferences.split_pair_sides` then makes its chosen and
rejected answers segments 2k - 1 and 2k of the row; its batches add the per-token score_at,
pair_weight, pair_margin and pair_p_chosen that objectives/preference.py reads.
"""

import dataclasses
import itertools
import math

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf

from batgpt_jax.data import preferences, prepared, preprocessors, tasks
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.data import word_units
from batgpt_jax.data.tasks import DefaultCorpus


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What to read and how: the source mixture, the direction mode, the tokenizer."""

  sources: tuple = ((DefaultCorpus(), 1.0),)  # (source, rate) pairs: the mixture
  direction_mode: str = "both"  # 'both' | 'sample' | 'l2r'
  r2l_unit: str = "token"  # 'token' | 'word': what an R2L document reverses (data/word_units.py)
  seed: int = 0
  vocab_path: str | None = None  # None: the default vocabulary, trained on the embedded corpus
  vocab_size: int = 2048  # only for the default vocabulary
  shuffle_buffer: int = 10_000  # documents, over all shards
  shards: int = 0  # independent data shards; 0 = one per global-batch row. Hosts must divide it.

  def __post_init__(self):
    # gin gives lists; keep the config hashable and comparable.
    object.__setattr__(self, "sources", tuple(tuple(pair) for pair in self.sources))
    if self.direction_mode not in preprocessors.DIRECTION_MODES:
      raise ValueError(f"DataConfig.direction_mode={self.direction_mode!r}; expected one of "
                       f"{preprocessors.DIRECTION_MODES}.")
    word_units.check_unit(self.r2l_unit, "DataConfig.r2l_unit")
    chat_sources = [s for s, _ in self.sources if tasks.source_kind(s) != "pretrain"]
    if chat_sources and self.direction_mode != "l2r":
      # Chat is read and generated left to right: an R2L conversation would teach replies that
      # come before their questions. Refused rather than forced: the default is 'both', and a
      # run that silently trained on another mode than its config says is harder to debug.
      raise ValueError(f"DataConfig.direction_mode={self.direction_mode!r} with instruction "
                       f"data {chat_sources}; instruction data is L2R only. Set "
                       "DataConfig.direction_mode = 'l2r'.")
    if self.shards < 0:
      raise ValueError(f"DataConfig.shards={self.shards}; use 0 (one per global-batch row) or a "
                       "positive divisor of TrainConfig.global_batch.")
    if self.shuffle_buffer < 1:
      raise ValueError(f"DataConfig.shuffle_buffer={self.shuffle_buffer}; it must be >= 1 "
                       "(1 = no shuffling).")


def vocabulary_for(cfg: DataConfig):
  """The configured tokenizer, or the default one (trained on first use, then cached)."""
  if cfg.vocab_path:
    return vocab_lib.load_vocabulary(cfg.vocab_path)
  return vocab_lib.default_vocabulary(cfg.vocab_size)


@dataclasses.dataclass(frozen=True)
class ShardLayout:
  """Which data shards this host reads, and how many rows each gives per global batch."""

  shards: tuple[int, ...]  # this host's shard ids, a contiguous block
  num_shards: int
  rows_per_shard: int
  host: int
  hosts: int


def shard_layout(cfg: DataConfig, global_batch: int, process_index: int | None = None,
                 process_count: int | None = None) -> ShardLayout:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f"process_index={index} is outside [0, process_count={count}).")
  num_shards = cfg.shards or global_batch
  if global_batch % num_shards:
    raise ValueError(f"DataConfig.shards={num_shards} does not divide the global batch of "
                     f"{global_batch} rows; use a divisor of it (or 0: one shard per row).")
  if num_shards % count:
    raise ValueError(
        f"{count} hosts cannot split DataConfig.shards={num_shards} data shards evenly (global "
        f"batch {global_batch}); use a shard count (and global batch) that is a multiple of "
        f"{count}.")
  per_host = num_shards // count
  return ShardLayout(tuple(range(index * per_host, (index + 1) * per_host)), num_shards,
                     global_batch // num_shards, index, count)


def _prepared_mixture(cfg: DataConfig, vocabulary, *, split: str, mode: str, shuffle: bool,
                      seq_len: int):
  """The prepared sources' mixture, checked against this run once; None for raw sources."""
  if not prepared.all_prepared(cfg.sources):
    return None
  for source, _ in cfg.sources:
    prepared.check_usable(source, vocabulary, seq_len)
  return prepared.mixture(cfg.sources, split=split, mode=mode, seed=cfg.seed, shuffle=shuffle,
                          **_direction_args(cfg, vocabulary))


def _direction_args(cfg: DataConfig, vocabulary) -> dict:
  """What directing a document needs: the direction ids, the R2L unit and its word table."""
  l2r_id, r2l_id = vocab_lib.direction_ids(vocabulary)
  starts = word_units.word_start_table(vocabulary) if cfg.r2l_unit == "word" else None
  return dict(l2r_id=l2r_id, r2l_id=r2l_id, unit=cfg.r2l_unit, word_starts=starts)


def _packed_rows(cfg: DataConfig, vocabulary, *, split: str, mode: str, shuffle: bool,
                 seq_len: int, shard: int, num_shards: int, mixture,
                 state: dict | None = None) -> preprocessors.PackedRows:
  """Data shard `shard` of `num_shards`, packed: of the prepared `mixture` (from
  `_prepared_mixture`) by index, or of the raw sources through seqio when it is None."""
  if mixture is not None:
    elements = mixture[shard::num_shards]
    return preprocessors.PackedRows(
        lambda start: (elements[e] for e in itertools.count(start)), seq_len, state)
  name = tasks.register_mixture(cfg.sources, vocabulary, seq_len=seq_len)
  documents = seqio.get_mixture_or_task(name).get_dataset(
      sequence_length=None, split=split, shuffle=False, seed=cfg.seed + shard,
      shard_info=seqio.ShardInfo(index=shard, num_shards=num_shards), num_epochs=None,
      trim_output_features=False)  # [n] int32 token ids per document, ending in EOS
  directed = preprocessors.assign_directions(documents, mode=mode, seed=cfg.seed,
                                             **_direction_args(cfg, vocabulary))
  buffer = math.ceil(cfg.shuffle_buffer / num_shards)
  if shuffle and buffer > 1:
    directed = directed.shuffle(buffer, seed=cfg.seed * 1_000_003 + shard)
  # One reader thread a shard: with tf.data's autotuned parallel maps, tearing down a shard's
  # half-read iterator took ~0.3 s (5 s for 16 shards, 17 s a process at the end of a 2-process
  # run); without them 0.02 s. A shard's tokenisation is not the bottleneck (see make bench).
  options = tf.data.Options()
  options.autotune.enabled = False
  options.experimental_optimization.map_parallelization = False
  return preprocessors.pack(directed.with_options(options), seq_len, state)  # rows [seq_len]


def _row_fields(cfg: DataConfig):
  """What a packed row becomes before it is batched: preference rows get their pair sides."""
  if tasks.source_kind(cfg.sources[0][0]) == "preference":  # one kind per mixture
    return preferences.split_pair_sides
  return lambda row: row


def _out_of_data(cfg: DataConfig, layout: ShardLayout) -> ValueError:
  return ValueError(
      f"The train split of {cfg.sources} gave no documents to one of the data shards "
      f"{layout.shards[0]}..{layout.shards[-1]} (of {layout.num_shards}) read by host "
      f"{layout.host} of {layout.hosts}. Add data, or use fewer shards (DataConfig.shards).")


def resume_key(cfg: DataConfig, vocabulary, *, seq_len: int, global_batch: int) -> str:
  """What a saved packer state is valid for: the data config, vocabulary, row length and batch.

  A checkpoint's packer state is used only when this key matches; otherwise (the sources or
  the batch changed) the run resumes by reading its data position again from the start.
  """
  return tasks.digest(repr(cfg), tasks.vocabulary_digest(vocabulary), seq_len, global_batch)


class TrainBatches:
  """This host's rows of each training batch, forever: an iterator with a resumable state.

  `state()` is the packer state of each of this host's data shards after the last batch
  returned ({name: [shards of this host, ...]}, see preprocessors.PackedRows.state); a
  checkpoint saves it, every host its own shards, and `train_batches(..., resume=...)` goes on
  from it on any host count that divides the shards.
  """

  def __init__(self, streams: list, layout: ShardLayout, row_fields, r2l_id: int, error):
    self._streams, self._layout = streams, layout
    self._row_fields, self._r2l_id, self._error = row_fields, r2l_id, error

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rows = []
    for stream in self._streams:
      for _ in range(self._layout.rows_per_shard):
        row = next(stream, None)
        if row is None:  # a shard ran dry: only an empty source does that (sources repeat)
          raise self._error
        rows.append(self._row_fields(row))
    batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}  # [rows, seq_len]
    return preprocessors.make_targets(batch, self._r2l_id)

  def skip(self, batches: int) -> None:
    """Reads and packs `batches` batches without building them: the resume without a state."""
    for stream in self._streams:
      for _ in range(batches * self._layout.rows_per_shard):
        if next(stream, None) is None:
          raise self._error

  def state(self) -> dict[str, np.ndarray]:
    states = [stream.state() for stream in self._streams]
    return {name: np.stack([s[name] for s in states]) for name in states[0]}


def train_batches(cfg: DataConfig, vocabulary, *, seq_len: int, global_batch: int,
                  start_position: int = 0, resume: dict | None = None,
                  process_index: int | None = None,
                  process_count: int | None = None) -> TrainBatches:
  """This host's rows of each training batch, forever, from batch number `start_position`.

  Each batch: tokens, targets, segment_ids, positions, directions int32 [b, L] and
  loss_weights float32 [b, L], with b = global_batch // process_count. With `resume` (this
  host's block of a saved `TrainBatches.state()`, taken at `start_position`) the packers go on
  from there: for prepared data that costs the same at any position. Without it the first
  `start_position` batches are read and packed again (the skip-ahead path).
  """
  layout = shard_layout(cfg, global_batch, process_index, process_count)
  if start_position < 0:
    raise ValueError(f"start_position={start_position}; it counts consumed batches, >= 0.")
  _, r2l_id = vocab_lib.direction_ids(vocabulary)
  if resume is not None:
    shards = {len(values) for values in resume.values()}
    if shards != {len(layout.shards)}:
      raise ValueError(f"The packer state holds {sorted(shards)} data shards; host "
                       f"{layout.host} reads {len(layout.shards)}.")
  read = dict(split="train", mode=cfg.direction_mode, shuffle=True, seq_len=seq_len)
  mixture = _prepared_mixture(cfg, vocabulary, **read)
  streams = [_packed_rows(cfg, vocabulary, **read, shard=s, num_shards=layout.num_shards,
                          mixture=mixture, state=None if resume is None else
                          {name: values[i] for name, values in resume.items()})
             for i, s in enumerate(layout.shards)]  # built now, so a bad source fails here
  batches = TrainBatches(streams, layout, _row_fields(cfg), r2l_id, _out_of_data(cfg, layout))
  if resume is None:
    batches.skip(start_position)
  return batches


def eval_batches(cfg: DataConfig, vocabulary, *, seq_len: int, global_batch: int,
                 num_batches: int, process_index: int | None = None,
                 process_count: int | None = None) -> list[dict[str, np.ndarray]]:
  """`num_batches` of this host's rows from the held-out split: unshuffled, the same each call.

  The held-out split is read as one stream (not in data shards): a small split still fills
  every row, and the batches are the same for any process count. Each host packs the first
  num_batches * global_batch rows and keeps its block, so its reading is bounded by the eval
  size, not the split. Both directions are evaluated unless the run trains L2R only; a small
  split is cycled.
  """
  layout = shard_layout(cfg, global_batch, process_index, process_count)
  rows = global_batch // layout.hosts
  mode = "l2r" if cfg.direction_mode == "l2r" else "both"
  read = dict(split="validation", mode=mode, shuffle=False, seq_len=seq_len)
  stream = map(_row_fields(cfg), _packed_rows(
      cfg, vocabulary, **read, shard=0, num_shards=1,
      mixture=_prepared_mixture(cfg, vocabulary, **read)))
  _, r2l_id = vocab_lib.direction_ids(vocabulary)
  mine = slice(layout.host * rows, (layout.host + 1) * rows)
  batches = []
  for _ in range(num_batches):
    batch = list(itertools.islice(stream, global_batch))[mine]
    if len(batch) < rows:
      break
    batches.append(preprocessors.make_targets(
        {key: np.stack([row[key] for row in batch]) for key in batch[0]}, r2l_id))
  if len(batches) < num_batches:
    raise ValueError(f"The validation split of {cfg.sources} has no documents. Add data, or "
                     "set TrainConfig.eval_every = 0 to train without evaluation.")
  return batches
