"""seqio tasks for text files, JSONL and a locally built TFDS dataset; mixtures; bad input."""

import json
import logging

import gin
import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from batgpt_jax.data import tasks, vocab


class BatgptTinyText(tfds.core.GeneratorBasedBuilder):
  """A two-split text dataset built in the test's tmp dir (no network)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({"body": tfds.features.Text(),
                                             "id": tfds.features.Scalar(np.int32)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples("train", 30),
            "validation": self._generate_examples("validation", 6)}

  def _generate_examples(self, split, n):  # pylint: disable=arguments-differ
    for i in range(n):
      yield i, {"body": f"The tfds {split} document number {i}.", "id": i}


def _texts(name, vocabulary, split="train", shard=None) -> list[str]:
  ds = seqio.get_mixture_or_task(name).get_dataset(
      sequence_length=None, split=split, shuffle=False, shard_info=shard, num_epochs=1,
      trim_output_features=False)
  out = []
  for batch in ds.ragged_batch(512).as_numpy_iterator():
    for ids in batch["targets"]:
      assert ids[-1] == vocab.EOS_ID
      out.append(vocabulary.decode(ids[:-1].tolist()))
  return out


def _write(path, lines, encoding="utf-8"):
  path.write_bytes(b"".join(line if isinstance(line, bytes) else (line + "\n").encode(encoding)
                            for line in lines))
  return path


def test_text_glob_over_two_files(tmp_path, data_tiny_vocab):
  _write(tmp_path / "a.txt", ["First doc line one.", "line two.", "", "Second doc.", "", ""])
  _write(tmp_path / "b.txt", ["Third doc.", "   ", "Fourth doc.", "", "Fifth doc."])
  source = tasks.TextFiles(str(tmp_path / "*.txt"))
  name = tasks.register_task(source, data_tiny_vocab)
  assert tasks.register_task(source, data_tiny_vocab) == name  # idempotent
  everything = ["First doc line one.\nline two.", "Second doc.", "Third doc.", "Fourth doc.",
                "Fifth doc."]
  # Document 0 of each file is held out (1 in 50, counted per file).
  assert _texts(name, data_tiny_vocab, "validation") == [everything[0], everything[2]]
  assert _texts(name, data_tiny_vocab, "train") == [everything[1]] + everything[3:]
  lines = tasks.TextFiles(f"{tmp_path}/a.txt,{tmp_path}/b.txt", documents="line")
  assert list(tasks.raw_documents(lines, "train")) == [
      "line two.", "Second doc.", "Fourth doc.", "Fifth doc."]


def test_shards_read_whole_files_when_there_are_enough(tmp_path):
  _write(tmp_path / "a.txt", ["a0", "a1", "a2"])
  _write(tmp_path / "b.txt", ["b0", "b1", "b2", "b3"])
  source = tasks.TextFiles(str(tmp_path / "*.txt"), documents="line")
  assert [list(tasks.raw_documents(source, "train", s, 2)) for s in range(2)] == [
      ["a1", "a2"], ["b1", "b2", "b3"]]  # each shard opens only its own file
  # More shards than files: every shard reads all and keeps every third document.
  assert [list(tasks.raw_documents(source, "train", s, 3)) for s in range(3)] == [
      ["a1", "b2"], ["a2", "b3"], ["b1"]]


def test_jsonl_with_a_custom_field(tmp_path, data_tiny_vocab):
  records = [{"content": f"Record {i} 你好", "meta": i} for i in range(5)]
  _write(tmp_path / "x.jsonl", [json.dumps(r, ensure_ascii=False) for r in records] + [""])
  before = tasks.invalid_json_count()
  _write(tmp_path / "y.jsonl", ['{"content": "Record five"}', '{"content": "trunc'])
  name = tasks.register_task(tasks.JsonlFiles(str(tmp_path / "*.jsonl"), "content"),
                             data_tiny_vocab)
  assert _texts(name, data_tiny_vocab, "validation") == ["Record 0 你好", "Record five"]
  assert _texts(name, data_tiny_vocab, "train") == [f"Record {i} 你好" for i in range(1, 5)]
  assert tasks.invalid_json_count() == before + 1
  with pytest.raises(ValueError, match=r"x.jsonl:1 has no string field 'text' \(found \['content"):
    tasks.register_task(tasks.JsonlFiles(str(tmp_path / "x.jsonl")), data_tiny_vocab)


def test_tfds_dataset_built_locally(tmp_path, data_tiny_vocab):
  BatgptTinyText(data_dir=str(tmp_path)).download_and_prepare(download_dir=str(tmp_path / "dl"))
  source = tasks.TfdsDataset("batgpt_tiny_text:1.0.0", data_dir=str(tmp_path),
                             text_feature="body")
  name = tasks.register_task(source, data_tiny_vocab)
  train = _texts(name, data_tiny_vocab, "train")
  assert sorted(train) == sorted(f"The tfds train document number {i}." for i in range(30))
  assert sorted(_texts(name, data_tiny_vocab, "validation")) == sorted(
      f"The tfds validation document number {i}." for i in range(6))
  hosts = [_texts(name, data_tiny_vocab, "train", seqio.ShardInfo(i, 2)) for i in range(2)]
  assert not set(hosts[0]) & set(hosts[1]) and sorted(hosts[0] + hosts[1]) == sorted(train)
  with pytest.raises(ValueError, match="no split 'test'"):
    tasks.register_task(tasks.TfdsDataset("batgpt_tiny_text", data_dir=str(tmp_path),
                                          text_feature="body", eval_split="test"),
                        data_tiny_vocab)
  with pytest.raises(ValueError, match="no feature 'text'"):
    tasks.register_task(tasks.TfdsDataset("batgpt_tiny_text", data_dir=str(tmp_path)),
                        data_tiny_vocab)
  with pytest.raises(ValueError, match="not prepared"):
    tasks.register_task(tasks.TfdsDataset("batgpt_tiny_text", data_dir=str(tmp_path / "none"),
                                          text_feature="body"), data_tiny_vocab)


def test_mixture_rates_are_honoured(tmp_path, data_tiny_vocab):
  a = tasks.TextFiles(str(_write(tmp_path / "a.txt", [f"red {i}" for i in range(100)])), "line")
  b = tasks.TextFiles(str(_write(tmp_path / "b.txt", [f"green {i}" for i in range(100)])), "line")
  name = tasks.register_mixture([(a, 3.0), (b, 1.0)], data_tiny_vocab)
  assert name.startswith("batgpt_mixture_")
  assert tasks.register_mixture([(a, 3.0)], data_tiny_vocab) == tasks.register_task(
      a, data_tiny_vocab)
  ds = seqio.get_mixture_or_task(name).get_dataset(
      sequence_length=None, split="train", shuffle=False, seed=0, num_epochs=None,
      trim_output_features=False)
  red = [data_tiny_vocab.decode(t[:-1].tolist()).startswith("red")
         for batch in ds.take(4000).ragged_batch(1000).as_numpy_iterator()
         for t in batch["targets"]]
  assert len(red) == 4000 and abs(np.mean(red) - 0.75) < 0.03
  with pytest.raises(ValueError, match="listed twice"):
    tasks.register_mixture([(a, 1.0), (a, 2.0)], data_tiny_vocab)
  with pytest.raises(ValueError, match="rates must be positive"):
    tasks.register_mixture([(a, 1.0), (b, 0)], data_tiny_vocab)


def test_empty_sources_are_clear_errors(tmp_path, data_tiny_vocab):
  with pytest.raises(ValueError, match=r"no file matches '.*nothing-\*\.txt'.*file_pattern"):
    tasks.register_task(tasks.TextFiles(str(tmp_path / "nothing-*.txt")), data_tiny_vocab)
  (tmp_path / "empty.txt").write_text("\n   \n\n")
  with pytest.raises(ValueError, match=r"empty.txt.* has 0 document\(s\)"):
    tasks.register_task(tasks.TextFiles(str(tmp_path / "empty.txt")), data_tiny_vocab)
  _write(tmp_path / "one.jsonl", ['{"text": "only one"}'])
  with pytest.raises(ValueError, match="has 1 document"):
    tasks.register_task(tasks.JsonlFiles(str(tmp_path / "one.jsonl")), data_tiny_vocab)
  with pytest.raises(ValueError, match="expected one of"):
    tasks.TextFiles("x.txt", documents="paragraph")


def test_invalid_utf8_lines_are_skipped_and_counted(tmp_path, data_tiny_vocab, caplog):
  path = _write(tmp_path / "bad.txt", ["good zero", b"bad \xff\xfe one\n", "good two",
                                       b"\xc3\x28 bad three\n", "good four", "good five"])
  before = tasks.invalid_utf8_count()
  with caplog.at_level(logging.WARNING):
    name = tasks.register_task(tasks.TextFiles(str(path), "line"), data_tiny_vocab)
    for _ in range(2):  # reading again does not count the same lines again
      assert _texts(name, data_tiny_vocab, "train") == ["good two", "good four", "good five"]
  assert _texts(name, data_tiny_vocab, "validation") == ["good zero"]
  assert tasks.invalid_utf8_count() == before + 2
  assert f"{path}:2" in caplog.text and f"{path}:4" in caplog.text


def test_splits_and_host_shares_by_document_index(tmp_path, data_tiny_vocab):
  source = tasks.TextFiles(str(_write(tmp_path / "one.txt", [f"doc {i}" for i in range(120)])),
                           "line")
  validation = list(tasks.raw_documents(source, "validation"))
  train = list(tasks.raw_documents(source, "train"))
  assert validation == ["doc 0", "doc 50", "doc 100"] and len(train) == 117
  shares = [list(tasks.raw_documents(source, "train", i, 3)) for i in range(3)]
  assert sorted(sum(shares, []), key=lambda d: int(d.split()[1])) == train  # disjoint, complete
  assert [len(s) for s in shares] == [39, 39, 39]
  name = tasks.register_task(source, data_tiny_vocab)
  hosts = [_texts(name, data_tiny_vocab, "train", seqio.ShardInfo(i, 2)) for i in range(2)]
  assert not set(hosts[0]) & set(hosts[1]) and sorted(hosts[0] + hosts[1]) == sorted(train)
  gin.parse_config("validation_split.eval_every = 10")
  assert len(list(tasks.raw_documents(source, "validation"))) == 12
  assert tasks.register_task(source, data_tiny_vocab) != name  # another split, another task
