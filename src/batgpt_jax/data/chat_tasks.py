"""Instruction sources (tasks.ChatJsonl, tasks.DefaultInstructions) as seqio Tasks.

Their Tasks output 'targets' (token ids ending in EOS) and 'loss_mask' (int32, one per target: 1
on assistant replies and their <eop>, see data/chat.py). They depend on the sequence length: a
conversation is rendered and tokenized in Python, then fitted to `seq_len` by dropping its
oldest turns (`chat.training_example`). The pipeline passes `TrainConfig.seq_len` through
`tasks.register_mixture`, so one gin setting decides both the rows and the truncation, and a
conversation is never split across rows.

Splits and shards follow the file sources of data/tasks.py: record i of each JSONL file is held
out when i % validation_split.eval_every == 0; whole files per data shard when there are enough
of them, else every num_shards-th record. DefaultInstructions has its own held-out file.

Bad input. A line that is not valid UTF-8 or not valid JSON is skipped and counted, as for the
other file sources. A conversation that does not fit in seq_len even with only its system
prompt and last turn is SKIPPED and COUNTED (`tasks.overlong_conversation_count()`), logged
with its file:line. A record that is valid JSON but not a conversation (data/chat_records.py)
raises, naming file:line and the fix; registration parses the first 10,000 records, so most such
errors show before the first batch.
"""

import functools
import itertools
from typing import Iterator

import numpy as np
import seqio
import tensorflow as tf

from batgpt_jax.data import chat, chat_records, instructions, tasks
from batgpt_jax.data.vocab import EOS_ID

# ---------------------------------------------------------------------------------------------
# Raw conversations: (where, chat.Conversation), where = 'file:line'.

def _jsonl_conversations(source: tasks.ChatJsonl,
                         path: str) -> Iterator[tuple[str, chat.Conversation]]:
  for lineno, record in tasks.jsonl_records(path):
    where = f"{path}:{lineno}"
    yield where, chat_records.conversation_from_record(record, source.format, where)


@functools.lru_cache(maxsize=None)
def _default_conversations(split: str) -> tuple[tuple[str, chat.Conversation], ...]:
  # Parsed once per process: every data shard reads the whole (small) file, every epoch.
  return tuple((where, chat_records.conversation_from_record(record, "messages", where))
               for where, record in instructions.read_default_records(split))


def raw_conversations(source, split: str, index: int = 0,
                      num_shards: int = 1) -> Iterator[tuple[str, chat.Conversation]]:
  """(file:line, Conversation) of data shard `index` of `num_shards` of an instruction split."""
  if split not in tasks.SPLITS:
    raise ValueError(f"split={split!r}; expected one of {tasks.SPLITS}.")
  if isinstance(source, tasks.DefaultInstructions):
    yield from tasks.every_nth(iter(_default_conversations(split)), index, num_shards)
  elif isinstance(source, tasks.ChatJsonl):
    yield from tasks.shard_of_files(tasks.matching_files(source.file_pattern),
                                    functools.partial(_jsonl_conversations, source), split,
                                    index, num_shards)
  else:
    raise TypeError(f"Expected a ChatJsonl or DefaultInstructions source, found {source!r}.")


def chat_examples(source, vocabulary, split: str, *, seq_len: int, index: int = 0,
                  num_shards: int = 1) -> Iterator[dict]:
  """{'targets', 'loss_mask'} of each conversation of the shard, fitted to seq_len."""
  for where, conversation in raw_conversations(source, split, index, num_shards):
    example = chat.training_example(vocabulary, conversation, seq_len=seq_len, eos_id=EOS_ID,
                                    last_turn_only=source.last_turn_only)
    if example is None:
      path, lineno = where.rsplit(":", 1)
      tasks.skip_line("conversation too long", path, int(lineno),
                      f"its system prompt and last turn need more than seq_len={seq_len} "
                      "tokens; raise TrainConfig.seq_len or shorten it")
      continue
    yield example


# ---------------------------------------------------------------------------------------------
# Checks at registration and the seqio Task.

_CHECK_RECORDS = 10_000  # records parsed at registration, so most format errors show at once


def _all_conversations(source) -> Iterator[tuple[str, chat.Conversation]]:
  if isinstance(source, tasks.DefaultInstructions):
    for split in tasks.SPLITS:
      yield from _default_conversations(split)
    return
  for path in tasks.matching_files(source.file_pattern):
    yield from _jsonl_conversations(source, path)


def _check_conversations(source, vocabulary) -> None:
  if isinstance(source, tasks.ChatJsonl) and not tasks.matching_files(source.file_pattern):
    raise ValueError(f"{tasks.describe(source)}: no file matches {source.file_pattern!r}. Set "
                     "ChatJsonl.file_pattern to existing JSONL files (globs, comma-separated).")
  first = [c for _, c in itertools.islice(_all_conversations(source), _CHECK_RECORDS)]
  if len(first) < 2:
    raise ValueError(f"{tasks.describe(source)} has {len(first)} conversation(s); it needs at "
                     "least 2 (record 0 of each file is held out for validation, the rest are "
                     "for training). Point it at JSONL files with conversations.")
  chat.rendered(vocabulary, first[0])  # checks once, before any batch, that the tokenizer fits


_EXAMPLES_PER_CALL = 64


def _example_batches(examples: Iterator[dict]) -> Iterator[dict[str, np.ndarray]]:
  """Consecutive examples concatenated, with their lengths: one Python call per 64 examples."""
  while chunk := list(itertools.islice(examples, _EXAMPLES_PER_CALL)):
    yield {"targets": np.concatenate([e["targets"] for e in chunk]),
           "loss_mask": np.concatenate([e["loss_mask"] for e in chunk]),
           "lengths": np.asarray([len(e["targets"]) for e in chunk], np.int64)}


def _chat_dataset(split: str, shuffle_files: bool, *, source, vocabulary, seq_len: int,
                  shard_info: seqio.ShardInfo | None = None) -> tf.data.Dataset:
  del shuffle_files  # order is fixed; the pipeline shuffles conversations
  index, num_shards = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
  examples = functools.partial(chat_examples, source, vocabulary, split, seq_len=seq_len,
                               index=index, num_shards=num_shards)
  ids = tf.TensorSpec((None,), tf.int32)
  # from_generator costs ~0.1 ms a call; one example a call made it the pipeline's bottleneck.
  batches = tf.data.Dataset.from_generator(
      lambda: _example_batches(examples()),
      output_signature={"targets": ids, "loss_mask": ids,
                        "lengths": tf.TensorSpec((None,), tf.int64)})
  return batches.map(lambda b: {name: tf.RaggedTensor.from_row_lengths(b[name], b["lengths"])
                                for name in ("targets", "loss_mask")}).unbatch()


def register_task(source, vocabulary, *, seq_len: int | None) -> str:
  """Registers (once) the Task of an instruction source fitted to `seq_len`; returns its name."""
  if seq_len is None or seq_len < 2:
    raise ValueError(f"{tasks.describe(source)} is instruction data: its conversations are "
                     f"fitted to the sequence length, so register it with seq_len >= 2 (found "
                     f"{seq_len}; the pipeline passes TrainConfig.seq_len).")
  every = None if isinstance(source, tasks.DefaultInstructions) else tasks.validation_split()
  key = tasks.digest(tasks.describe(source), every, seq_len, tasks.vocabulary_digest(vocabulary))
  name = f"batgpt_{type(source).__name__.lower()}_{key}"
  if name in seqio.TaskRegistry.names():
    return name
  _check_conversations(source, vocabulary)
  dataset_fn = functools.partial(_chat_dataset, source=source, vocabulary=vocabulary,
                                 seq_len=seq_len)
  seqio.TaskRegistry.add(
      name,
      source=tasks.ShardedFunctionSource(dataset_fn, splits=tasks.SPLITS),
      preprocessors=[],  # rendered and tokenized by chat_examples
      output_features={
          "targets": seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32),
          "loss_mask": seqio.Feature(seqio.PassThroughVocabulary(2), add_eos=False,
                                     dtype=tf.int32)})
  return name


