"""Preference sources (PreferenceJsonl, PlantedPreferences) as seqio Tasks of pair documents.

A Task's examples are data/preferences.py's pair documents: 'targets' (both sides, ending in
EOS) and the per-token `preferences.PAIR_FIELDS`. Like instruction data they depend on the
sequence length (both sides of a pair must fit in one row), so the pipeline passes
TrainConfig.seq_len; a pair that does not fit even with its history dropped is SKIPPED and
COUNTED (`skipped_pair_count()`), logged with its file:line.

Mixtures. Preference sources mix with each other by rate through DataConfig.sources, e.g. human
and AI labels: `[(@human/PreferenceJsonl(), 0.7), (@ai/PreferenceJsonl(), 0.3)]`; a record's
`weight` then scales its share of the loss. They do not mix with pretraining or instruction
sources (another set of output features).

Splits and shards follow the file sources of data/tasks.py: record i of each JSONL file is held
out when i % validation_split.eval_every == 0; whole files per data shard when there are enough
of them, else every num_shards-th record. PlantedPreferences has its own held-out file. A line
that is not valid UTF-8 or JSON is skipped and counted; a JSON record that is not a pair raises,
naming file:line and the fix (registration reads the first 10,000, so most show at once).
"""

import dataclasses
import functools
import itertools
import random
from typing import Iterator

import gin
import numpy as np
import seqio
import tensorflow as tf

from batgpt_jax.data import planted, preferences, tasks
from batgpt_jax.data import vocab as vocab_lib

SKIP_REASON = "preference pair too long"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PreferenceJsonl:
  """Preference pairs in JSONL files matching `file_pattern` (globs, comma-separated).

  format: 'auto', 'schema', 'trl' or 'hh' (data/preferences.py).
  """

  file_pattern: str
  format: str = "auto"

  def __post_init__(self):
    if self.format not in preferences.FORMATS:
      raise ValueError(f"PreferenceJsonl.format={self.format!r}; expected one of "
                       f"{preferences.FORMATS}.")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PlantedPreferences:
  """A planted-preference set shipped in the package (data/planted): 'sort_swap' or
  'sort_length'; 'validation' is its held-out file.

  Label noise, for robustness studies: `flip_share` of the TRAIN pairs (chosen by a seeded
  draw per record) have chosen and rejected swapped, and every train pair carries the soft
  label `p_chosen`. The validation split is never flipped and keeps p_chosen 1.
  """

  family: str = "sort_swap"
  flip_share: float = 0.0
  p_chosen: float = 1.0

  def __post_init__(self):
    planted.path_of(self.family, "train")  # raises, naming the families
    if not 0.0 <= self.flip_share < 0.5 or not 0.5 < self.p_chosen <= 1.0:
      raise ValueError(f"PlantedPreferences.flip_share={self.flip_share} and p_chosen="
                       f"{self.p_chosen}; expected flip_share in [0, 0.5) and p_chosen in "
                       "(0.5, 1] (e.g. 0.2 and 0.8: the labels are right 80% of the time).")


SOURCES = (PreferenceJsonl, PlantedPreferences)


def skipped_pair_count() -> int:
  """Distinct pairs skipped so far because their two sides do not fit in one row."""
  return tasks.skipped_count(SKIP_REASON)


# --- raw pairs: (where, preferences.Pair) -------------------------------------------------------

def _jsonl_pairs(source: PreferenceJsonl, path: str) -> Iterator[tuple[str, preferences.Pair]]:
  for lineno, record in tasks.jsonl_records(path):
    where = f"{path}:{lineno}"
    yield where, preferences.pair_from_record(record, source.format, where)


@functools.lru_cache(maxsize=None)
def _planted_pairs(family: str, split: str) -> tuple[tuple[str, preferences.Pair], ...]:
  return tuple((where, preferences.pair_from_record(record, "schema", where))
               for where, record in planted.read_records(family, split))


def planted_pairs(source: PlantedPreferences,
                  split: str) -> tuple[tuple[str, preferences.Pair], ...]:
  """The pairs of a planted split, with the source's label noise on the train split."""
  pairs = _planted_pairs(source.family, split)
  if split != "train" or (source.flip_share == 0 and source.p_chosen == 1):
    return pairs
  noisy = []
  for i, (where, pair) in enumerate(pairs):
    if random.Random(i).random() < source.flip_share:
      pair = dataclasses.replace(pair, chosen=pair.rejected, rejected=pair.chosen)
    noisy.append((where, dataclasses.replace(pair, p_chosen=source.p_chosen)))
  return tuple(noisy)


def raw_pairs(source, split: str, index: int = 0,
              num_shards: int = 1) -> Iterator[tuple[str, preferences.Pair]]:
  """(file:line, Pair) of data shard `index` of `num_shards` of a preference split."""
  if split not in tasks.SPLITS:
    raise ValueError(f"split={split!r}; expected one of {tasks.SPLITS}.")
  if isinstance(source, PlantedPreferences):
    yield from tasks.every_nth(iter(planted_pairs(source, split)), index, num_shards)
  elif isinstance(source, PreferenceJsonl):
    yield from tasks.shard_of_files(tasks.matching_files(source.file_pattern),
                                    functools.partial(_jsonl_pairs, source), split, index,
                                    num_shards)
  else:
    raise TypeError(f"Expected a PreferenceJsonl or PlantedPreferences source, found {source!r}.")


def pair_examples(source, vocabulary, split: str, *, seq_len: int, index: int = 0,
                  num_shards: int = 1) -> Iterator[dict]:
  """The pair documents of a shard (preferences.pair_example), fitted to seq_len."""
  l2r_id, _ = vocab_lib.direction_ids(vocabulary)
  for where, pair in raw_pairs(source, split, index, num_shards):
    example = preferences.pair_example(vocabulary, pair, seq_len=seq_len,
                                       eos_id=vocab_lib.EOS_ID, l2r_id=l2r_id)
    if example is None:
      path, lineno = where.rsplit(":", 1)
      tasks.skip_line(SKIP_REASON, path, int(lineno),
                      f"its two answers and last prompt need more than seq_len={seq_len} "
                      "tokens together; raise TrainConfig.seq_len or shorten them")
      continue
    yield example


# --- checks at registration and the seqio Task --------------------------------------------------

_CHECK_RECORDS = 10_000


def _all_pairs(source) -> Iterator[tuple[str, preferences.Pair]]:
  if isinstance(source, PlantedPreferences):
    for split in tasks.SPLITS:
      yield from planted_pairs(source, split)
    return
  for path in tasks.matching_files(source.file_pattern):
    yield from _jsonl_pairs(source, path)


def _check_pairs(source, vocabulary) -> None:
  if isinstance(source, PreferenceJsonl) and not tasks.matching_files(source.file_pattern):
    raise ValueError(f"{tasks.describe(source)}: no file matches {source.file_pattern!r}. Set "
                     "PreferenceJsonl.file_pattern to existing JSONL files (globs, "
                     "comma-separated).")
  first = [pair for _, pair in itertools.islice(_all_pairs(source), _CHECK_RECORDS)]
  if len(first) < 2:
    raise ValueError(f"{tasks.describe(source)} has {len(first)} pair(s); it needs at least 2 "
                     "(record 0 of each file is held out for validation, the rest are for "
                     "training). Point it at JSONL files with preference pairs.")
  preferences.chat.rendered(vocabulary, first[0].side(first[0].chosen))  # the tokenizer fits


_EXAMPLES_PER_CALL = 64
_FEATURES = ("targets",) + preferences.PAIR_FIELDS


def _dtype(name: str):
  return tf.float32 if name in preferences.FLOAT_FIELDS else tf.int32


def _example_batches(examples: Iterator[dict]) -> Iterator[dict[str, np.ndarray]]:
  """Consecutive examples concatenated, with their lengths: one Python call per 64 examples."""
  while chunk := list(itertools.islice(examples, _EXAMPLES_PER_CALL)):
    out = {name: np.concatenate([e[name] for e in chunk]) for name in _FEATURES}
    out["lengths"] = np.asarray([len(e["targets"]) for e in chunk], np.int64)
    yield out


def _pair_dataset(split: str, shuffle_files: bool, *, source, vocabulary, seq_len: int,
                  shard_info: seqio.ShardInfo | None = None) -> tf.data.Dataset:
  del shuffle_files  # order is fixed; the pipeline shuffles pairs
  index, num_shards = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
  examples = functools.partial(pair_examples, source, vocabulary, split, seq_len=seq_len,
                               index=index, num_shards=num_shards)
  signature = {name: tf.TensorSpec((None,), _dtype(name)) for name in _FEATURES}
  signature["lengths"] = tf.TensorSpec((None,), tf.int64)
  batches = tf.data.Dataset.from_generator(lambda: _example_batches(examples()),
                                           output_signature=signature)
  return batches.map(_ragged_examples).unbatch()


def _ragged_examples(batch: dict) -> dict:
  return {name: tf.RaggedTensor.from_row_lengths(batch[name], batch["lengths"])
          for name in _FEATURES}


def register_task(source, vocabulary, *, seq_len: int | None) -> str:
  """Registers (once) the Task of a preference source fitted to `seq_len`; returns its name."""
  if seq_len is None or seq_len < 8:
    raise ValueError(f"{tasks.describe(source)} is preference data: both answers of a pair are "
                     f"fitted into one row, so register it with seq_len >= 8 (found {seq_len}; "
                     "the pipeline passes TrainConfig.seq_len).")
  every = None if isinstance(source, PlantedPreferences) else tasks.validation_split()
  key = tasks.digest(tasks.describe(source), every, seq_len, tasks.vocabulary_digest(vocabulary))
  name = f"batgpt_{type(source).__name__.lower()}_{key}"
  if name in seqio.TaskRegistry.names():
    return name
  _check_pairs(source, vocabulary)
  features = {"targets": seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)}
  features.update({name: seqio.Feature(seqio.PassThroughVocabulary(2), add_eos=False,
                                       dtype=_dtype(name)) for name in preferences.PAIR_FIELDS})
  seqio.TaskRegistry.add(
      name, source=tasks.ShardedFunctionSource(
          functools.partial(_pair_dataset, source=source, vocabulary=vocabulary,
                            seq_len=seq_len), splits=tasks.SPLITS),
      preprocessors=[],  # rendered and tokenized by pair_examples
      output_features=features)
  return name
