"""The vocabulary: id convention, special tokens, exact round trips, deterministic and cached."""

import os

import pytest
import sentencepiece as spm
import tensorflow as tf

from batgpt_jax.data import vocab
from testlib import data_sentences

ROUND_TRIP = [
    "今天天气很好，我们去公园散步吧！",  # Chinese, mostly unseen characters
    "emoji 😀🎉👍🏽 and flags 🇨🇳",
    "tabs\tand  two spaces, trailing space ",
    "line one\nline two\n\nafter a blank line",
    "accents: café naïve Ǆ ﬁ (a ligature) and zero\u200bwidth",
    " leading space and Ελληνικά, русский, العربية, 한국어",
]


def test_ids_follow_the_t5_convention(data_tiny_vocab):
  sp = data_tiny_vocab.tokenizer
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert (vocab.PAD_ID, vocab.EOS_ID, vocab.UNK_ID) == (0, 1, 2)
  assert data_tiny_vocab.eos_id == 1 and data_tiny_vocab.vocab_size == sp.get_piece_size()
  assert vocab.direction_ids(data_tiny_vocab) == (3, 4)


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_byte_fallback_round_trips_any_utf8_exactly(data_tiny_vocab, text):
  ids = data_tiny_vocab.encode(text)
  assert vocab.UNK_ID not in ids
  assert data_tiny_vocab.decode(ids) == text
  # The pipeline tokenizes with the TensorFlow op: it must give the same ids.
  assert data_tiny_vocab.encode_tf(tf.constant(text)).numpy().tolist() == ids


def test_each_special_token_is_one_piece(data_tiny_vocab):
  sp = data_tiny_vocab.tokenizer
  for piece_id, token in enumerate(vocab.SPECIAL_TOKENS, start=3):
    assert sp.id_to_piece(piece_id) == token
    ids = data_tiny_vocab.encode(f"cat{token}dog")
    assert ids.count(piece_id) == 1  # one id, not pieces of "<", "l2r", ">"
    assert data_tiny_vocab.decode(ids) == f"cat{token}dog"


def test_training_is_deterministic_and_leaves_no_temporary_files(tmp_path):
  docs = data_sentences(300, seed=3)
  first = vocab.train_tokenizer(docs, str(tmp_path / "a"), 320)
  second = vocab.train_tokenizer(docs, str(tmp_path / "b"), 320)
  assert open(first, "rb").read() == open(second, "rb").read()
  assert sorted(os.listdir(tmp_path)) == ["a.model", "b.model"]


def test_max_documents_limits_the_training_text(tmp_path):
  docs = data_sentences(300) + ["zebra quokka axolotl " * 50] * 300
  path = vocab.train_tokenizer(docs, str(tmp_path / "sp"), 320, max_documents=300)
  pieces = {vocab.load_vocabulary(path).tokenizer.id_to_piece(i) for i in range(320)}
  assert not any("quokka" in p for p in pieces)


def test_bad_requests_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="vocab_size >= "):
    vocab.train_tokenizer(["text"], str(tmp_path / "sp"), 100)
  with pytest.raises(ValueError, match="No text"):
    vocab.train_tokenizer(["", "  \n "], str(tmp_path / "sp"), 320)
  assert not os.listdir(tmp_path)  # nothing half-written
  with pytest.raises(FileNotFoundError, match="batgpt tokenizer train"):
    vocab.load_vocabulary(str(tmp_path / "missing.model"))


def test_foreign_models_are_refused(tmp_path):
  lines = data_sentences(200)
  spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "t5"),
                                 vocab_size=100, minloglevel=2)  # default ids: unk 0, bos 1
  with pytest.raises(ValueError, match=r"\(pad, eos, unk, bos\) ids"):
    vocab.load_vocabulary(str(tmp_path / "t5.model"))
  spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(tmp_path / "nd"),
                                 vocab_size=100, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 minloglevel=2)
  with pytest.raises(ValueError, match="has no piece '<l2r>'"):
    vocab.direction_ids(vocab.load_vocabulary(str(tmp_path / "nd.model")))


def test_default_vocabulary_is_trained_once_then_loaded(tmp_path, monkeypatch):
  monkeypatch.setenv("BATGPT_CACHE", str(tmp_path))
  calls = []
  real_train = vocab.train_tokenizer

  def counting_train(*args, **kwargs):
    calls.append(args[1])
    return real_train(*args, **kwargs)

  monkeypatch.setattr(vocab, "train_tokenizer", counting_train)
  first = vocab.default_vocabulary(512)
  second = vocab.default_vocabulary(512)
  assert len(calls) == 1
  (cached,) = (tmp_path / "tokenizers").iterdir()
  assert cached.name.startswith("default-") and cached.name.endswith("-512.model")
  assert first.sentencepiece_model_file == second.sentencepiece_model_file == str(cached)
  text = "Otto went to the market. 小红穿了一件白色的衣服。"
  assert second.decode(second.encode(text)) == text
