"""Preference data: the three layouts, the tie rule, pair documents, pair segments in packed rows,
and the seqio tasks (splits, a mixture with rates) through the shared pipeline."""

import collections
import gzip
import json

import numpy as np
import pytest

from batgpt_jax.config import InputError
from batgpt_jax.data import chat, pipeline, planted, preference_tasks, preferences, tasks, vocab
from batgpt_jax.data.planted import generate as planted_generate

HH = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Name a prime.\n\n"
                "Assistant: 7 is prime.",
      "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Name a prime.\n\n"
                  "Assistant: 8."}


def test_the_three_layouts_give_the_same_pair():
  expected = preferences.Pair((("Hi there", "Hello!"),), "Name a prime.", "7 is prime.", "8.")
  schema = {"messages": [{"role": "user", "content": "Hi there"},
                         {"role": "assistant", "content": "Hello!"},
                         {"role": "user", "content": "Name a prime."}],
            "chosen": "7 is prime.", "rejected": "8."}
  trl = {"prompt": schema["messages"], "chosen": [{"role": "assistant", "content": "7 is prime."}],
         "rejected": [{"role": "assistant", "content": "8."}]}
  assert preferences.pair_from_record(schema, "auto", "f:1") == expected
  assert preferences.pair_from_record(HH, "auto", "f:2") == expected
  assert preferences.pair_from_record(trl, "trl", "f:3") == expected
  flat = preferences.pair_from_record({"prompt": "Q?", "chosen": "a", "rejected": "b"}, "trl", "")
  assert flat == preferences.Pair((), "Q?", "a", "b")


def test_labels_ties_and_weights():
  pair = preferences.pair_from_record(
      {"prompt": "Q", "chosen": "a", "rejected": "b", "p_chosen": 0.8, "margin": 1.5,
       "weight": 3.0, "source": "ai"}, "schema", "f:1")
  assert (pair.p_chosen, pair.margin, pair.weight) == (0.8, 1.5, 3.0)
  tie = preferences.pair_from_record({"prompt": "Q", "chosen": "a", "rejected": "b", "tie": True},
                                     "schema", "f:2")
  assert (tie.p_chosen, tie.margin, tie.weight) == (0.5, 0.0, 1.0)
  with pytest.raises(InputError, match="f:3: a tie has p_chosen 0.5 and no margin"):
    preferences.pair_from_record({"prompt": "Q", "chosen": "a", "rejected": "b", "tie": True,
                                  "p_chosen": 0.9}, "schema", "f:3")


@pytest.mark.parametrize("record,fmt,message", [
    ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"},
     "hh", "share every turn before a last Assistant turn"),
    ({"chosen": "just text", "rejected": "more"}, "hh", "not an HH-RLHF transcript"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "chosen": "x", "rejected": "y"}, "schema", "ending with the 'user' turn"),
    ({"prompt": "q", "chosen": " ", "rejected": "y"}, "schema", "'chosen' is empty"),
    ({"text": "q"}, "auto", "no preference layout"),
])
def test_bad_records_name_the_line_and_the_fix(record, fmt, message):
  with pytest.raises(InputError, match=f"data.jsonl:7: .*{message}"):
    preferences.pair_from_record(record, fmt, "data.jsonl:7")


def test_pair_document_holds_both_sides_with_their_fields(data_tiny_vocab):
  pair = preferences.Pair((), "Sort: 3 1 2", "1 2 3", "2 1 3", p_chosen=0.8, margin=0.5,
                          weight=2.0)
  l2r, _ = vocab.direction_ids(data_tiny_vocab)
  doc = preferences.pair_example(data_tiny_vocab, pair, seq_len=128, eos_id=vocab.EOS_ID,
                                 l2r_id=l2r)
  chosen, chosen_mask = chat.rendered(data_tiny_vocab, pair.side("1 2 3"), last_turn_only=True)
  rejected, rejected_mask = chat.rendered(data_tiny_vocab, pair.side("2 1 3"),
                                          last_turn_only=True)
  n = len(chosen)
  assert doc["targets"].tolist() == chosen + [vocab.EOS_ID, l2r] + rejected + [vocab.EOS_ID]
  assert doc["loss_mask"].tolist() == chosen_mask + [0, 0] + rejected_mask + [0]
  assert doc["rejected"].tolist() == [0] * (n + 1) + [1] * (len(rejected) + 2)
  eop = data_tiny_vocab.tokenizer.piece_to_id(chat.END_OF_PROMPT)
  ends = np.nonzero(doc["score_at"])[0].tolist()
  assert ends == [n - 1, len(doc["targets"]) - 2]  # each side's <eop>, just before its EOS
  assert [doc["targets"][i] for i in ends] == [eop, eop]
  assert set(doc["pair_p_chosen"].tolist()) == {np.float32(0.8)}
  assert set(doc["pair_weight"].tolist()) == {2.0} and set(doc["pair_margin"].tolist()) == {0.5}
  # The row adds one direction token; one token short: None, never a cut answer.
  assert preferences.pair_example(data_tiny_vocab, pair, seq_len=len(doc["targets"]),
                                  eos_id=vocab.EOS_ID, l2r_id=l2r) is None
  assert preferences.pair_example(data_tiny_vocab, pair, seq_len=len(doc["targets"]) + 1,
                                  eos_id=vocab.EOS_ID, l2r_id=l2r) is not None


def test_history_is_dropped_oldest_first_for_both_sides(data_tiny_vocab):
  history = (("Hello there my friend", "Hi"), ("How are you today", "Fine"))
  pair = preferences.Pair(history, "Name a prime", "7", "8")
  l2r, _ = vocab.direction_ids(data_tiny_vocab)
  full = preferences.pair_example(data_tiny_vocab, pair, seq_len=512, eos_id=1, l2r_id=l2r)
  short = preferences.Pair(history[1:], "Name a prime", "7", "8")
  expected = preferences.pair_example(data_tiny_vocab, short, seq_len=512, eos_id=1, l2r_id=l2r)
  cut = preferences.pair_example(data_tiny_vocab, pair, seq_len=len(full["targets"]), eos_id=1,
                                 l2r_id=l2r)
  assert cut["targets"].tolist() == expected["targets"].tolist()


def test_split_pair_sides_restarts_positions_at_each_side():
  row = {"segment_ids": np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0]),
         "positions": np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0]),
         "rejected": np.array([0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0]),
         "tokens": np.arange(11)}
  out = preferences.split_pair_sides(row)
  assert out["segment_ids"].tolist() == [1, 1, 2, 2, 2, 3, 4, 4, 4, 0, 0]
  assert out["positions"].tolist() == [0, 1, 0, 1, 2, 0, 0, 1, 2, 0, 0]
  assert "rejected" not in out and out["tokens"].tolist() == list(range(11))


def test_planted_sets_are_reproducible_and_length_neutral(tmp_path):
  planted_generate.write(tmp_path)
  for family in planted.FAMILIES:
    for split in ("train", "validation"):
      shipped = planted.path_of(family, split)
      assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes()
  records = {f: [r for _, r in planted.read_records(f, "train")] for f in planted.FAMILIES}
  assert len(records["sort_swap"]) == 3000 and len(records["sort_length"]) == 3000
  for r in records["sort_swap"]:
    assert len(r["chosen"]) == len(r["rejected"]) and sorted(r["rejected"]) == sorted(r["chosen"])
  longer = collections.Counter(len(r["rejected"]) > len(r["chosen"])
                               for r in records["sort_length"])
  assert abs(longer[True] / 3000 - 0.5) < 0.03  # "longer is better" scores about half
  for r in records["sort_digit"]:
    assert len(r["chosen"]) == len(r["rejected"]) and list(r["rejected"]) == sorted(r["rejected"])
    assert len(set(r["rejected"]) - set(r["chosen"])) == 1
  held = {r["chosen"] for _, r in planted.read_records("sort_swap", "validation")}
  train = {r["chosen"] for r in records["sort_swap"]}  # the sorted digit set
  assert len(held) == planted_generate.HELD_OUT_SETS and not held & train


def test_both_answers_give_each_train_prompt_its_chosen_and_rejected_reply_shuffled(tmp_path):
  planted.write_both_answers("sort_swap", tmp_path / "a.jsonl")
  planted.write_both_answers("sort_swap", tmp_path / "b.jsonl")
  planted.write_both_answers("sort_swap", tmp_path / "c.jsonl", seed=1)
  rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
  records = [r for _, r in planted.read_records("sort_swap", "train")]
  assert len(rows) == 2 * len(records) == 6000 and set(rows[0]) == {"prompt", "response"}
  assert collections.Counter((row["prompt"], row["response"]) for row in rows) == (
      collections.Counter((r["prompt"], answer) for r in records
                          for answer in (r["chosen"], r["rejected"])))
  assert [row["prompt"] for row in rows[:2]] != [records[0]["prompt"]] * 2  # shuffled
  assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
  assert (tmp_path / "a.jsonl").read_text() != (tmp_path / "c.jsonl").read_text()


def _data_cfg(vocab_path, sources, shards=2):
  return pipeline.DataConfig(sources=sources, direction_mode="l2r", vocab_path=vocab_path,
                             shards=shards, shuffle_buffer=64)


def _check_pair_rows(batch, vocabulary):
  """Every pair in a batch: two adjacent segments, one score token each (an <eop>), no pad."""
  eop = vocabulary.tokenizer.piece_to_id(chat.END_OF_PROMPT)
  l2r, _ = vocab.direction_ids(vocabulary)
  pairs = 0
  for row in range(batch["tokens"].shape[0]):
    seg, tokens = batch["segment_ids"][row], batch["tokens"][row]
    assert seg.max() % 2 == 0  # whole pairs only
    for side in range(1, seg.max() + 1):
      where = np.nonzero(seg == side)[0]
      assert tokens[where[0]] == l2r and batch["positions"][row][where].tolist() == list(
          range(len(where)))
      ends = np.nonzero(batch["score_at"][row][where])[0]
      assert len(ends) == 1 and tokens[where[ends[0]]] == eop
    pairs += seg.max() // 2
  assert float((batch["score_at"] * (batch["segment_ids"] == 0)).sum()) == 0
  return pairs


def test_planted_pairs_through_the_pipeline(data_tiny_vocab_path, data_tiny_vocab):
  cfg = _data_cfg(data_tiny_vocab_path, ((preference_tasks.PlantedPreferences(), 1.0),))
  batch = next(pipeline.train_batches(cfg, data_tiny_vocab, seq_len=256, global_batch=4))
  assert _check_pair_rows(batch, data_tiny_vocab) > 4  # pairs (about 105 tokens) share rows
  assert batch["pair_p_chosen"][batch["score_at"] > 0].tolist() == [1.0] * int(
      batch["score_at"].sum())
  (held,) = pipeline.eval_batches(cfg, data_tiny_vocab, seq_len=256, global_batch=4,
                                  num_batches=1)
  _check_pair_rows(held, data_tiny_vocab)
  l2r, _ = vocab.direction_ids(data_tiny_vocab)
  first = preferences.pair_example(data_tiny_vocab, preference_tasks._planted_pairs(
      "sort_swap", "validation")[0][1], seq_len=256, eos_id=1, l2r_id=l2r)
  width = len(first["targets"]) + 1
  assert held["tokens"][0][:width].tolist() == [l2r] + first["targets"].tolist()


def test_a_mixture_of_jsonl_layouts_by_rate(tmp_path, data_tiny_vocab_path, data_tiny_vocab):
  human, ai = tmp_path / "human.jsonl", tmp_path / "ai.jsonl"
  human.write_text("".join(json.dumps({"prompt": f"Say {i}", "chosen": f"{i}", "rejected": "no",
                                       "weight": 2.0}) + "\n" for i in range(40)))
  ai.write_text("".join(json.dumps(HH) + "\n" for _ in range(40)))
  sources = ((preference_tasks.PreferenceJsonl(str(human)), 0.75),
             (preference_tasks.PreferenceJsonl(str(ai), format="hh"), 0.25))
  cfg = _data_cfg(data_tiny_vocab_path, sources, shards=1)
  batches = pipeline.train_batches(cfg, data_tiny_vocab, seq_len=128, global_batch=4)
  weights = collections.Counter()
  for _ in range(30):
    batch = next(batches)
    _check_pair_rows(batch, data_tiny_vocab)
    chosen_ends = batch["score_at"] * (batch["segment_ids"] % 2 == 1)
    weights.update(batch["pair_weight"][chosen_ends > 0].tolist())
  share = weights[2.0] / (weights[2.0] + weights[1.0])
  assert sum(weights.values()) >= 100 and 0.65 < share < 0.85  # the human source at rate 0.75
  with pytest.raises(ValueError, match="mixes instruction sources .* with preference sources"):
    tasks.register_mixture([(tasks.DefaultInstructions(), 1.0), sources[0]], data_tiny_vocab,
                           seq_len=128)
  assert preference_tasks.skipped_pair_count() == 0  # every pair above fits its row


def test_planted_label_noise_flips_train_pairs_only():
  noisy = preference_tasks.PlantedPreferences(flip_share=0.2, p_chosen=0.8)
  train = [p for _, p in preference_tasks.planted_pairs(noisy, "train")]
  flipped = sum(list(p.chosen) != sorted(p.chosen) for p in train)  # a sorted answer is right
  assert len(train) == 3000 and abs(flipped / 3000 - 0.2) < 0.02
  assert {p.p_chosen for p in train} == {0.8}
  held = [p for _, p in preference_tasks.planted_pairs(noisy, "validation")]
  assert all(list(p.chosen) == sorted(p.chosen) and p.p_chosen == 1.0 for p in held)
  with pytest.raises(ValueError, match="flip_share=0.6"):
    preference_tasks.PlantedPreferences(flip_share=0.6)


def test_tokenizer_training_text_is_both_rendered_sides():
  texts = list(tasks.raw_documents(preference_tasks.PlantedPreferences(), "validation"))
  (_, first), = preference_tasks.planted_pairs(preference_tasks.PlantedPreferences(),
                                               "validation")[:1]
  assert texts[:2] == [first.side(first.chosen).text(), first.side(first.rejected).text()]
  assert len(texts) == 2 * 300
