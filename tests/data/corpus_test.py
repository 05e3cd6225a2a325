"""The embedded default corpus: its generator is deterministic and the shipped file matches it."""

import collections
import gzip
import re

from batgpt_jax.data import corpus
from batgpt_jax.data.corpus import generate

_CJK = re.compile(r"[\u4e00-\u9fff]")


def _shipped():
  return corpus.read_default_documents()


def test_generator_is_deterministic_per_seed():
  a = generate.generate_documents(50, seed=1)
  assert a == generate.generate_documents(50, seed=1)
  assert a != generate.generate_documents(50, seed=2)
  # Document i does not depend on how many are generated, so a short run is a prefix.
  assert generate.generate_documents(10, seed=1) == a[:10]


def test_shipped_file_matches_recorded_command():
  docs = _shipped()
  assert len(docs) == generate.DEFAULT_DOCUMENTS
  # The first 200 are enough to catch a changed generator, lexicon or seed, and keep this fast.
  assert docs[:200] == generate.generate_documents(200, generate.DEFAULT_SEED)


def test_documents_are_well_formed():
  raw = gzip.decompress(corpus.DEFAULT_CORPUS_PATH.read_bytes())
  raw.decode("utf-8")  # strict: raises on invalid UTF-8
  for doc in _shipped():
    assert doc and doc == doc.strip()
    assert "\n\n" not in doc
    assert "\ufffd" not in doc


def test_chinese_share():
  docs = _shipped()
  share = sum(bool(_CJK.search(d)) for d in docs) / len(docs)
  assert 0.05 <= share <= 0.20, share


def test_vocabulary_is_rich_and_documents_are_not_repeated():
  docs = _shipped()
  english = [d for d in docs if not _CJK.search(d)]
  vocab = {w for d in english for w in d.split()}
  assert len(vocab) > 500, len(vocab)
  counts = collections.Counter(docs)
  assert max(counts.values()) <= 3
  assert (len(docs) - len(counts)) / len(docs) < 0.01


def test_write_corpus_roundtrip(tmp_path):
  docs = generate.generate_documents(20, seed=3)
  generate.write_corpus(tmp_path / "a.txt.gz", docs)
  generate.write_corpus(tmp_path / "b" / "c.txt.gz", docs)
  generate.write_corpus(tmp_path / "d.txt", docs)
  # Byte-reproducible: no timestamp or file name in the gzip header.
  assert (tmp_path / "a.txt.gz").read_bytes() == (tmp_path / "b" / "c.txt.gz").read_bytes()
  text = gzip.decompress((tmp_path / "a.txt.gz").read_bytes()).decode("utf-8")
  assert text == (tmp_path / "d.txt").read_text(encoding="utf-8")
  assert [d.strip() for d in text.split("\n\n")] == docs
