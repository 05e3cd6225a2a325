"""PPO's prompts: the prompt side of preference or instruction records, as a seqio Task.

A prompt is what the policy answers: `[<l2r>]` + the chat template up to the last turn's
`[Assistant]` (data/chat.py's chat_prompt, with the record's system prompt and history), and
beside it the record's reference reply (a preference pair's chosen answer, an instruction's last
reply), against which sampled replies are matched exactly (the planted tasks' "follows the
rule"). Any preference source (PreferenceJsonl, PlantedPreferences) or instruction source
(ChatJsonl, DefaultInstructions) serves; its splits are its own.

The Task's examples are `inputs` (the prompt ids) and `reference` (the reply's ids). A prompt
longer than `max_prompt_len` drops its oldest history turns first, and is skipped and counted
when even its last turn is too long. `PromptStream` deals the prompts of a split out in batches,
reshuffled every epoch by the seed: batch i is a function of (seed, i) alone, so a resumed run
sees exactly the prompts an uninterrupted one would. Several sources (DataConfig.sources with
their rates) each give every batch a fixed share of its rows (`mixture_rows`), each source
walking its own epochs.
"""

import dataclasses
import functools
from typing import Iterator, Sequence

import numpy as np
import seqio
import tensorflow as tf

from batgpt_jax.data import chat, chat_tasks, preference_tasks, tasks
from batgpt_jax.data import vocab as vocab_lib

SKIP_REASON = "prompt too long"


@dataclasses.dataclass(frozen=True)
class Prompt:
  ids: tuple[int, ...]  # [<l2r>] + the rendered chat prompt
  reference: str  # the record's own (preferred) reply; '' when it has none


def _turns(source, split: str) -> Iterator[tuple[str, tuple, str, str | None, str]]:
  """(where, history, query, system, reference) of each record of the split."""
  if tasks.source_kind(source) == "preference":
    for where, pair in preference_tasks.raw_pairs(source, split):
      yield where, pair.history, pair.query, pair.system, pair.chosen
  elif tasks.source_kind(source) == "instruction":
    for where, conversation in chat_tasks.raw_conversations(source, split):
      *history, (query, reply) = conversation.turns
      yield where, tuple(history), query, conversation.system, reply
  else:
    check_source(source)


def check_source(source) -> None:
  """Refuses a source without prompts (a pretraining corpus), naming the kinds that have them."""
  if tasks.source_kind(source) not in ("preference", "instruction"):
    raise ValueError(f"{tasks.describe(source)} holds documents, not prompts: PPO's prompts come "
                     "from a preference source (PreferenceJsonl, PlantedPreferences) or an "
                     "instruction source (ChatJsonl, DefaultInstructions).")


def prompt_examples(source, vocabulary, split: str, *, max_prompt_len: int) -> Iterator[dict]:
  """{'inputs', 'reference'} ids of each record's prompt, fitted to max_prompt_len."""
  l2r_id, _ = vocab_lib.direction_ids(vocabulary)
  encode = lambda text: [int(i) for i in vocabulary.encode(text)]
  for where, history, query, system, reference in _turns(source, split):
    for drop in range(len(history) + 1):
      ids = [l2r_id] + encode(chat.chat_prompt(query, history[drop:], system))
      if len(ids) <= max_prompt_len:
        yield {"inputs": np.asarray(ids, np.int32),
               "reference": np.asarray(encode(reference), np.int32)}
        break
    else:
      path, lineno = where.rsplit(":", 1)
      tasks.skip_line(SKIP_REASON, path, int(lineno),
                      f"its last turn alone needs more than max_prompt_len={max_prompt_len} "
                      "tokens; raise PPOConfig.max_prompt_len or shorten it")


def _prompt_dataset(split: str, shuffle_files: bool, *, source, vocabulary, max_prompt_len: int,
                    shard_info: seqio.ShardInfo | None = None) -> tf.data.Dataset:
  del shuffle_files, shard_info  # every host reads all prompts: a stream deals them out
  ids = tf.TensorSpec((None,), tf.int32)
  return tf.data.Dataset.from_generator(
      functools.partial(prompt_examples, source, vocabulary, split,
                        max_prompt_len=max_prompt_len),
      output_signature={"inputs": ids, "reference": ids})


def register_task(source, vocabulary, *, max_prompt_len: int) -> str:
  """Registers (once) the prompt Task of `source`; returns its name."""
  check_source(source)
  key = tasks.digest("prompts", tasks.describe(source), tasks.validation_split(), max_prompt_len,
                     tasks.vocabulary_digest(vocabulary))
  name = f"batgpt_prompts_{type(source).__name__.lower()}_{key}"
  if name in seqio.TaskRegistry.names():
    return name
  feature = seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32)
  seqio.TaskRegistry.add(
      name, source=tasks.ShardedFunctionSource(
          functools.partial(_prompt_dataset, source=source, vocabulary=vocabulary,
                            max_prompt_len=max_prompt_len), splits=tasks.SPLITS),
      preprocessors=[], output_features={"inputs": feature, "reference": feature})
  return name


def read_prompts(source, vocabulary, split: str, *, max_prompt_len: int) -> list[Prompt]:
  """Every prompt of the split, in the source's order, through its seqio Task."""
  task = seqio.get_mixture_or_task(register_task(source, vocabulary,
                                                 max_prompt_len=max_prompt_len))
  out = [Prompt(tuple(int(i) for i in ex["inputs"]),
                vocabulary.decode([int(i) for i in ex["reference"]]))
         for ex in task.get_dataset(split=split, shuffle=False).as_numpy_iterator()]
  if not out:
    raise ValueError(f"{tasks.describe(source)} has no {split} prompt of at most "
                     f"{max_prompt_len} tokens; raise PPOConfig.max_prompt_len or check the "
                     "source.")
  return out


def mixture_rows(batch: int, rates: Sequence[float]) -> list[int]:
  """Rows of each source in a batch of `batch`: proportional to the rates, the remainder to the
  largest fractions (ties to the earlier source). Every source gets at least one row."""
  shares = np.asarray(rates, np.float64) * batch / float(np.sum(rates))
  rows = np.floor(shares).astype(int)
  for i in np.argsort(-(shares - rows), kind="stable")[:batch - int(rows.sum())]:
    rows[i] += 1
  if rows.min() < 1:
    raise ValueError(f"A batch of {batch} prompts at rates {list(rates)} gives a source no row "
                     f"({rows.tolist()}); raise its rate, or the batch (PPOConfig.rollout_batch "
                     "or eval_prompts).")
  return rows.tolist()


class PromptStream:
  """Batches of `batch` prompts from one or several pools (sources): each pool gives its fixed
  share of the rows (`mixture_rows`), epoch after epoch in its own seeded order."""

  def __init__(self, pools: Sequence[Sequence[Prompt]], batch: int, seed: int,
               rates: Sequence[float] = (1.0,)):
    if len(pools) != len(rates):
      raise ValueError(f"{len(pools)} prompt pools but {len(rates)} rates.")
    self.rows = mixture_rows(batch, rates)
    for pool, rows in zip(pools, self.rows):
      if rows > len(pool):
        raise ValueError(f"A rollout batch takes {rows} prompts from a source that has "
                         f"{len(pool)}; lower PPOConfig.rollout_batch or add prompts.")
    self.pools, self.batch_size, self.seed = [list(p) for p in pools], batch, seed

  def _order(self, pool: int, epoch: int) -> np.ndarray:
    # Pool 0 keeps the order it has as the only source.
    key = [self.seed, epoch] if pool == 0 else [self.seed, epoch, pool]
    return np.random.default_rng(key).permutation(len(self.pools[pool]))

  def batch(self, index: int) -> list[Prompt]:
    """Batch `index` (from 0): the pools' rows in pool order. A pool's epoch holds
    len // rows whole batches; the rest waits for the next epoch's order."""
    out = []
    for pool, rows in enumerate(self.rows):
      epoch, within = divmod(index, len(self.pools[pool]) // rows)
      out += [self.pools[pool][i]
              for i in self._order(pool, epoch)[within * rows:(within + 1) * rows]]
    return out
