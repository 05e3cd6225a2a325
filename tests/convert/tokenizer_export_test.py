"""The exported tokenizer gives transformers the ids and text of our SentencePiece vocabulary."""

import random

import pytest

transformers = pytest.importorskip("transformers")

# pylint: disable=wrong-import-position
from batgpt_jax.data import chat
from batgpt_jax.convert import tokenizer as hf_tokenizer
from batgpt_jax.data import vocab

ENGLISH = ["The baker sells bread in the morning.", "A small red bird sees the old river.",
           "Number 12345 and 3.14, then 2024-01-02!", "  two leading spaces",
           "tabs\tand\nnew\n\nlines",
           "trailing space ", "MiXeD CaSe and punctuation: ;-) (ok) [x] {y} <z>", ""]
CHINESE = ["今天天气很好。", "我们在河边散步，看见一只小鸟。", "北京 and 上海 are cities.",
           "混合 English 和中文，数字 42。", "生僻字：龘靐齉",
           "emoji 🙂 and ✓"]
MARKERS = ["<l2r>The cat", "<r2l>", "a<eop>b", " [User] hi", "[System]\n\n be brief\n\n<eot>",
           chat.chat_prompt("你好", history=[("hi", "hello")], system="sys")]

_WORDS = ("the cat dog river town market baker bread walks small red green rain sun and with "
          "今天 天气 很 好 我们 河边 小鸟 北京 上海 中文 数字").split()


def _corpus(n: int, seed: int) -> list[str]:
  rng = random.Random(seed)
  return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14))) + rng.choice(".。!？")
          for _ in range(n)]


def _random_texts(n: int, seed: int) -> list[str]:
  rng = random.Random(seed)
  pieces = _WORDS + [" ", "  ", "\n", "\t", "，", "。", "<l2r>", "<eop>", "[User]", "🙂", "x"]
  return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 25))) for _ in range(n)]


@pytest.fixture(scope="module", params=["tiny", "mixed"])
def sp_model_path(request, data_tiny_vocab_path, tmp_path_factory) -> str:
  if request.param == "tiny":
    return data_tiny_vocab_path
  prefix = tmp_path_factory.mktemp("mixed_vocab") / "sp"
  return vocab.train_tokenizer(_corpus(600, seed=1), str(prefix), 700)


def _hf(sp_model_path, directory):
  hf_tokenizer.write_hf_tokenizer(sp_model_path, str(directory), model_max_length=512)
  return transformers.AutoTokenizer.from_pretrained(str(directory))


def test_same_ids_and_text(sp_model_path, tmp_path):
  ours = vocab.load_vocabulary(sp_model_path)
  theirs = _hf(sp_model_path, tmp_path)
  for text in ENGLISH + CHINESE + MARKERS + _random_texts(200, seed=7):
    ids = [int(i) for i in ours.encode(text)]
    assert theirs.encode(text) == ids, text
    assert theirs(text)["input_ids"] == ids, text  # no BOS, no EOS added
    assert theirs.decode(ids) == ours.decode(ids), text


def test_special_tokens(sp_model_path, tmp_path):
  theirs = _hf(sp_model_path, tmp_path)
  assert (theirs.pad_token_id, theirs.eos_token_id, theirs.unk_token_id) == (
      vocab.PAD_ID, vocab.EOS_ID, vocab.UNK_ID)
  assert theirs.bos_token_id is None
  ours = vocab.load_vocabulary(sp_model_path)
  for marker in vocab.SPECIAL_TOKENS:
    assert theirs.convert_tokens_to_ids(marker) == ours.tokenizer.piece_to_id(marker)
  assert (tmp_path / "tokenizer.model").exists()


def test_unsupported_sentencepiece_model_is_refused(tmp_path):
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus(200, seed=2)),
                                 model_prefix=str(tmp_path / "bpe"), vocab_size=150,
                                 model_type="bpe", minloglevel=2)
  with pytest.raises(ValueError, match=r"model_type BPE \(need UNIGRAM\).*nmt_nfkc"):
    hf_tokenizer.tokenizer_json(str(tmp_path / "bpe.model"))
