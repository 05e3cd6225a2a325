"""Prepared data: a source's tokenized documents written once to ArrayRecord, read by index.

`batgpt data prepare` runs one source's seqio task once per split (in order, one pass) and
writes DIR/train.array_record and DIR/validation.array_record, one record per document (its
features, msgpack-encoded numpy arrays), then DIR/prepared.json, last: a directory without it
is an unfinished prepare and is refused. `Prepared(path=DIR)` is then a source like any other in
`DataConfig.sources`; a mixture is all prepared sources or none.

Reading (`mixture`) goes through grain's random-access MapDataset, so element e costs the same
at any e, and resuming a run costs the same at any data position (data/pipeline.py):
  - directions by index arithmetic: 'both' makes 2n elements of n documents (element 2i is
    document i left to right, 2i + 1 right to left); 'sample' directs document i by a keyed
    hash of (seed, source, i); 'l2r' keeps n;
  - a global, seeded permutation of each source's elements (grain's index shuffle: no buffer,
    constant memory), a new one each epoch;
  - sources mixed by rate (grain's deterministic `mix`);
  - data shard s of S takes elements s, s + S, s + 2S, ... of the mixture (`mixture[s::S]`,
    data/pipeline.py), so every shard is a function of the config alone, for any host count.

Why ArrayRecord through grain: a record is read by its number in one seek (the format TFDS and
grain use for random access), the files are written by a library the stack already has, and
nothing runs beside the job. Paths are local or mounted (gcsfuse) directories.
"""

import dataclasses
import functools
import json
import logging
import os
import time

import gin
import grain
import numpy as np
from array_record.python import array_record_module
from flax import serialization

from batgpt_jax.data import preprocessors, tasks

META = "prepared.json"
FORMAT = 1
_MASK64 = (1 << 64) - 1


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Prepared:
  """A directory written by `batgpt data prepare`: a source's documents as token ids."""

  path: str


def all_prepared(sources_and_rates) -> bool:
  """True when every source is Prepared, False when none is; a mix of both is refused."""
  flags = {isinstance(source, Prepared) for source, _ in sources_and_rates}
  if flags == {True, False}:
    raise ValueError(f"DataConfig.sources={sources_and_rates!r} mixes Prepared sources with "
                     "raw ones; prepare each source (`batgpt data prepare`) or none.")
  if flags != {True}:
    return False
  kinds = {kind(source) for source, _ in sources_and_rates}
  if len(kinds) > 1:
    raise ValueError(f"DataConfig.sources={sources_and_rates!r} mixes prepared data of kinds "
                     f"{sorted(kinds)}; mix sources of one kind only.")
  return True


def split_file(path: str, split: str) -> str:
  return os.path.join(path, f"{split}.array_record")


def read_meta(source: Prepared) -> dict:
  """The prepared directory's metadata; a clear error when it is missing or unfinished."""
  meta_path = os.path.join(source.path, META)
  if not os.path.exists(meta_path):
    state = ("does not exist" if not os.path.isdir(source.path) else
             f"has no {META}: its prepare did not finish")
    raise ValueError(f"Prepared(path={source.path!r}) {state}. Run `batgpt data prepare "
                     f"--gin_file=... --output={source.path}` (again) first.")
  with open(meta_path, encoding="utf-8") as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT:
    raise ValueError(f"{meta_path} is of format {meta.get('format')!r}, this version reads "
                     f"{FORMAT}; prepare the source again.")
  return meta


def kind(source: Prepared) -> str:
  return read_meta(source)["kind"]


def prepare(source, vocabulary, output: str, *, seq_len: int | None = None,
            log_every_s: float = 10.0) -> dict:
  """Writes `source`'s tokenized documents (both splits) under `output`; returns the metadata.

  `seq_len` is recorded and, for instruction and preference sources (whose documents are fitted
  to the row length), required and checked when the data is used.
  """
  if isinstance(source, Prepared):
    raise ValueError(f"{source!r} is prepared already.")
  source_kind = tasks.source_kind(source)
  if source_kind != "pretrain" and not seq_len:
    raise ValueError(f"{tasks.describe(source)} fits its documents to the row length: pass "
                     "the run's TrainConfig.seq_len.")
  if os.path.exists(os.path.join(output, META)):
    raise FileExistsError(f"{output} holds prepared data already; remove it or choose another "
                          "--output.")
  os.makedirs(output, exist_ok=True)
  import seqio  # pylint: disable=import-outside-toplevel  (loads TensorFlow)
  task = seqio.get_mixture_or_task(tasks.register_task(source, vocabulary, seq_len=seq_len))
  counts, tokens, features = {}, {}, {}
  for split in tasks.SPLITS:
    dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1,
                               trim_output_features=False)
    writer = array_record_module.ArrayRecordWriter(split_file(output, split), "group_size:1")
    n = total = 0
    started = last = time.monotonic()
    try:
      for doc in dataset.as_numpy_iterator():
        doc = {name: np.asarray(values) for name, values in doc.items()}
        features.update({name: str(values.dtype) for name, values in doc.items()})
        writer.write(serialization.msgpack_serialize(doc))
        n, total = n + 1, total + len(doc["targets"])
        if time.monotonic() - last >= log_every_s:
          last = time.monotonic()
          logging.info("prepare %s: %d documents, %d tokens (%.0f tokens/s)", split, n, total,
                       total / (last - started))
    finally:
      writer.close()
    counts[split], tokens[split] = n, total
  if not counts["train"]:
    raise ValueError(f"{tasks.describe(source)} has no train documents; nothing to prepare.")
  meta = {"format": FORMAT, "source": tasks.describe(source), "kind": source_kind,
          "vocabulary": tasks.vocabulary_digest(vocabulary), "seq_len": seq_len,
          "features": features, "documents": counts, "tokens": tokens}
  temporary = os.path.join(output, META + ".tmp")
  with open(temporary, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  os.replace(temporary, os.path.join(output, META))  # last: the directory is now complete
  return meta


def check_usable(source: Prepared, vocabulary, seq_len: int) -> dict:
  """The metadata, once the vocabulary (and, where it matters, the row length) match the run."""
  meta = read_meta(source)
  digest = tasks.vocabulary_digest(vocabulary)
  if meta["vocabulary"] != digest:
    raise ValueError(f"Prepared(path={source.path!r}) was tokenized with another vocabulary "
                     f"(digest {meta['vocabulary']}, this run's is {digest}). Prepare it again "
                     "with this run's DataConfig.vocab_path, or train with the one it used.")
  if meta["kind"] != "pretrain" and meta["seq_len"] != seq_len:
    raise ValueError(f"Prepared(path={source.path!r}) fitted its {meta['kind']} documents to "
                     f"rows of {meta['seq_len']} tokens; this run's TrainConfig.seq_len is "
                     f"{seq_len}. Prepare it again with --gin.TrainConfig.seq_len={seq_len}.")
  return meta


def documents(source: Prepared, split: str) -> grain.MapDataset:
  """The split's documents ({feature: numpy array}) by number."""
  records = grain.MapDataset.source(
      grain.sources.ArrayRecordDataSource([split_file(source.path, split)]))
  return records.map(serialization.msgpack_restore)


def sample_direction(seed: int, source_index: int, document: int) -> int:
  """0 (L2R) or 1 (R2L) for 'sample' mode: splitmix64 of (seed, source, document), balanced."""
  x = (seed * 0x9E3779B97F4A7C15 + source_index * 0xBF58476D1CE4E5B9 + document
       + 0x62617467707400) & _MASK64
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
  return (x ^ (x >> 31)) & 1


def _directed(docs: grain.MapDataset, mode: str, seed: int, source_index: int,
              **direction_args) -> grain.MapDataset:
  # direction_args: l2r_id, r2l_id, unit, word_starts (preprocessors.directed_document)
  direct = functools.partial(preprocessors.directed_document, **direction_args)
  if mode == "both":
    return grain.MapDataset.range(2 * len(docs)).map(
        lambda j: direct(docs[j // 2], j % 2))
  if mode == "sample":
    return docs.map_with_index(
        lambda j, doc: direct(doc, sample_direction(seed, source_index, j)))
  return docs.map(lambda doc: direct(doc, preprocessors.L2R))


def mixture(sources_and_rates, *, split: str, mode: str, seed: int, shuffle: bool, l2r_id: int,
            r2l_id: int, unit: str = "token",
            word_starts=None) -> grain.MapDataset:
  """The prepared sources' mixture: directed documents ('targets', 'direction', per-token
  fields), element e by index, forever (sources repeat). unit, word_starts: the R2L unit
  (DataConfig.r2l_unit) and, for 'word', the vocabulary's word-start table."""
  streams, rates = [], []
  for i, (source, rate) in enumerate(sources_and_rates):
    docs = documents(source, split)
    if not len(docs):
      raise ValueError(f"The {split} split of Prepared(path={source.path!r}) has no documents.")
    elements = _directed(docs, mode, seed, i, l2r_id=l2r_id, r2l_id=r2l_id, unit=unit,
                         word_starts=word_starts)
    if shuffle:
      elements = elements.shuffle(seed=seed * 1_000_003 + i)
    streams.append(elements.repeat(None))  # a new permutation each epoch
    rates.append(float(rate))
  return streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, rates)
