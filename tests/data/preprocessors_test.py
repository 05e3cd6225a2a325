"""Directions, token reversal, packing and targets."""

import numpy as np
import pytest
import tensorflow as tf

from batgpt_jax.data import preprocessors, vocab

L2R_ID, R2L_ID, EOS = 3, 4, vocab.EOS_ID


def _docs_dataset(docs: list[list[int]]) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices({"targets": tf.ragged.constant(docs, tf.int32)})


def _directed(docs, mode, seed=0) -> list[tuple[int, list[int]]]:
  ds = preprocessors.assign_directions(_docs_dataset(docs), mode=mode, seed=seed, l2r_id=L2R_ID,
                                       r2l_id=R2L_ID)
  out = []
  for batch in ds.ragged_batch(1000).as_numpy_iterator():  # one round trip per 1000 documents
    out += [(int(d), t.tolist()) for d, t in zip(batch["direction"], batch["targets"])]
  return out


def test_reverse_segments_is_exact_and_leaves_padding():
  tokens = np.array([[10, 11, 12, 20, 21, 30, 0, 0], [5, 6, 7, 8, 9, 1, 2, 3]], np.int32)
  segments = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]], np.int32)
  reversed_ = preprocessors.reverse_segments(tokens, segments)
  np.testing.assert_array_equal(reversed_, [[12, 11, 10, 21, 20, 30, 0, 0],
                                            [3, 2, 1, 9, 8, 7, 6, 5]])
  np.testing.assert_array_equal(preprocessors.reverse_segments(reversed_, segments), tokens)
  rng = np.random.default_rng(0)
  rows = [preprocessors._finish_row(  # pylint: disable=protected-access
      {"pieces": [(rng.integers(5, 99, n), 0) for n in lengths]}, 16, False)
      for lengths in ([3, 5, 2], [16], [1, 1, 1, 4], [7])]
  toks = np.stack([r["tokens"] for r in rows])
  segs = np.stack([r["segment_ids"] for r in rows])
  twice = preprocessors.reverse_segments(preprocessors.reverse_segments(toks, segs), segs)
  np.testing.assert_array_equal(twice, toks)
  np.testing.assert_array_equal(preprocessors.reverse_segments(toks[0], segs[0]),
                                preprocessors.reverse_segments(toks, segs)[0])  # 1-D works


def test_r2l_targets_are_the_document_reversed(data_tiny_vocab):
  text = "The baker sells bread to the small town number 7."
  ids = data_tiny_vocab.encode(text) + [EOS]
  l2r_id, r2l_id = vocab.direction_ids(data_tiny_vocab)
  directed = preprocessors.assign_directions(_docs_dataset([ids]), mode="both", seed=0,
                                             l2r_id=l2r_id, r2l_id=r2l_id)
  (row,) = list(preprocessors.pack(directed, 128))
  batch = preprocessors.make_targets({k: v[None] for k, v in row.items()}, r2l_id)
  n = len(ids)  # tokens of the document, EOS included
  l2r, r2l = slice(0, n + 1), slice(n + 1, 2 * n + 2)
  assert batch["tokens"][0, l2r].tolist() == [l2r_id] + ids
  assert batch["tokens"][0, r2l].tolist() == [r2l_id] + ids[-2::-1] + [EOS]
  assert batch["targets"][0, l2r].tolist() == ids + [0]
  r2l_targets = batch["targets"][0, r2l].tolist()
  assert r2l_targets == ids[-2::-1] + [EOS, 0]
  assert data_tiny_vocab.decode(r2l_targets[:n - 1][::-1]) == text
  assert batch["directions"][0].tolist() == [0] * (n + 1) + [1] * (n + 1) + [0] * (126 - 2 * n)
  np.testing.assert_array_equal(batch["loss_weights"][0, :2 * n + 2],
                                [1.0] * n + [0.0] + [1.0] * n + [0.0])


def test_both_yields_each_document_twice_l2r_first():
  docs = [[7, 8, 9, EOS], [10, EOS], [EOS]]
  assert _directed(docs, "both") == [
      (0, [L2R_ID, 7, 8, 9, EOS]), (1, [R2L_ID, 9, 8, 7, EOS]),
      (0, [L2R_ID, 10, EOS]), (1, [R2L_ID, 10, EOS]),
      (0, [L2R_ID, EOS]), (1, [R2L_ID, EOS])]


def test_l2r_mode_is_only_l2r():
  docs = [[7, 8, 9, EOS], [10, 11, EOS]]
  assert _directed(docs, "l2r") == [(0, [L2R_ID, 7, 8, 9, EOS]), (0, [L2R_ID, 10, 11, EOS])]


def test_sample_mode_is_deterministic_balanced_and_seeded():
  rng = np.random.default_rng(0)
  docs = [[5 + i // 1000, 5 + i % 1000] + rng.integers(5, 500, i % 7).tolist() + [EOS]
          for i in range(10_000)]  # 10,000 distinct documents
  first = _directed(docs, "sample", seed=1)
  assert first == _directed(docs, "sample", seed=1)
  other = _directed(docs, "sample", seed=2)
  choices = np.array([d for d, _ in first])
  assert abs(choices.mean() - 0.5) < 0.05
  assert 0.4 < np.mean(choices != np.array([d for d, _ in other])) < 0.6
  for (direction, tokens), doc in zip(first, docs):  # one version per document, the right one
    expected = [L2R_ID] + doc if direction == 0 else [R2L_ID] + doc[-2::-1] + [EOS]
    assert tokens == expected


def test_bad_direction_input_is_refused():
  with pytest.raises(ValueError, match="expected one of"):
    _directed([[5, EOS]], "r2l")
  with pytest.raises(tf.errors.InvalidArgumentError, match="ending in EOS"):
    _directed([[5, 6]], "both")


def test_packing_keeps_documents_whole_and_positions_restart():
  rng = np.random.default_rng(0)
  seq_len = 16
  lengths = [5, 9, 3, 16, 40, 1, 7, 12, 2, 6, 11, 4]
  docs = [{"targets": np.append(rng.integers(5, 99, n - 1), EOS).astype(np.int32),
           "direction": i % 2} for i, n in enumerate(lengths)]
  rows = list(preprocessors.pack_documents(docs, seq_len))
  segments = []
  for row in rows:
    assert all(row[k].shape == (seq_len,) and row[k].dtype == np.int32 for k in row)
    seg, pos = row["segment_ids"], row["positions"]
    k = seg.max()
    assert (seg[seg > 0] == np.repeat(np.arange(1, k + 1), np.bincount(seg)[1:])).all()
    assert (seg[(seg > 0).sum():] == 0).all()  # padding only at the end
    for s in range(1, k + 1):
      assert pos[seg == s].tolist() == list(range((seg == s).sum()))
      segments.append((row["tokens"][seg == s].tolist(), set(row["directions"][seg == s].tolist())))
    assert (row["tokens"][seg == 0] == 0).all() and (row["directions"][seg == 0] == 0).all()
  expected = []
  for i, doc in enumerate(docs):
    tokens = doc["targets"].tolist()
    expected += [(tokens[j:j + seq_len], {i % 2}) for j in range(0, len(tokens), seq_len)]
  assert sorted(map(str, segments)) == sorted(map(str, expected))  # every document whole
  assert sum(len(t) for t, _ in segments) == sum(lengths)


def test_make_targets_weights_and_directions():
  rows = list(preprocessors.pack_documents(
      [{"targets": np.array(d, np.int32)} for d in
       ([L2R_ID, 7, 8, EOS], [R2L_ID, 9, 10, 11, EOS], [L2R_ID, EOS])], 16))
  batch = preprocessors.make_targets({k: np.stack([r[k] for r in rows]) for k in rows[0]},
                                     R2L_ID)
  assert batch["targets"][0].tolist() == [7, 8, EOS, 0, 9, 10, 11, EOS, 0, EOS, 0] + [0] * 5
  assert batch["loss_weights"][0].tolist() == [1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 0] + [0] * 5
  assert batch["loss_weights"].dtype == np.float32
  assert batch["directions"][0].tolist() == [0] * 4 + [1] * 5 + [0] * 7  # from first tokens
  assert {k: v.dtype for k, v in batch.items() if k != "loss_weights"} == {
      k: np.int32 for k in ("tokens", "targets", "segment_ids", "positions", "directions")}


def test_pack_throughput_is_far_above_training_speed():
  import time  # pylint: disable=import-outside-toplevel
  lengths = np.random.default_rng(0).integers(50, 350, 2000)
  docs = [{"targets": np.arange(5, 5 + n, dtype=np.int32), "direction": i % 2}
          for i, n in enumerate(lengths)]
  start = time.perf_counter()
  rows = list(preprocessors.pack_documents(docs, 512))
  rate = lengths.sum() / (time.perf_counter() - start)
  assert rate > 1_000_000, f"{rate:.0f} tokens/s"  # the packer is never the bottleneck
  fill = np.mean([(r["segment_ids"] > 0).mean() for r in rows[:-8]])  # the last 8 are leftovers
  assert fill > 0.93


def test_packed_rows_resume_from_the_state_after_any_row():
  """A packer rebuilt from its state after row r gives exactly rows r+1.. of the original:
  open rows, a finished row not yet taken and a document cut across rows included."""
  rng = np.random.default_rng(1)
  seq_len = 16
  lengths = rng.integers(1, 40, 60)  # many longer than a row: cut into chunks
  docs = [{"targets": np.append(rng.integers(5, 99, n - 1), EOS).astype(np.int32),
           "direction": i % 2, "loss_mask": rng.integers(0, 2, n).astype(np.int32)}
          for i, n in enumerate(lengths)]
  def documents_from(start):
    return iter(docs[start:])
  rows = list(preprocessors.PackedRows(documents_from, seq_len))
  assert len(rows) > 60
  packer = preprocessors.PackedRows(documents_from, seq_len)
  cut_inside_a_document = 0
  for r in range(len(rows) - 12):  # the last rows are the final flush of a finite stream
    np.testing.assert_array_equal(next(packer)["tokens"], rows[r]["tokens"])
    state = packer.state()
    cut_inside_a_document += int(state["cursor"][2] > 0)
    resumed = preprocessors.PackedRows(documents_from, seq_len, state)
    for want in rows[r + 1:r + 4]:
      got = next(resumed)
      assert got.keys() == want.keys()
      for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"row {r}: {key}")
  assert cut_inside_a_document > 5  # the cursor was inside a document many times
  assert {name: a.shape for name, a in state.items()} == {
      "cursor": (3,), "slots": (10,), **{k: (10, seq_len) for k in (
          "tokens", "segment_ids", "positions", "directions", "loss_mask")}}
  with pytest.raises(ValueError, match="rows of 16 tokens, this stream packs 32"):
    preprocessors.PackedRows(documents_from, 32, state)


def test_directed_document_is_the_numpy_twin_of_assign_directions():
  doc = {"targets": np.array([5, 6, 7, EOS], np.int32), "loss_mask": np.array([0, 1, 1, 1])}
  for direction in (0, 1):
    got = preprocessors.directed_document(doc, direction, L2R_ID, R2L_ID)
    (want,) = list(preprocessors.assign_directions(
        tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in doc.items()}),
        mode="l2r" if direction == 0 else "both", seed=0, l2r_id=L2R_ID,
        r2l_id=R2L_ID).skip(direction).take(1).as_numpy_iterator())
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  with pytest.raises(ValueError, match="ending in EOS"):
    preprocessors.directed_document({"targets": np.array([5, 6])}, 0, L2R_ID, R2L_ID)


# --- r2l_unit='word' ------------------------------------------------------------------------------

def _word_starts(vocabulary) -> np.ndarray:
  from batgpt_jax.data import word_units  # pylint: disable=import-outside-toplevel
  return word_units.word_start_table(vocabulary)


def test_word_reversal_decodes_to_the_words_reversed(data_tiny_vocab):
  text = "The baker sells bread to the small town number 7."
  ids = data_tiny_vocab.encode(text) + [EOS]
  l2r_id, r2l_id = vocab.direction_ids(data_tiny_vocab)
  starts = _word_starts(data_tiny_vocab)
  directed = list(preprocessors.assign_directions(
      _docs_dataset([ids]), mode="both", seed=0, l2r_id=l2r_id, r2l_id=r2l_id, unit="word",
      word_starts=starts).as_numpy_iterator())
  assert directed[0]["targets"].tolist() == [l2r_id] + ids  # L2R untouched
  r2l = directed[1]["targets"].tolist()
  assert r2l[0] == r2l_id and r2l[-1] == EOS and len(r2l) == len(ids) + 1
  assert sorted(r2l[1:-1]) == sorted(ids[:-1])  # a permutation of the body
  # '7.' is one word ('▁7' then '.'): punctuation travels with the word before it.
  assert data_tiny_vocab.decode(r2l[1:-1]) == "7. number town small the to bread sells baker The"


def test_word_mode_tf_path_equals_its_numpy_twin_with_fields(data_tiny_vocab):
  l2r_id, r2l_id = vocab.direction_ids(data_tiny_vocab)
  starts = _word_starts(data_tiny_vocab)
  for text in ("Kelmon Torwick works for Valdris Melby.", "她在北京吃饭。 Then 42 cats.", "x"):
    ids = np.asarray(data_tiny_vocab.encode(text) + [EOS], np.int32)
    doc = {"targets": ids, "loss_mask": np.arange(len(ids), dtype=np.int32)}
    (_, want) = list(preprocessors.assign_directions(
        tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in doc.items()}), mode="both",
        seed=0, l2r_id=l2r_id, r2l_id=r2l_id, unit="word",
        word_starts=starts).as_numpy_iterator())
    got = preprocessors.directed_document(doc, 1, l2r_id, r2l_id, "word", starts)
    for key in ("targets", "loss_mask", "direction"):
      np.testing.assert_array_equal(got[key], want[key], err_msg=f"{text!r}: {key}")
    # the field moved exactly with the tokens: loss_mask held each token's position
    np.testing.assert_array_equal(got["targets"][1:], ids[got["loss_mask"][1:]])
    assert got["loss_mask"][0] == 0 and got["loss_mask"][-1] == len(ids) - 1


def test_word_starts_follow_the_vocabulary(data_tiny_vocab):
  from batgpt_jax.data import word_units  # pylint: disable=import-outside-toplevel
  starts = _word_starts(data_tiny_vocab)
  sp = data_tiny_vocab.tokenizer
  assert starts.shape == (sp.get_piece_size(),)
  for i in range(sp.get_piece_size()):
    piece = sp.id_to_piece(i)
    if piece.startswith("\u2581"):
      assert starts[i], piece
  assert word_units.piece_starts_word("我", is_byte=False, is_special=False)
  assert word_units.piece_starts_word("<0xE5>", is_byte=True, is_special=False)  # a CJK lead
  assert not word_units.piece_starts_word("<0x8C>", is_byte=True, is_special=False)
  assert not word_units.piece_starts_word("ing", is_byte=False, is_special=False)
  # A CJK character spelled in bytes moves as one: [▁a][<E5><8C><97>][b] -> [<E5><8C><97>b][▁a]
  table = np.array([False, True, True, False, False], bool)  # ids: 0 -, 1 ▁a, 2 E5, 3 8C/97, 4 b
  assert word_units.reversed_units([1, 2, 3, 3, 4], "word", table) == [2, 3, 3, 4, 1]
  assert word_units.reversed_units([1, 2, 3, 3, 4], "token", None) == [4, 3, 3, 2, 1]


def test_token_mode_is_unchanged_by_the_unit_argument():
  docs = [[5, 6, 7, EOS], [8, 9, EOS], [EOS]]
  default = _directed(docs, "both")
  explicit = list(preprocessors.assign_directions(
      _docs_dataset(docs), mode="both", seed=0, l2r_id=L2R_ID, r2l_id=R2L_ID,
      unit="token").ragged_batch(10).as_numpy_iterator())[0]
  assert default == [(0, [L2R_ID, 5, 6, 7, EOS]), (1, [R2L_ID, 7, 6, 5, EOS]),
                     (0, [L2R_ID, 8, 9, EOS]), (1, [R2L_ID, 9, 8, EOS]),
                     (0, [L2R_ID, EOS]), (1, [R2L_ID, EOS])]
  assert [t.tolist() for t in explicit["targets"]] == [t for _, t in default]


def test_bad_r2l_unit_is_refused():
  with pytest.raises(ValueError, match=r"r2l_unit='char'; expected one of \('token', 'word'\)"):
    preprocessors.assign_directions(_docs_dataset([[5, EOS]]), mode="both", seed=0,
                                    l2r_id=L2R_ID, r2l_id=R2L_ID, unit="char")
  with pytest.raises(ValueError, match="word-start table"):
    preprocessors.directed_document({"targets": np.array([5, EOS])}, 1, L2R_ID, R2L_ID, "word")
  from batgpt_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"DataConfig.r2l_unit='words'; expected one of"):
    pipeline.DataConfig(r2l_unit="words")
  assert pipeline.DataConfig().r2l_unit == "token"
