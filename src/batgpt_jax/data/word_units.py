"""The unit an R2L document is reversed in: tokens (the default) or words.

'token': an R2L document is its tokens reversed. 'word': its WORDS in reverse order, each word's
tokens kept in order, so that a word reads as itself in both directions (a test of whether the
reversal curse is about token order or about word order).

Word boundaries come from the SentencePiece vocabulary alone, one boolean per id, built once:
  - a piece starting with '▁' (SentencePiece's space) begins a word;
  - a piece whose first character is CJK (U+3000..U+9FFF: CJK punctuation, kana, ideographs)
    begins a word: Chinese has no spaces, so each character is its own word;
  - a byte-fallback piece begins a word when it is the lead byte of such a character (0xE3..0xE9),
    so a character spelled in bytes moves as one whole and decodes back;
  - special and control pieces (<l2r>, [User], ...) begin a word.
Everything else (word pieces, continuation bytes, punctuation without a space) continues the
word before it; tokens before the first word start form one word.

Pure numpy, no TensorFlow: the generation side (sample/text.py) reverses prompts with it too.
"""

import functools

import numpy as np

R2L_UNITS = ("token", "word")
_SPACE = "\u2581"
_CJK = (0x3000, 0x9FFF)
_CJK_LEAD_BYTES = (0xE3, 0xE9)  # UTF-8 lead bytes of U+3000..U+9FFF


def check_unit(unit: str, where: str = "r2l_unit") -> str:
  if unit not in R2L_UNITS:
    raise ValueError(f"{where}={unit!r}; expected one of {R2L_UNITS} ('token': an R2L document "
                     "is its tokens reversed, 'word': its words reversed, each word's tokens in "
                     "order).")
  return unit


def piece_starts_word(piece: str, *, is_byte: bool, is_special: bool) -> bool:
  """Whether a vocabulary piece begins a word (the rules in the module docstring)."""
  if is_special:
    return True
  if is_byte:  # '<0xE4>'
    return _CJK_LEAD_BYTES[0] <= int(piece[1:-1], 16) <= _CJK_LEAD_BYTES[1]
  return piece.startswith(_SPACE) or (bool(piece) and _CJK[0] <= ord(piece[0]) <= _CJK[1])


@functools.lru_cache(maxsize=8)
def _table_of(model_file: str, sp) -> np.ndarray:
  del model_file  # the cache key
  return np.asarray([piece_starts_word(sp.id_to_piece(i), is_byte=sp.is_byte(i),
                                       is_special=sp.is_control(i) or sp.is_unknown(i)
                                       or _is_user_defined(sp, i))
                     for i in range(sp.get_piece_size())], bool)


def _is_user_defined(sp, i: int) -> bool:
  from batgpt_jax.data import vocab  # pylint: disable=import-outside-toplevel
  return sp.id_to_piece(i) in vocab.SPECIAL_TOKENS


def word_start_table(vocabulary) -> np.ndarray:
  """[vocab pieces] bool: whether each id begins a word. Built once per tokenizer."""
  return _table_of(vocabulary.sentencepiece_model_file, vocabulary.tokenizer)


def r2l_order(body: np.ndarray, unit: str, word_starts: np.ndarray | None) -> np.ndarray:
  """[n] int indices that put `body` (ids, EOS excluded) in R2L order for `unit`.

  'word': word number = cumsum(starts), then a stable sort by descending word number: the words
  come last to first, the tokens of each in their own order.
  """
  body = np.asarray(body)
  if check_unit(unit) == "token":
    return np.arange(len(body))[::-1]
  words = np.cumsum(word_starts[body])  # [n], non-decreasing
  return np.argsort(-words, kind="stable")


def reversed_units(ids, unit: str, word_starts: np.ndarray | None) -> list[int]:
  """`ids` in reverse order of `unit`: tokens reversed, or words reversed (tokens kept)."""
  ids = np.asarray(list(ids), np.int64)
  return ids[r2l_order(ids, unit, word_starts)].tolist()
