"""Prepared data (ArrayRecord through grain) and the packer state that resumes in constant time."""

import itertools

import numpy as np
import pytest
import seqio

from batgpt_jax.data import pipeline, prepared, tasks, vocab
from testlib import assert_equal_batches, data_sentences

SEQ_LEN, BATCH, SHARDS = 128, 8, 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, data_tiny_vocab):
  """The embedded corpus, prepared with the tiny vocabulary."""
  out = tmp_path_factory.mktemp("prepared") / "corpus"
  meta = prepared.prepare(tasks.DefaultCorpus(), data_tiny_vocab, str(out))
  return prepared.Prepared(str(out)), meta


def _cfg(source, **overrides):
  return pipeline.DataConfig(**{"sources": ((source, 1.0),), "shards": SHARDS, **overrides})


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _global(per_host: list[list[dict]]) -> list[dict]:
  """Global batches: every host's rows, concatenated in host order."""
  return [{key: np.concatenate([host[i][key] for host in per_host]) for key in per_host[0][i]}
          for i in range(len(per_host[0]))]


def _resumed_on_other_hosts(cfg, vocabulary, k, n, saved_by=2, restored_by=4) -> list[dict]:
  """Trains k batches on `saved_by` hosts, gathers their packer states as a checkpoint would
  (every host's block, in host order), and reads n more batches on `restored_by` hosts."""
  args = dict(seq_len=SEQ_LEN, global_batch=BATCH)
  blocks = []
  for host in range(saved_by):
    batches = pipeline.train_batches(cfg, vocabulary, process_index=host,
                                     process_count=saved_by, **args)
    _take(batches, k)
    blocks.append(batches.state())
  saved = {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}
  per_host = SHARDS // restored_by
  return _global([_take(pipeline.train_batches(
      cfg, vocabulary, start_position=k, process_index=host, process_count=restored_by,
      resume={name: v[host * per_host:(host + 1) * per_host] for name, v in saved.items()},
      **args), n) for host in range(restored_by)])


def test_prepared_documents_are_the_tasks_documents_in_order(corpus, data_tiny_vocab):
  source, meta = corpus
  task = seqio.get_mixture_or_task(tasks.register_task(tasks.DefaultCorpus(), data_tiny_vocab))
  for split, n in (("validation", -1), ("train", 50)):  # all held out; the train split's start
    want = [d["targets"] for d in task.get_dataset(
        sequence_length=None, split=split, shuffle=False, num_epochs=1,
        trim_output_features=False).take(n).as_numpy_iterator()]
    got = prepared.documents(source, split)
    for i, doc in enumerate(want):
      np.testing.assert_array_equal(got[i]["targets"], doc)
    if split == "validation":
      assert len(got) == len(want) == meta["documents"][split]
      assert sum(len(t) for t in want) == meta["tokens"][split]
  assert len(prepared.documents(source, "train")) == meta["documents"]["train"] > 6000
  assert meta["kind"] == "pretrain" and meta["features"] == {"targets": "int32"}


@pytest.mark.parametrize("k", [0, 1, 37])
def test_states_of_two_hosts_resume_on_four_exactly_like_the_skip_ahead(corpus, data_tiny_vocab,
                                                                        k):
  source, _ = corpus
  cfg = _cfg(source)
  oracle = _global([_take(pipeline.train_batches(
      cfg, data_tiny_vocab, seq_len=SEQ_LEN, global_batch=BATCH, start_position=k,
      process_index=0, process_count=1), 6)])  # one host, reading and packing k batches
  assert_equal_batches(_resumed_on_other_hosts(cfg, data_tiny_vocab, k, 6), oracle)
  fill = np.mean([(b["segment_ids"] > 0).mean() for b in oracle])
  assert fill >= 0.95, fill


def test_raw_sources_resume_from_the_state_too(data_tiny_vocab):
  cfg = _cfg(tasks.DefaultCorpus(), shuffle_buffer=256)  # tf.data: the state skips documents
  oracle = _take(pipeline.train_batches(cfg, data_tiny_vocab, seq_len=SEQ_LEN, global_batch=BATCH,
                                        start_position=5, process_index=0, process_count=1), 3)
  assert_equal_batches(_resumed_on_other_hosts(cfg, data_tiny_vocab, 5, 3), _global([oracle]))


def _epoch(source, mode, seed=0, shuffle=True) -> list[dict]:
  elements = prepared.mixture(((source, 1.0),), split="validation", mode=mode, seed=seed,
                              shuffle=shuffle, l2r_id=3, r2l_id=4)
  n = len(prepared.documents(source, "validation"))
  return [elements[e] for e in range((2 if mode == "both" else 1) * n)]


def test_directions_are_index_arithmetic_over_a_global_permutation(corpus):
  source, _ = corpus
  docs = [tuple(d["targets"].tolist()) for d in
          (prepared.documents(source, "validation")[i] for i in range(130))]
  both = _epoch(source, "both")
  l2r = [tuple(e["targets"][1:].tolist()) for e in both if e["direction"] == 0]
  r2l = [e["targets"][1:] for e in both if e["direction"] == 1]
  r2l = [tuple(np.concatenate([t[:-1][::-1], t[-1:]]).tolist()) for t in r2l]
  assert sorted(l2r) == sorted(r2l) == sorted(docs)  # each document once in each direction
  assert [tuple(e["targets"][1:].tolist()) for e in _epoch(source, "l2r", shuffle=False)] == docs
  assert l2r != docs  # shuffled
  sample = _epoch(source, "sample", shuffle=False)
  assert [int(e["direction"]) for e in sample] == [
      prepared.sample_direction(0, 0, i) for i in range(130)]
  assert 0.35 < np.mean([e["direction"] for e in sample]) < 0.65
  assert [e["direction"] for e in _epoch(source, "sample", seed=1, shuffle=False)] != [
      e["direction"] for e in sample]


def test_mixture_by_rate(corpus, data_tiny_vocab, tmp_path):
  source, _ = corpus
  text = tmp_path / "small.txt"
  text.write_text("\n".join(data_sentences(300, seed=3)) + "\n", encoding="utf-8")
  small = prepared.Prepared(str(tmp_path / "small"))
  prepared.prepare(tasks.TextFiles(str(text), "line"), data_tiny_vocab, small.path)
  small_docs = {tuple(d["targets"].tolist()) for d in
                (prepared.documents(small, "train")[i] for i in range(len(
                    prepared.documents(small, "train"))))}
  elements = prepared.mixture(((source, 3.0), (small, 1.0)), split="train", mode="l2r", seed=0,
                              shuffle=True, l2r_id=3, r2l_id=4)
  from_small = np.mean([tuple(elements[e]["targets"][1:].tolist()) in small_docs
                        for e in range(2000)])
  assert from_small == pytest.approx(0.25, abs=0.03)


def test_bad_prepared_data_is_refused_with_the_fix(corpus, data_tiny_vocab, tmp_path):
  source, _ = corpus
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  with pytest.raises(ValueError, match="has no prepared.json: its prepare did not finish"):
    _cfg(prepared.Prepared(str(unfinished)))
  with pytest.raises(ValueError, match="does not exist.*batgpt data prepare"):
    _cfg(prepared.Prepared(str(tmp_path / "nowhere")))
  with pytest.raises(ValueError, match="mixes Prepared sources with raw ones"):
    pipeline.train_batches(
        pipeline.DataConfig(sources=((source, 1.0), (tasks.DefaultCorpus(), 1.0))),
        data_tiny_vocab, seq_len=SEQ_LEN, global_batch=BATCH, process_index=0, process_count=1)
  other = vocab.default_vocabulary(512)
  with pytest.raises(ValueError, match="tokenized with another vocabulary"):
    pipeline.train_batches(_cfg(source), other, seq_len=SEQ_LEN, global_batch=BATCH,
                           process_index=0, process_count=1)
  with pytest.raises(FileExistsError, match="holds prepared data already"):
    prepared.prepare(tasks.DefaultCorpus(), data_tiny_vocab, source.path)


def test_resume_key_changes_with_what_the_state_depends_on(corpus, data_tiny_vocab):
  source, _ = corpus
  key = lambda cfg, **kw: pipeline.resume_key(cfg, data_tiny_vocab, **{
      "seq_len": SEQ_LEN, "global_batch": BATCH, **kw})
  base = key(_cfg(source))
  assert base == key(_cfg(source))
  assert len({base, key(_cfg(source, seed=1)), key(_cfg(source, direction_mode="l2r")),
              key(_cfg(source), seq_len=256), key(_cfg(source), global_batch=16),
              key(_cfg(source, shards=2))}) == 6
