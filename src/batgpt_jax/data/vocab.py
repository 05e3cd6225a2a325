"""SentencePiece vocabulary with the direction and chat special tokens; tokenizer training.

Ids follow the T5/seqio convention: 0 = pad, 1 = EOS, 2 = unk, no BOS. The special tokens come
next (ids 3..9), each a single piece. Models are trained with byte fallback and the identity
normalizer, so any UTF-8 text (Chinese, emoji, tabs, repeated spaces) decodes back exactly.
Training is deterministic (one trainer thread, no sentence sampling) and the model file is
written atomically: a crash never leaves a half-written file under the final name.
"""

import hashlib
import io
import os
import pathlib
import tempfile
from typing import Iterable, Iterator

import seqio
import sentencepiece as spm
from google.protobuf import message

from batgpt_jax import config

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
SPECIAL_TOKENS = ("<l2r>", "<r2l>", "[System]", "[User]", "[Assistant]", "<eot>", "<eop>")
L2R_TOKEN, R2L_TOKEN = SPECIAL_TOKENS[0], SPECIAL_TOKENS[1]

# 256 byte pieces + pad/eos/unk + the special tokens must fit, with room for real pieces.
MIN_VOCAB_SIZE = 256 + 3 + len(SPECIAL_TOKENS) + 32
_MAX_SENTENCE_BYTES = 1 << 16  # the trainer silently drops longer lines; ours are paragraphs


def _training_sentences(documents: Iterable[str], max_documents: int | None) -> Iterator[str]:
  # The trainer reads "sentences": the non-empty lines of each document.
  for i, doc in enumerate(documents):
    if max_documents is not None and i >= max_documents:
      return
    for line in doc.split("\n"):
      if line.strip():
        yield line


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is shared
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def train_tokenizer(documents: Iterable[str], model_prefix: str, vocab_size: int, *,
                    max_documents: int | None = None) -> str:
  """Trains a unigram SentencePiece model on `documents`; returns the path `model_prefix.model`."""
  if vocab_size < MIN_VOCAB_SIZE:
    raise ValueError(f"vocab_size={vocab_size} is too small: byte fallback needs 256 byte pieces "
                     f"plus {3 + len(SPECIAL_TOKENS)} special ones. Use vocab_size >= "
                     f"{MIN_VOCAB_SIZE}.")
  sentences = _training_sentences(documents, max_documents)
  first = next(sentences, None)
  if first is None:
    raise ValueError(f"No text to train the tokenizer {model_prefix!r} on: the documents are "
                     "empty. Point the data sources at files that contain text.")
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=_prepend(first, sentences), model_writer=model,
      vocab_size=vocab_size, model_type="unigram",
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      user_defined_symbols=list(SPECIAL_TOKENS),
      byte_fallback=True, character_coverage=0.9995, split_digits=True,
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      hard_vocab_limit=False,  # a small corpus gives a smaller vocabulary instead of an error
      input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,  # deterministic
      max_sentence_length=_MAX_SENTENCE_BYTES, minloglevel=2)
  path = pathlib.Path(f"{model_prefix}.model")
  _write_atomically(path, model.getvalue())
  return str(path)


def _prepend(first: str, rest: Iterator[str]) -> Iterator[str]:
  yield first
  yield from rest


def load_vocabulary(model_path: str) -> seqio.SentencePieceVocabulary:
  """The seqio vocabulary of a SentencePiece model trained with our id convention."""
  if not os.path.exists(model_path):
    raise FileNotFoundError(f"No SentencePiece model at {model_path!r}. Train one with "
                            "`batgpt tokenizer train --output=PREFIX` and set "
                            "DataConfig.vocab_path to PREFIX.model, or leave vocab_path unset "
                            "to use the default vocabulary.")
  vocabulary = seqio.SentencePieceVocabulary(str(model_path))
  try:
    sp = vocabulary.tokenizer  # loads (and parses) the model file
  except (message.DecodeError, RuntimeError, OSError) as err:
    raise config.InputError(f"{model_path} is not a SentencePiece model ({err}). Set "
                            "DataConfig.vocab_path to a .model file written by `batgpt "
                            "tokenizer train`.") from None
  found = (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id())
  if found != (PAD_ID, EOS_ID, UNK_ID, -1):
    raise ValueError(f"{model_path} has (pad, eos, unk, bos) ids {found}; this project needs "
                     f"({PAD_ID}, {EOS_ID}, {UNK_ID}, -1). Retrain it with "
                     "`batgpt tokenizer train`.")
  return vocabulary


def direction_ids(vocabulary) -> tuple[int, int]:
  """(l2r_id, r2l_id): the ids of the direction tokens, which must be single pieces."""
  sp = vocabulary.tokenizer
  ids = []
  for token in (L2R_TOKEN, R2L_TOKEN):
    piece_id = sp.piece_to_id(token)
    if piece_id == sp.unk_id() or sp.id_to_piece(piece_id) != token:
      raise ValueError(f"The tokenizer {vocabulary.sentencepiece_model_file} has no piece "
                       f"{token!r}; the bidirectional objective needs {L2R_TOKEN!r} and "
                       f"{R2L_TOKEN!r}. Retrain it with `batgpt tokenizer train` (which adds "
                       f"{SPECIAL_TOKENS}).")
    ids.append(piece_id)
  return ids[0], ids[1]


def cache_dir() -> pathlib.Path:
  """$BATGPT_CACHE, default ~/.cache/batgpt_jax."""
  return pathlib.Path(os.environ.get("BATGPT_CACHE", "~/.cache/batgpt_jax")).expanduser()


def default_vocabulary(vocab_size: int = 2048) -> seqio.SentencePieceVocabulary:
  """The tokenizer of the embedded corpus: trained on first use, then loaded from the cache."""
  from batgpt_jax.data import corpus  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256(corpus.DEFAULT_CORPUS_PATH.read_bytes()).hexdigest()[:16]
  path = cache_dir() / "tokenizers" / f"default-{digest}-{vocab_size}.model"
  if not path.exists():
    # Two processes may both train; each renames a complete file into place, and the two are
    # identical because training is deterministic.
    train_tokenizer(corpus.read_default_documents(), str(path)[: -len(".model")], vocab_size)
  return load_vocabulary(str(path))


def train_tokenizer_from_config(cfg, output_prefix: str, vocab_size: int,
                                max_documents: int = 200_000) -> str:
  """Trains a tokenizer on the raw train-split text of `cfg.sources` (a DataConfig).

  Each source contributes documents in proportion to its mixture rate, `max_documents` in all.
  """
  from batgpt_jax.data import tasks  # pylint: disable=import-outside-toplevel
  total_rate = sum(rate for _, rate in cfg.sources)

  def documents() -> Iterator[str]:
    for source, rate in cfg.sources:
      share = max(1, round(max_documents * rate / total_rate))
      for i, doc in enumerate(tasks.raw_documents(source, "train")):
        if i >= share:
          break
        yield doc

  return train_tokenizer(documents(), output_prefix, vocab_size)
