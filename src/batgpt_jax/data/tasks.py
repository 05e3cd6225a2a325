"""seqio Tasks and Mixtures for the data sources: the embedded corpus, text files, JSONL, TFDS,
and instruction data (chat JSONL, the default instruction set).

A source is a small frozen, gin-configurable description (`DefaultCorpus`, `TextFiles`,
`JsonlFiles`, `TfdsDataset`; `ChatJsonl`, `DefaultInstructions`). `register_task` turns one into
a seqio Task whose output feature is 'targets' (token ids ending in EOS); `register_mixture`
mixes several by rate.

Instruction sources are declared here and read and registered by data/chat_tasks.py: their
Tasks also output 'loss_mask', and they depend on the sequence length (`register_task(...,
seq_len=)`; the pipeline passes TrainConfig.seq_len).

Splits. TFDS sources use their own splits. For the embedded corpus, document number i is held
out for 'validation' when i % validation_split.eval_every == 0 (default 1 in 50); for file
sources the same rule applies to document i of each file, so a file's split does not depend on
which other files exist. 'train' is the rest.

Sharding (seqio ShardInfo: data shard `index` of `num_shards`; see data/pipeline.py). When a file
source has at least as many files as shards, shard s reads only files s, s + num_shards, ... (in
sorted order): at scale a host reads its own files, nothing else. Make the files similar in size:
every shard repeats its own files, so a shard of small files cycles them more often. With fewer
files than shards (and for the embedded corpus), every shard reads all of them and keeps documents
j = index (mod num_shards) of its split. TFDS sources use `Dataset.shard`.

Invalid input. A line of a text or JSONL file that is not valid UTF-8, and a JSONL line that is
not valid JSON, is SKIPPED and COUNTED, not fatal: one corrupt line should not stop a long run.
The first few are logged as warnings naming file:line; `invalid_utf8_count()` and
`invalid_json_count()` give the number of distinct such lines seen so far in this process.
A JSONL object without the configured text field is a configuration error and raises.
An empty source (no file matches, no documents, an empty TFDS split) raises ValueError when the
task is registered, naming the source and what to change; so does a file that is evidently not
text (compressed or binary: its magic bytes, NUL bytes or mostly invalid UTF-8 in its first 4 KB):
decompress `.gz` and other archives first, they are not read through.

Long documents. A document of a text, JSONL or corpus source longer than
`max_document_chars.limit` characters (default 100,000) is cut into pieces of at most that many,
at a whitespace where there is one, before tokenisation: each piece is then its own document
(its own EOS), so one huge line costs time linear in its length instead of stalling the reader.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import threading
from typing import Iterator, Sequence

import gin
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from batgpt_jax import config
from batgpt_jax.data import chat_records, corpus

SPLITS = ("train", "validation")
DOCUMENT_MODES = ("line", "blank_line")
_WARN_FIRST = 5


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DefaultCorpus:
  """The embedded English and Chinese corpus (`batgpt_jax.data.corpus`)."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TextFiles:
  """UTF-8 text files matching `file_pattern` (globs, comma-separated; gs:// works too).

  documents: 'blank_line' = paragraphs separated by blank lines; 'line' = each non-empty line.
  """

  file_pattern: str
  documents: str = "blank_line"

  def __post_init__(self):
    if self.documents not in DOCUMENT_MODES:
      raise ValueError(f"TextFiles.documents={self.documents!r}; expected one of "
                       f"{DOCUMENT_MODES}.")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class JsonlFiles:
  """JSON-lines files matching `file_pattern`; each object's `text_field` is one document."""

  file_pattern: str
  text_field: str = "text"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TfdsDataset:
  """A prepared TFDS dataset (`name` like 'my_dataset:1.0.0'), read without downloading."""

  name: str
  data_dir: str | None = None
  text_feature: str = "text"
  train_split: str = "train"
  eval_split: str = "validation"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ChatJsonl:
  """Instruction data: JSONL conversations matching `file_pattern` (globs, comma-separated).

  format: 'auto' (by each record's keys), 'messages', 'prompt_response' or 'alpaca' (see
  data/chat_records.py). last_turn_only: the loss covers only the last assistant reply (the
  paper's multi-turn recipe: history in, last reply out); default every reply. Splits as for
  the other file sources: record i of each file is held out when i % eval_every == 0.
  """

  file_pattern: str
  format: str = "auto"
  last_turn_only: bool = False

  def __post_init__(self):
    if self.format not in chat_records.FORMATS:
      raise ValueError(f"ChatJsonl.format={self.format!r}; expected one of "
                       f"{chat_records.FORMATS}.")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DefaultInstructions:
  """The default instruction set shipped in the package (data/instructions): checkable
  English and Chinese tasks; 'validation' is its held-out file."""

  last_turn_only: bool = False


INSTRUCTION_SOURCES = (ChatJsonl, DefaultInstructions)


@gin.configurable
def validation_split(eval_every: int = 50) -> int:
  """File sources hold out documents whose index is a multiple of `eval_every`."""
  if eval_every < 2:
    raise ValueError(f"validation_split.eval_every={eval_every}; it must be >= 2 so that the "
                     "train split keeps documents.")
  return eval_every


@gin.configurable
def max_document_chars(limit: int = 100_000) -> int:
  """Documents longer than `limit` characters are cut into pieces of at most `limit`."""
  if limit < 1_000:
    raise ValueError(f"max_document_chars.limit={limit}; it must be >= 1000 so that a piece "
                     "keeps whole sentences.")
  return limit


def cut_document(text: str, limit: int) -> Iterator[str]:
  """`text` in pieces of at most `limit` characters, each cut at its last whitespace (if any in
  its second half), so that no word is split where that can be avoided."""
  start = 0
  while len(text) - start > limit:
    end = start + limit
    space = max(text.rfind(" ", start + limit // 2, end), text.rfind("\n", start + limit // 2, end))
    end = space + 1 if space > 0 else end
    yield text[start:end]
    start = end
  yield text[start:]


# ---------------------------------------------------------------------------------------------
# Skipped lines.

_SKIPPED = {"invalid UTF-8": set(), "invalid JSON": set(), "conversation too long": set(),
            "preference pair too long": set(), "prompt too long": set()}
_SKIPPED_LOCK = threading.Lock()


def skip_line(reason: str, path: str, lineno: int, detail: str) -> None:
  """Counts path:lineno as skipped for `reason` (once), logging the first few."""
  with _SKIPPED_LOCK:
    seen = _SKIPPED[reason]
    if (path, lineno) in seen:
      return  # the same line again in a later epoch or by the registration check
    seen.add((path, lineno))
    count = len(seen)
  if count <= _WARN_FIRST:
    logging.warning("Skipping %s:%d (%s: %s).%s", path, lineno, reason, detail,
                    " Further such lines are counted, not logged." if count == _WARN_FIRST
                    else "")


def invalid_utf8_count() -> int:
  """Distinct lines skipped so far in this process because they are not valid UTF-8."""
  with _SKIPPED_LOCK:
    return len(_SKIPPED["invalid UTF-8"])


def invalid_json_count() -> int:
  """Distinct JSONL lines skipped so far in this process because they are not valid JSON."""
  with _SKIPPED_LOCK:
    return len(_SKIPPED["invalid JSON"])


def skipped_count(reason: str) -> int:
  """Distinct lines skipped so far in this process for `reason` (a key of the skip counts)."""
  with _SKIPPED_LOCK:
    return len(_SKIPPED[reason])


def overlong_conversation_count() -> int:
  """Distinct conversations skipped so far because even their last turn exceeds seq_len."""
  with _SKIPPED_LOCK:
    return len(_SKIPPED["conversation too long"])


# ---------------------------------------------------------------------------------------------
# Raw documents (Python generators).

def matching_files(file_pattern: str) -> list[str]:
  """The sorted files matching any of the comma-separated globs."""
  files = set()
  for pattern in file_pattern.split(","):
    if pattern.strip():
      files.update(tf.io.gfile.glob(pattern.strip()))
  return sorted(files)


def decoded_lines(path: str) -> Iterator[tuple[int, str]]:
  """(line number, text) of each valid UTF-8 line; others are skipped and counted."""
  with tf.io.gfile.GFile(path, "rb") as f:
    for lineno, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as err:
        skip_line("invalid UTF-8", path, lineno, str(err))
        continue
      yield lineno, line.rstrip("\n").rstrip("\r")


def _text_file_documents(path: str, mode: str) -> Iterator[str]:
  paragraph = []
  for _, line in decoded_lines(path):
    if mode == "line":
      if line.strip():
        yield line
    elif line.strip():
      paragraph.append(line)
    elif paragraph:
      yield "\n".join(paragraph)
      paragraph = []
  if paragraph:
    yield "\n".join(paragraph)


def jsonl_records(path: str) -> Iterator[tuple[int, object]]:
  """(line number, parsed JSON) of each non-blank line; invalid ones are skipped and counted."""
  for lineno, line in decoded_lines(path):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as err:
      skip_line("invalid JSON", path, lineno, str(err))
      continue
    yield lineno, record


def _jsonl_documents(path: str, text_field: str) -> Iterator[str]:
  for lineno, record in jsonl_records(path):
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
      found = sorted(record) if isinstance(record, dict) else type(record).__name__
      raise config.InputError(f"{path}:{lineno} has no string field {text_field!r} (found "
                              f"{found}). Set JsonlFiles.text_field to the field that holds "
                              "the text.")
    if record[text_field].strip():
      yield record[text_field]


def _cut_documents(documents: Iterator[str]) -> Iterator[str]:
  limit = max_document_chars()
  for doc in documents:
    if len(doc) > limit:
      yield from cut_document(doc, limit)
    else:
      yield doc


def _file_documents(source, path: str) -> Iterator[str]:
  if isinstance(source, TextFiles):
    return _cut_documents(_text_file_documents(path, source.documents))
  if isinstance(source, JsonlFiles):
    return _cut_documents(_jsonl_documents(path, source.text_field))
  raise TypeError(f"Expected a DefaultCorpus, TextFiles or JsonlFiles source, found {source!r}.")


def _all_documents(source) -> Iterator[str]:
  """Every document of a corpus or file source, in a fixed order."""
  if isinstance(source, DefaultCorpus):
    yield from _cut_documents(iter(corpus.read_default_documents()))
    return
  for path in matching_files(source.file_pattern):
    yield from _file_documents(source, path)


def _of_split(documents: Iterator[str], split: str) -> Iterator[str]:
  every = validation_split()
  for i, doc in enumerate(documents):
    if (i % every == 0) == (split == "validation"):
      yield doc


def every_nth(items: Iterator, index: int, num_shards: int) -> Iterator:
  """Items j with j % num_shards == index: a data shard of a stream every shard reads."""
  for j, item in enumerate(items):
    if j % num_shards == index:
      yield item


def shard_of_files(files: list[str], read_file, split: str, index: int,
                   num_shards: int) -> Iterator:
  """Shard `index` of the split of the items that `read_file(path)` gives for each file."""
  if len(files) >= num_shards:  # whole files per shard: read only this shard's files
    for path in files[index::num_shards]:
      yield from _of_split(read_file(path), split)
    return
  streams = [read_file(path) for path in files]
  yield from every_nth((item for stream in streams for item in _of_split(stream, split)),
                       index, num_shards)


def raw_documents(source, split: str, index: int = 0, num_shards: int = 1) -> Iterator[str]:
  """The text of data shard `index` of `num_shards` of a source's split.

  For instruction sources: each conversation rendered in the chat template (for tokenizer
  training); for preference sources: each pair's two sides, so rendered.
  """
  if split not in SPLITS:
    raise ValueError(f"split={split!r}; expected one of {SPLITS}.")
  from batgpt_jax.data import prepared  # pylint: disable=import-outside-toplevel  (imports us)
  if isinstance(source, prepared.Prepared):
    raise ValueError(f"{describe(source)} holds token ids, not text; use the raw source it was "
                     "prepared from (its prepared.json names it).")
  if isinstance(source, INSTRUCTION_SOURCES):
    from batgpt_jax.data import chat_tasks  # pylint: disable=import-outside-toplevel  # imports us
    yield from (c.text() for _, c in chat_tasks.raw_conversations(source, split, index,
                                                                  num_shards))
  elif source_kind(source) == "preference":
    from batgpt_jax.data import preference_tasks  # pylint: disable=import-outside-toplevel
    for _, pair in preference_tasks.raw_pairs(source, split, index, num_shards):
      yield pair.side(pair.chosen).text()
      yield pair.side(pair.rejected).text()
  elif isinstance(source, TfdsDataset):
    yield from _tfds_documents(source, split, index, num_shards)
  elif isinstance(source, DefaultCorpus):
    yield from every_nth(_of_split(_cut_documents(iter(corpus.read_default_documents())), split),
                         index, num_shards)
  else:
    yield from shard_of_files(matching_files(source.file_pattern),
                              functools.partial(_file_documents, source), split, index,
                              num_shards)


def _tfds_split(source: TfdsDataset, split: str) -> str:
  return source.train_split if split == "train" else source.eval_split


def _tfds_documents(source: TfdsDataset, split: str, index: int, num_shards: int):
  builder = tfds.builder(source.name, data_dir=source.data_dir)
  ds = builder.as_dataset(split=_tfds_split(source, split), shuffle_files=False)
  for n, example in enumerate(ds.shard(num_shards, index).as_numpy_iterator()):
    try:
      yield example[source.text_feature].decode("utf-8")
    except UnicodeDecodeError as err:
      skip_line("invalid UTF-8", f"{source.name}:{split}", n, str(err))


# ---------------------------------------------------------------------------------------------
# Checks at registration.

def describe(source) -> str:
  return repr(source)


# The first bytes of the compressed and binary formats a text source is most often given.
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
          (b"\x28\xb5\x2f\xfd", "zstd"), (b"PK\x03\x04", "zip"), (b"7z\xbc\xaf\x27\x1c", "7z"),
          (b"\x89PNG", "PNG"), (b"%PDF", "PDF"), (b"ARROW1", "Arrow"), (b"PAR1", "Parquet"))


def not_text_reason(head: bytes) -> str | None:
  """Why a file whose first bytes are `head` is evidently not text, or None if it may be."""
  for magic, kind in _MAGIC:
    if head.startswith(magic):
      return f"it is {kind} data"
  if b"\x00" in head:
    return "it holds NUL bytes (binary data)"
  lines = head.split(b"\n")[:-1] or [head]  # the last line may be cut mid-character
  invalid = sum(1 for line in lines if not _decodes(line))
  if invalid * 2 > len(lines):
    return f"{invalid} of its first {len(lines)} lines are not valid UTF-8"
  return None


def _decodes(line: bytes) -> bool:
  try:
    line.decode("utf-8")
    return True
  except UnicodeDecodeError:
    return False


def _check_text_files(source, files: list[str]) -> None:
  for path in files:
    with tf.io.gfile.GFile(path, "rb") as f:
      reason = not_text_reason(f.read(4096))
    if reason:
      raise config.InputError(
          f"{path} is not a text file: {reason}. {type(source).__name__} reads UTF-8 text; "
          "decompress or convert it first (e.g. `gunzip` a .gz), or drop it from "
          f"{type(source).__name__}.file_pattern.")


def _check_files(source) -> None:
  if not isinstance(source, DefaultCorpus) and not matching_files(source.file_pattern):
    kind = type(source).__name__
    raise ValueError(f"{describe(source)}: no file matches {source.file_pattern!r}. Set "
                     f"{kind}.file_pattern to existing files (globs, comma-separated).")
  if not isinstance(source, DefaultCorpus):
    _check_text_files(source, matching_files(source.file_pattern))
  first = []
  for doc in _all_documents(source):
    first.append(doc)
    if len(first) == 2:
      return
  raise ValueError(f"{describe(source)} has {len(first)} document(s); it needs at least 2 "
                   "(document 0 is held out for validation, the rest are for training). "
                   "Point it at files with text, or check TextFiles.documents ('line' or "
                   "'blank_line').")


def _check_tfds(source: TfdsDataset) -> None:
  try:
    builder = tfds.builder(source.name, data_dir=source.data_dir)
  except Exception as err:  # tfds raises several kinds for unknown names and bad directories
    raise ValueError(f"{describe(source)}: TFDS cannot find {source.name!r} "
                     f"(data_dir={source.data_dir!r}): {err}. Prepare it first (e.g. "
                     "`tfds build` or builder.download_and_prepare()) and set "
                     "TfdsDataset.name/data_dir to it.") from err
  if not builder.is_prepared():
    raise ValueError(f"{describe(source)}: the dataset is not prepared in "
                     f"{builder.data_dir}. Run `tfds build {source.name}` (with --data_dir) "
                     "first; training does not download.")
  splits = builder.info.splits
  for split in (source.train_split, source.eval_split):
    try:
      examples = splits[split].num_examples
    except (KeyError, ValueError) as err:
      raise ValueError(f"{describe(source)} has no split {split!r}; it has {sorted(splits)}. "
                       "Set TfdsDataset.train_split and eval_split.") from err
    if examples == 0:
      raise ValueError(f"{describe(source)}: split {split!r} has 0 examples. Choose a split "
                       "with data (TfdsDataset.train_split / eval_split).")
  if source.text_feature not in builder.info.features:
    raise ValueError(f"{describe(source)} has no feature {source.text_feature!r}; it has "
                     f"{sorted(builder.info.features)}. Set TfdsDataset.text_feature.")


# ---------------------------------------------------------------------------------------------
# seqio registration.

class ShardedFunctionSource(seqio.FunctionDataSource):
  """A FunctionDataSource whose function is given the host's ShardInfo and reads only its share.

  seqio's own FunctionDataSource would read everything on every host and shard afterwards.
  """

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed=None, shard_info=None,
                  **unused) -> tf.data.Dataset:
    del seed, unused
    return self._dataset_fn(split=split, shuffle_files=shuffle, shard_info=shard_info)


def _documents_dataset(split: str, shuffle_files: bool, *, source,
                       shard_info: seqio.ShardInfo | None = None) -> tf.data.Dataset:
  del shuffle_files  # order is fixed; the pipeline shuffles documents
  index, num_shards = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
  generate = functools.partial(raw_documents, source, split, index, num_shards)
  ds = tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec((), tf.string))
  return ds.map(lambda text: {"text": text})


def _data_source(source) -> seqio.DataSource:
  if isinstance(source, TfdsDataset):
    return seqio.TfdsDataSource(
        tfds_name=source.name, tfds_data_dir=source.data_dir, read_only=True,
        splits={"train": source.train_split, "validation": source.eval_split})
  return ShardedFunctionSource(functools.partial(_documents_dataset, source=source),
                                splits=SPLITS)


def vocabulary_digest(vocabulary) -> str:
  return hashlib.sha256(vocabulary.sp_model).hexdigest()[:12]


def digest(*parts) -> str:
  return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


_KIND_NAMES = {"instruction": "instruction sources (ChatJsonl, DefaultInstructions)",
               "preference": "preference sources (PreferenceJsonl, PlantedPreferences)",
               "pretrain": "pretraining sources"}


def source_kind(source) -> str:
  """'pretrain', 'instruction' or 'preference' (data/preference_tasks.py): what its rows hold."""
  if isinstance(source, INSTRUCTION_SOURCES):
    return "instruction"
  # pylint: disable=import-outside-toplevel  (both modules import this one)
  from batgpt_jax.data import prepared, preference_tasks
  if isinstance(source, prepared.Prepared):
    return prepared.kind(source)
  return "preference" if isinstance(source, preference_tasks.SOURCES) else "pretrain"


def register_task(source, vocabulary, *, seq_len: int | None = None) -> str:
  """Registers (once) the seqio Task of `source` tokenized by `vocabulary`; returns its name.

  seq_len: the row length; instruction sources need it (they fit conversations to it), the
  others ignore it.
  """
  if isinstance(source, INSTRUCTION_SOURCES):
    from batgpt_jax.data import chat_tasks  # pylint: disable=import-outside-toplevel  # imports us
    return chat_tasks.register_task(source, vocabulary, seq_len=seq_len)
  if source_kind(source) == "preference":
    from batgpt_jax.data import preference_tasks  # pylint: disable=import-outside-toplevel
    return preference_tasks.register_task(source, vocabulary, seq_len=seq_len)
  if not isinstance(source, (DefaultCorpus, TextFiles, JsonlFiles, TfdsDataset)):
    raise TypeError(f"Expected a DefaultCorpus, TextFiles, JsonlFiles, TfdsDataset, ChatJsonl or "
                    f"DefaultInstructions source, found {source!r}.")
  every = None if isinstance(source, TfdsDataset) else validation_split()
  name = (f"batgpt_{type(source).__name__.lower()}_"
          f"{digest(describe(source), every, max_document_chars(), vocabulary_digest(vocabulary))}")
  if name in seqio.TaskRegistry.names():
    return name
  if isinstance(source, TfdsDataset):
    _check_tfds(source)
    key_map = {"targets": source.text_feature}
  else:
    _check_files(source)
    key_map = {"targets": "text"}
  seqio.TaskRegistry.add(
      name,
      source=_data_source(source),
      preprocessors=[functools.partial(seqio.preprocessors.rekey, key_map=key_map),
                     functools.partial(seqio.preprocessors.tokenize_and_append_eos,
                                       copy_pretokenized=False)],
      output_features={"targets": seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)})
  return name


def register_mixture(sources_and_rates: Sequence[tuple], vocabulary, *,
                     seq_len: int | None = None) -> str:
  """Registers (once) a seqio Mixture of the sources at their rates; one source: its Task.

  seq_len is passed to register_task (instruction sources need it).
  """
  pairs = [tuple(pair) for pair in sources_and_rates]
  if not pairs or any(len(p) != 2 for p in pairs):
    raise ValueError(f"Expected a non-empty list of (source, rate) pairs, found "
                     f"{sources_and_rates!r}. Example: DataConfig.sources = "
                     "[(@TextFiles(), 0.7), (@JsonlFiles(), 0.3)].")
  for source, rate in pairs:
    if not isinstance(rate, (int, float)) or rate <= 0:
      raise ValueError(f"The rate of {describe(source)} is {rate!r}; rates must be positive "
                       "numbers.")
  kinds = {source_kind(source) for source, _ in pairs}
  if len(kinds) > 1:
    named = [_KIND_NAMES[kind] for kind in _KIND_NAMES if kind in kinds]
    raise ValueError(f"{pairs!r} mixes {' with '.join(named)}; a seqio mixture has one set of "
                     "output features (only instruction data has a loss mask, only preference "
                     "data has pairs). Mix sources of one kind only (pretrain first, then "
                     "fine-tune or align with TrainConfig.init_from).")
  if len({source for source, _ in pairs}) != len(pairs):
    raise ValueError(f"A source is listed twice in {pairs!r}: list each once and add the "
                     "rates together.")
  tasks = [(register_task(source, vocabulary, seq_len=seq_len), float(rate))
           for source, rate in pairs]
  if len(tasks) == 1:
    return tasks[0][0]
  name = f"batgpt_mixture_{digest(tasks)}"
  if name not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(name, tasks)
  return name
