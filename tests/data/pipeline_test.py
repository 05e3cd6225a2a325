"""The per-host pipeline: shapes, determinism, exact resume, disjoint hosts, held-out split."""

import itertools

import gin
import numpy as np
import pytest

from batgpt_jax.data import pipeline, tasks, vocab
from testlib import assert_equal_batches, data_sentences

SEQ_LEN, BATCH = 256, 8  # documents are 20-63 tokens
KEYS = {"tokens": np.int32, "targets": np.int32, "segment_ids": np.int32,
        "positions": np.int32, "loss_weights": np.float32, "directions": np.int32}


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("pipeline") / "docs.txt"
  path.write_text("\n".join(data_sentences(200, seed=7)) + "\n", encoding="utf-8")
  return path


def _cfg(corpus_file, **overrides):
  values = dict(sources=((tasks.TextFiles(str(corpus_file), "line"), 1.0),), shuffle_buffer=64)
  return pipeline.DataConfig(**{**values, **overrides})


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _segments(batches, l2r_id) -> list[tuple]:
  """The token ids of every L2R document in the batches (marker and EOS stripped)."""
  out = []
  for batch in batches:
    for tokens, segs in zip(batch["tokens"], batch["segment_ids"]):
      for s in range(1, segs.max() + 1):
        doc = tokens[segs == s]
        if doc[0] == l2r_id:
          assert doc[-1] == vocab.EOS_ID
          out.append(tuple(doc[1:-1].tolist()))
  return out


def test_shapes_dtypes_and_contents(corpus_file, data_tiny_vocab):
  batches = _take(pipeline.train_batches(_cfg(corpus_file), data_tiny_vocab, seq_len=SEQ_LEN,
                                         global_batch=BATCH, process_index=0, process_count=2),
                  3)
  for batch in batches:
    assert {k: (v.dtype, v.shape) for k, v in batch.items()} == {
        k: (np.dtype(t), (BATCH // 2, SEQ_LEN)) for k, t in KEYS.items()}
    weights, segs = batch["loss_weights"], batch["segment_ids"]
    assert (weights[segs == 0] == 0).all() and (batch["targets"][weights == 0] == 0).all()
    last_of_segment = (segs > 0) & (segs != np.pad(segs[:, 1:], ((0, 0), (0, 1))))
    assert (weights[last_of_segment] == 0).all()
    assert (weights[(segs > 0) & ~last_of_segment] == 1).all()
    assert (segs > 0).mean() > 0.8  # rows are well filled
  l2r_id, r2l_id = vocab.direction_ids(data_tiny_vocab)
  starts = np.concatenate([b["tokens"][(b["positions"] == 0) & (b["segment_ids"] > 0)]
                           for b in batches])
  assert set(starts.tolist()) == {l2r_id, r2l_id}  # mode 'both': no chunking at this length
  l2r, r2l = sum(starts == l2r_id), sum(starts == r2l_id)  # shuffled, so not exactly equal
  assert abs(l2r - r2l) <= 0.25 * (l2r + r2l)


def test_batches_are_deterministic_and_resume_exactly(corpus_file, data_tiny_vocab):
  cfg = _cfg(corpus_file, direction_mode="sample", seed=3)
  args = dict(seq_len=SEQ_LEN, global_batch=BATCH, process_index=0, process_count=1)
  straight = _take(pipeline.train_batches(cfg, data_tiny_vocab, **args), 10)  # > 2 epochs
  assert_equal_batches(straight, _take(pipeline.train_batches(cfg, data_tiny_vocab, **args), 10))
  resumed = _take(pipeline.train_batches(cfg, data_tiny_vocab, start_position=7, **args), 3)
  assert_equal_batches(straight[7:], resumed)
  other_seed = _take(pipeline.train_batches(_cfg(corpus_file, direction_mode="sample", seed=4),
                                            data_tiny_vocab, **args), 1)
  assert not np.array_equal(other_seed[0]["tokens"], straight[0]["tokens"])


def test_hosts_get_disjoint_shares_covering_the_train_split(corpus_file, data_tiny_vocab):
  source = tasks.TextFiles(str(corpus_file), "line")
  train = {tuple(data_tiny_vocab.encode(d)) for d in tasks.raw_documents(source, "train")}
  cfg = _cfg(corpus_file, direction_mode="l2r", shards=2)  # a shard per host
  l2r_id, _ = vocab.direction_ids(data_tiny_vocab)
  shares = []
  for host in range(2):
    batches = _take(pipeline.train_batches(cfg, data_tiny_vocab, seq_len=SEQ_LEN,
                                           global_batch=BATCH, process_index=host,
                                           process_count=2), 12)  # about 3 epochs per host
    shares.append(set(_segments(batches, l2r_id)))
  assert not shares[0] & shares[1]
  assert shares[0] | shares[1] == train
  assert abs(len(shares[0]) - len(shares[1])) <= 1


def _global(make, hosts: int) -> list[dict]:
  """The global batches: every host's rows, concatenated in host order."""
  per_host = [make(h, hosts) for h in range(hosts)]
  return [{k: np.concatenate([rows[i][k] for rows in per_host]) for k in per_host[0][i]}
          for i in range(len(per_host[0]))]


def test_global_batches_are_the_same_for_any_process_count(corpus_file, data_tiny_vocab):
  cfg = _cfg(corpus_file, direction_mode="sample", shards=4)
  def train(start, n):
    return lambda host, hosts: _take(pipeline.train_batches(
        cfg, data_tiny_vocab, seq_len=SEQ_LEN, global_batch=BATCH, start_position=start,
        process_index=host, process_count=hosts), n)
  one_host = _global(train(0, 4), 1)
  assert_equal_batches(one_host, _global(train(0, 4), 2))
  assert_equal_batches(one_host[2:], _global(train(2, 2), 4))  # resumed on 4 hosts
  evaluation = lambda host, hosts: pipeline.eval_batches(
      cfg, data_tiny_vocab, seq_len=SEQ_LEN, global_batch=BATCH, num_batches=2,
      process_index=host, process_count=hosts)
  assert_equal_batches(_global(evaluation, 1), _global(evaluation, 4))
  with pytest.raises(ValueError, match="DataConfig.shards=3 does not divide the global batch"):
    pipeline.train_batches(_cfg(corpus_file, shards=3), data_tiny_vocab, seq_len=SEQ_LEN,
                           global_batch=BATCH, process_index=0, process_count=1)


def test_eval_batches_are_fixed_held_out_and_both_directions(corpus_file, data_tiny_vocab):
  cfg = _cfg(corpus_file, direction_mode="sample")
  args = dict(seq_len=SEQ_LEN, global_batch=BATCH, num_batches=3, process_index=0,
              process_count=1)
  first = pipeline.eval_batches(cfg, data_tiny_vocab, **args)
  assert_equal_batches(first, pipeline.eval_batches(cfg, data_tiny_vocab, **args))
  assert len(first) == 3 and first[0]["tokens"].shape == (BATCH, SEQ_LEN)
  l2r_id, r2l_id = vocab.direction_ids(data_tiny_vocab)
  held_out = {tuple(data_tiny_vocab.encode(d))
              for d in tasks.raw_documents(tasks.TextFiles(str(corpus_file), "line"),
                                           "validation")}
  assert len(held_out) == 4  # 200 documents, 1 in 50; cycled to fill 3 batches
  assert set(_segments(first, l2r_id)) == held_out
  assert (first[0]["directions"] == 1).any()  # 'sample' trains; eval sees both directions
  starts = first[0]["tokens"][(first[0]["positions"] == 0) & (first[0]["segment_ids"] > 0)]
  assert set(starts.tolist()) == {l2r_id, r2l_id}
  l2r_only = pipeline.eval_batches(_cfg(corpus_file, direction_mode="l2r"), data_tiny_vocab,
                                   **args)
  assert not any((b["directions"] == 1).any() for b in l2r_only)


def test_train_and_validation_are_disjoint(corpus_file, data_tiny_vocab):
  cfg = _cfg(corpus_file, direction_mode="l2r", shards=2)
  l2r_id, _ = vocab.direction_ids(data_tiny_vocab)
  args = dict(seq_len=SEQ_LEN, global_batch=BATCH, process_index=0, process_count=1)
  train = set(_segments(_take(pipeline.train_batches(cfg, data_tiny_vocab, **args), 10), l2r_id))
  held_out = set(_segments(pipeline.eval_batches(cfg, data_tiny_vocab, num_batches=2, **args),
                           l2r_id))
  assert len(train) == 196 and len(held_out) == 4 and not train & held_out


def test_bad_requests_are_clear_errors(corpus_file, data_tiny_vocab, tmp_path):
  with pytest.raises(ValueError, match="3 hosts cannot split DataConfig.shards=8"):
    pipeline.train_batches(_cfg(corpus_file), data_tiny_vocab, seq_len=SEQ_LEN, global_batch=8,
                           process_index=0, process_count=3)
  empty = _cfg(tmp_path / "none*.txt")
  with pytest.raises(ValueError, match=r"none\*\.txt"):  # at the call, before any batch
    pipeline.train_batches(empty, data_tiny_vocab, seq_len=SEQ_LEN, global_batch=8)
  with pytest.raises(ValueError, match="direction_mode='r2l'"):
    _cfg(corpus_file, direction_mode="r2l")


def test_data_config_from_gin(corpus_file, data_tiny_vocab_path):
  gin.parse_config([
      "DataConfig.sources = [(@TextFiles(), 0.7), (@DefaultCorpus(), 0.3)]",
      f"TextFiles.file_pattern = '{corpus_file}'",
      "TextFiles.documents = 'line'",
      f"DataConfig.vocab_path = '{data_tiny_vocab_path}'",
      "DataConfig.direction_mode = 'l2r'"])
  cfg = pipeline.DataConfig()
  assert cfg.sources == ((tasks.TextFiles(str(corpus_file), "line"), 0.7),
                         (tasks.DefaultCorpus(), 0.3))
  hash(cfg)  # a frozen, hashable config
  vocabulary = pipeline.vocabulary_for(cfg)
  assert vocabulary.sentencepiece_model_file == data_tiny_vocab_path
  (batch,) = _take(pipeline.train_batches(cfg, vocabulary, seq_len=SEQ_LEN, global_batch=2,
                                          process_index=0, process_count=1), 1)
  assert batch["tokens"].shape == (2, SEQ_LEN) and not batch["directions"].any()


def test_tokenizer_from_config(corpus_file, tmp_path):
  cfg = _cfg(corpus_file)
  path = vocab.train_tokenizer_from_config(cfg, str(tmp_path / "tok" / "sp"), 320,
                                           max_documents=100)
  assert path == str(tmp_path / "tok" / "sp.model")
  trained = vocab.load_vocabulary(path)
  assert vocab.direction_ids(trained) == (3, 4)
  text = data_sentences(1, seed=99)[0]
  assert trained.decode(trained.encode(text)) == text
