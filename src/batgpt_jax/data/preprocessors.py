"""Direction assignment (L2R / R2L), packing with segment ids and positions, and targets.

Direction is data: an L2R document is [<l2r>] + tokens (ending in EOS); an R2L document is
[<r2l>] + its tokens reversed, with the EOS kept last; with unit 'word' (DataConfig.r2l_unit) its
words are reversed instead, each word's tokens kept in order (data/word_units.py says what a word
is). Each document also carries
`direction` (0 = L2R, 1 = R2L) so that chunks of an over-long R2L document, which do not start
with <r2l>, are still counted as R2L after packing.

Packing is best-fit over a few open rows, in numpy (fast and easy to reason about), reading
documents from a tf.data pipeline. A document longer than a row is cut into row-sized chunks,
each its own segment; no other document is ever split.

Per-token fields. Any feature of a document besides 'targets' and 'direction' (instruction data
has 'loss_mask', one int per target) is carried along: the direction token gets 0, an R2L
document's field is permuted exactly like its tokens, and packing lays it out beside the tokens (0 in
padding). make_targets turns 'loss_mask' into loss_weights. Documents without such fields give
exactly the rows they gave before fields were carried.
"""

import itertools
from typing import Iterable, Iterator

import numpy as np
import tensorflow as tf

from batgpt_jax.data import word_units
from batgpt_jax.data.vocab import EOS_ID

DIRECTION_MODES = ("both", "sample", "l2r")
L2R, R2L = 0, 1
_OPEN_ROWS = 8  # rows kept open for best-fit packing: more fill rows better but emit later
_DOCS_PER_READ = 256


def _r2l_order(tokens: tf.Tensor, unit: str, word_starts) -> tf.Tensor:
  """[n - 1] indices putting the body (EOS excluded) in R2L order; word_units.r2l_order in tf."""
  body = tokens[:-1]
  if unit == "token":
    return tf.range(tf.size(body) - 1, -1, -1)
  words = tf.cumsum(tf.cast(tf.gather(word_starts, body), tf.int32))  # word number per token
  return tf.argsort(-words, stable=True)  # last word first, each word's tokens in order


def _directed(values: tf.Tensor, direction: int, first, order) -> tf.Tensor:
  """[first] + values (L2R), or [first] + the body in R2L `order`, the last (EOS) kept last."""
  if direction == L2R:
    return tf.concat([[first], values], axis=0)
  return tf.concat([[first], tf.gather(values[:-1], order), values[-1:]], axis=0)


def _with_direction(tokens: tf.Tensor, fields: dict, direction: int, l2r_id: int,
                    r2l_id: int, unit: str, word_starts) -> dict:
  order = None if direction == L2R else _r2l_order(tokens, unit, word_starts)
  out = {name: _directed(values, direction, tf.zeros((), values.dtype), order)
         for name, values in fields.items()}  # per-token fields: 0 under the direction token
  out.update(targets=_directed(tokens, direction, l2r_id if direction == L2R else r2l_id, order),
             direction=tf.constant(direction, tf.int32))
  return out


def _per_token_fields(example: dict) -> dict:
  return {name: values for name, values in example.items() if name != "targets"}


def _checked_tokens(example: dict) -> tf.Tensor:
  tokens = tf.cast(example["targets"], tf.int32)
  check = tf.debugging.assert_equal(
      tokens[-1:], tf.constant([EOS_ID], tf.int32),
      message="assign_directions expects 'targets' to be one document ending in EOS "
              f"(id {EOS_ID}); tokenize with add_eos=True first.")
  with tf.control_dependencies([check]):
    return tf.identity(tokens)


def _checked_word_starts(unit: str, word_starts):
  word_units.check_unit(unit)
  if unit == "word" and word_starts is None:
    raise ValueError("r2l_unit='word' needs the vocabulary's word-start table "
                     "(word_units.word_start_table(vocabulary)); none was given.")
  return None if word_starts is None else np.asarray(word_starts, bool)


def assign_directions(dataset: tf.data.Dataset, *, mode: str, seed: int, l2r_id: int,
                      r2l_id: int, unit: str = "token",
                      word_starts: np.ndarray | None = None) -> tf.data.Dataset:
  """Documents ('targets' ending in EOS) -> directed documents: 'targets' and 'direction'.

  mode 'both': each document twice, L2R first; 'sample': one direction per document, chosen by
  a keyed hash of (seed, its tokens), so it is deterministic and balanced; 'l2r': L2R only.
  unit: what an R2L document reverses, 'token' or 'word' (then `word_starts`, [vocab] bool,
  from word_units.word_start_table, is needed).
  """
  if mode not in DIRECTION_MODES:
    raise ValueError(f"direction mode {mode!r}; expected one of {DIRECTION_MODES}.")
  starts = _checked_word_starts(unit, word_starts)
  starts = None if starts is None else tf.constant(starts)
  direct = lambda tokens, fields, direction: _with_direction(  # noqa: E731
      tokens, fields, direction, l2r_id, r2l_id, unit, starts)
  if mode == "l2r":
    return dataset.map(lambda ex: direct(_checked_tokens(ex), _per_token_fields(ex), L2R),
                       num_parallel_calls=tf.data.AUTOTUNE)
  if mode == "both":
    def both(example):
      tokens, fields = _checked_tokens(example), _per_token_fields(example)
      return tf.data.Dataset.from_tensors(direct(tokens, fields, L2R)).concatenate(
          tf.data.Dataset.from_tensors(direct(tokens, fields, R2L)))
    return dataset.flat_map(both)

  key = [seed % (1 << 64), 0x62617467707400]  # the hash key: the seed and a fixed salt

  def sample(example):
    tokens, fields = _checked_tokens(example), _per_token_fields(example)
    bucket = tf.strings.to_hash_bucket_strong(tf.io.serialize_tensor(tokens), 2, key=key)
    return tf.cond(bucket == R2L, lambda: direct(tokens, fields, R2L),
                   lambda: direct(tokens, fields, L2R))
  return dataset.map(sample, num_parallel_calls=tf.data.AUTOTUNE)


def directed_document(doc: dict, direction: int, l2r_id: int, r2l_id: int, unit: str = "token",
                      word_starts: np.ndarray | None = None) -> dict:
  """The numpy twin of assign_directions for one document ({'targets': ids ending in EOS, and
  per-token fields}): prepared data (data/prepared.py) is directed per element by index."""
  starts = _checked_word_starts(unit, word_starts)
  tokens = np.asarray(doc["targets"], np.int32)
  if tokens.size == 0 or tokens[-1] != EOS_ID:
    raise ValueError("A directed document must be one document ending in EOS "
                     f"(id {EOS_ID}); tokenize with add_eos=True first.")
  order = None if direction == L2R else word_units.r2l_order(tokens[:-1], unit, starts)

  def directed(values, first):
    values = np.asarray(values)
    body = values if direction == L2R else np.concatenate([values[:-1][order], values[-1:]])
    return np.concatenate([np.asarray([first], values.dtype), body])

  out = {name: directed(values, 0) for name, values in doc.items() if name != "targets"}
  out["targets"] = directed(tokens, l2r_id if direction == L2R else r2l_id)
  out["direction"] = np.int32(direction)
  return out


# --- packing ------------------------------------------------------------------------------------

ROW_EMPTY, ROW_OPEN, ROW_READY = 0, 1, 2  # a slot of a saved packer state
_ROW_KEYS = ("tokens", "segment_ids", "positions")


def _new_row() -> dict:
  return {"pieces": [], "fields": [], "used": 0}


def _finish_row(row: dict, seq_len: int, with_directions: bool) -> dict[str, np.ndarray]:
  out = {name: np.zeros(seq_len, np.int32) for name in _ROW_KEYS}
  if with_directions:
    out["directions"] = np.zeros(seq_len, np.int32)
  fields = row.get("fields") or [{} for _ in row["pieces"]]  # per piece: name -> [len(piece)]
  for name, values in (fields[0] if fields else {}).items():
    out[name] = np.zeros(seq_len, values.dtype)
  start = 0
  for segment, ((piece, direction), piece_fields) in enumerate(zip(row["pieces"], fields),
                                                               start=1):
    end = start + len(piece)
    out["tokens"][start:end] = piece
    out["segment_ids"][start:end] = segment
    out["positions"][start:end] = np.arange(len(piece), dtype=np.int32)
    if with_directions:
      out["directions"][start:end] = direction
    for name, values in piece_fields.items():
      out[name][start:end] = values
    start = end
  return out


def _reopened_row(arrays: dict[str, np.ndarray]) -> dict:
  """The open row that `_finish_row` laid out as `arrays` (the inverse, for a saved state)."""
  row = _new_row()
  fields = [name for name in arrays if name not in (*_ROW_KEYS, "directions")]
  segments = arrays["segment_ids"]
  for segment in range(1, int(segments.max(initial=0)) + 1):
    where = segments == segment
    direction = int(arrays["directions"][where][0]) if "directions" in arrays else L2R
    row["pieces"].append((arrays["tokens"][where], direction))
    row["fields"].append({name: arrays[name][where] for name in fields})
    row["used"] += int(where.sum())
  return row


def _fields_of(doc: dict, length: int) -> dict[str, np.ndarray]:
  fields = {name: np.asarray(values) for name, values in doc.items()
            if name not in ("targets", "direction")}
  for name, values in fields.items():
    if values.shape != (length,):
      raise ValueError(f"Per-token field {name!r} has shape {values.shape}; packing expects one "
                       f"value per target token, shape ({length},).")
  return fields


class PackedRows:
  """Best-fit packing of a document stream into rows, one row per `next`, resumable anywhere.

  `documents_from(i)` iterates the stream's documents from number i ({'targets': [n]},
  optionally 'direction' and per-token fields such as 'loss_mask': [n]). Each row is
  {tokens, segment_ids, positions (, directions) (, each per-token field)}, all [seq_len];
  segment ids run 1..k in a row and 0 marks padding (where fields are 0 too); positions restart
  at 0 in every segment. A document longer than a row is cut into row-sized chunks, each its
  own segment; no other document is split. A chunk goes into the fullest of `_OPEN_ROWS` open
  rows that has room; with none, the fullest open row (the oldest among equals) is emitted.

  `state()` after any row is everything needed to go on from there: the stream position (the
  document and the chunk in it) and the open rows, plus a row already finished but not yet
  taken. `PackedRows(documents_from, seq_len, state)` continues exactly as the original would,
  reading the stream from that document on; with a random-access stream that costs the same
  at any position.
  """

  def __init__(self, documents_from, seq_len: int, state: dict | None = None):
    if seq_len < 2:
      raise ValueError(f"seq_len={seq_len}; packed rows need at least 2 tokens.")
    self._documents_from, self._seq_len = documents_from, seq_len
    self._rows: list[dict] = []  # open rows
    self._ready: list[dict[str, np.ndarray]] = []  # finished rows, not yet taken
    self._with_directions = None
    self._document, self._chunk = 0, 0  # the next chunk to pack: document number, start token
    self._current = None  # (tokens, direction, fields) of that document, once read
    self._stream = None
    self._exhausted = False
    if state is not None:
      self._restore(state)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    while not self._ready:
      if self._exhausted:
        raise StopIteration
      if self._current is None and not self._read_document():
        self._exhausted = True
        self._ready = [_finish_row(row, self._seq_len, bool(self._with_directions))
                       for row in self._rows]
        self._rows = []
        continue
      self._pack_next_chunk()
    return self._ready.pop(0)

  def _read_document(self) -> bool:
    if self._stream is None:
      self._stream = iter(self._documents_from(self._document))
    doc = next(self._stream, None)
    if doc is None:
      return False
    if self._with_directions is None:
      self._with_directions = "direction" in doc
    tokens = np.asarray(doc["targets"], np.int32)
    self._current = (tokens, int(doc.get("direction", L2R)), _fields_of(doc, len(tokens)))
    return True

  def _pack_next_chunk(self) -> None:
    tokens, direction, fields = self._current
    start, seq_len = self._chunk, self._seq_len
    chunk = tokens[start:start + seq_len]
    rows = self._rows
    fits = [(seq_len - r["used"], i) for i, r in enumerate(rows)
            if seq_len - r["used"] >= len(chunk)]
    if fits:
      i = min(fits)[1]  # best fit: the fullest row with room
    else:
      if len(rows) == _OPEN_ROWS:  # emit the fullest row (the oldest among equals)
        fullest = max(range(len(rows)), key=lambda k: rows[k]["used"])
        self._ready.append(self._finish(rows.pop(fullest)))
      rows.append(_new_row())
      i = len(rows) - 1
    rows[i]["pieces"].append((chunk, direction))
    rows[i]["fields"].append({name: values[start:start + seq_len]
                              for name, values in fields.items()})
    rows[i]["used"] += len(chunk)
    if rows[i]["used"] == seq_len:
      self._ready.append(self._finish(rows.pop(i)))
    self._chunk += seq_len
    if self._chunk >= len(tokens):
      self._document, self._chunk, self._current = self._document + 1, 0, None

  def _finish(self, row: dict) -> dict[str, np.ndarray]:
    return _finish_row(row, self._seq_len, bool(self._with_directions))

  def state(self) -> dict[str, np.ndarray]:
    """Fixed-shape arrays: 'cursor' int32 [3] (the document number in two 31-bit halves, the
    chunk start), 'slots' int32 [_OPEN_ROWS + 2] (ROW_OPEN, ROW_READY or ROW_EMPTY) and each
    row field [_OPEN_ROWS + 2, seq_len], the open rows first, then the finished ones."""
    if self._exhausted:
      raise ValueError("The document stream ended: a finite stream is not resumed.")
    slots = _OPEN_ROWS + 2  # at most one finished row waits between two `next` calls
    laid_out = [self._finish(row) for row in self._rows] + self._ready
    assert len(laid_out) <= slots, len(laid_out)
    template = laid_out[0] if laid_out else self._finish(_new_row())
    if not laid_out and self._current is not None:  # per-token fields of an empty packer
      template.update({name: np.zeros(self._seq_len, values.dtype)
                       for name, values in self._current[2].items()})
    out = {name: np.zeros((slots, self._seq_len), values.dtype)
           for name, values in template.items()}
    for k, row in enumerate(laid_out):
      for name, values in row.items():
        out[name][k] = values
    kinds = [ROW_OPEN] * len(self._rows) + [ROW_READY] * len(self._ready)
    out["slots"] = np.asarray(kinds + [ROW_EMPTY] * (slots - len(kinds)), np.int32)
    out["cursor"] = np.asarray([self._document >> 31, self._document & (2**31 - 1),
                                self._chunk], np.int32)
    return out

  def _restore(self, state: dict) -> None:
    state = {name: np.asarray(values) for name, values in state.items()}
    if state["tokens"].shape[-1] != self._seq_len:
      raise ValueError(f"The saved packer state has rows of {state['tokens'].shape[-1]} tokens, "
                       f"this stream packs {self._seq_len}.")
    high, low, chunk = (int(v) for v in state["cursor"])
    self._document, self._chunk = (high << 31) | low, chunk
    if self._document or self._chunk or state["slots"].any():  # else nothing was read yet
      self._with_directions = "directions" in state
    row_names = [name for name in state if name not in ("cursor", "slots")]
    for k, kind in enumerate(state["slots"]):
      arrays = {name: state[name][k] for name in row_names}
      if kind == ROW_OPEN:
        self._rows.append(_reopened_row(arrays))
      elif kind == ROW_READY:
        self._ready.append(arrays)
    if self._chunk:  # the rest of a document that was cut across rows
      if not self._read_document():
        raise ValueError(f"The saved packer state is inside document {self._document}, which "
                         "the stream no longer has.")


def pack_documents(documents: Iterable[dict], seq_len: int) -> Iterator[dict[str, np.ndarray]]:
  """Numpy best-fit packing of `documents` (see PackedRows), read once from the start."""
  documents = iter(documents)
  return PackedRows(lambda start: itertools.islice(documents, start, None), seq_len)


def pack(dataset: tf.data.Dataset, seq_len: int, state: dict | None = None) -> PackedRows:
  """Directed documents -> packed numpy rows: tokens, segment_ids, positions (, directions).

  `directions` is present when the documents carry 'direction' (from assign_directions).
  Documents are read _DOCS_PER_READ at a time and tokenised ahead by tf.data's own threads;
  the packing runs in the caller's thread. (Not a tf.data `from_generator`: a tf.data op that
  wraps a Python generator which itself reads tf.data is slow to tear down.) Resuming from a
  `state` skips the documents before its position in tf.data (read, not packed).
  """
  return PackedRows(lambda start: _unbatched(
      dataset.skip(start).ragged_batch(_DOCS_PER_READ).prefetch(1)), seq_len, state)


def _unbatched(batches: tf.data.Dataset) -> Iterator[dict]:
  # Reading documents a batch at a time costs one Python round trip per batch, not per document.
  for batch in batches.as_numpy_iterator():
    for i in range(len(batch["targets"])):
      yield {name: values[i] for name, values in batch.items()}


def make_targets(packed: dict[str, np.ndarray], r2l_id: int) -> dict[str, np.ndarray]:
  """Adds next-token targets, loss_weights and directions to packed rows ([..., L] arrays).

  targets[i] = tokens[i+1] where i+1 is in the same segment, else 0; loss_weights is 1.0 exactly
  there. With a 'loss_mask' (instruction data), position i is a target only when, besides,
  loss_mask[i+1] is 1 (token i+1 is part of an assistant reply); the mask itself is not passed
  on. directions (1 = R2L) is kept if packing carried it, else a segment is R2L when its first
  token is r2l_id. Padding has target 0, weight 0 and direction 0.
  """
  tokens = np.asarray(packed["tokens"], np.int32)
  segments = np.asarray(packed["segment_ids"], np.int32)
  same = np.zeros(tokens.shape, bool)
  same[..., :-1] = (segments[..., 1:] == segments[..., :-1]) & (segments[..., :-1] > 0)
  out = dict(packed)
  if "loss_mask" in out:
    predicts_reply = np.zeros(tokens.shape, bool)
    predicts_reply[..., :-1] = np.asarray(out.pop("loss_mask"))[..., 1:] > 0
    same &= predicts_reply
  targets = np.zeros_like(tokens)
  targets[..., :-1] = np.where(same[..., :-1], tokens[..., 1:], 0)
  out.update(tokens=tokens, segment_ids=segments,
             positions=np.asarray(packed["positions"], np.int32), targets=targets,
             loss_weights=same.astype(np.float32))
  if "directions" in packed:
    out["directions"] = np.where(segments > 0, np.asarray(packed["directions"], np.int32), 0)
  else:
    out["directions"] = _directions_from_first_tokens(tokens, segments, out["positions"],
                                                      r2l_id)
  return out


def _directions_from_first_tokens(tokens, segments, positions, r2l_id) -> np.ndarray:
  rows = tokens.reshape(-1, tokens.shape[-1])  # [rows, L]
  seg = segments.reshape(rows.shape)
  starts_r2l = (positions.reshape(rows.shape) == 0) & (seg > 0) & (rows == r2l_id)
  per_segment = np.zeros((rows.shape[0], rows.shape[1] + 1), np.int32)  # [rows, max segs + 1]
  r, c = np.nonzero(starts_r2l)
  per_segment[r, seg[r, c]] = 1
  return np.take_along_axis(per_segment, seg, axis=1).reshape(tokens.shape)  # padding: row 0


def reverse_segments(tokens, segment_ids) -> np.ndarray:
  """Reverses the tokens of every segment in place ([..., L]); padding (segment 0) untouched."""
  tokens = np.asarray(tokens)
  seg = np.asarray(segment_ids).reshape(-1, tokens.shape[-1])  # [rows, L]
  rows = tokens.reshape(seg.shape)
  length = seg.shape[1]
  index = np.broadcast_to(np.arange(length), seg.shape)
  is_start = np.ones(seg.shape, bool)
  is_start[:, 1:] = seg[:, 1:] != seg[:, :-1]
  is_end = np.ones(seg.shape, bool)
  is_end[:, :-1] = seg[:, :-1] != seg[:, 1:]
  start = np.maximum.accumulate(np.where(is_start, index, 0), axis=1)
  end = np.flip(np.minimum.accumulate(np.flip(np.where(is_end, index, length), axis=1), axis=1),
                axis=1)
  source = np.where(seg > 0, start + end - index, index)  # [rows, L]
  return np.take_along_axis(rows, source, axis=1).reshape(tokens.shape)
