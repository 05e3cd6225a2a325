"""The default instruction set: deterministic, byte-identical to the shipped files, disjoint
splits, every family in both languages, short checkable answers."""

import collections
import gzip
import json

from batgpt_jax.data import instructions
from batgpt_jax.data.instructions import generate


def _user_turns(record):
  return tuple(m["content"] for m in record["messages"] if m["role"] == "user")


def _sum_of(record):
  """(a, b) of an arithmetic question, in any wording."""
  text = _user_turns(record)[-1]
  digits = [int(c) for c in text if c.isdigit()]
  assert len(digits) == 2, text
  return tuple(digits)


def test_shipped_files_are_the_generator_output(tmp_path):
  generate.main(["--out-dir", str(tmp_path)])
  for name in ("train.jsonl.gz", "heldout.jsonl.gz"):
    assert (tmp_path / name).read_bytes() == (instructions.DIRECTORY / name).read_bytes(), name
  train, held_out = generate.generate_splits(generate.DEFAULT_SEED)
  assert train == instructions.default_examples("train")
  assert held_out == instructions.default_examples("validation")
  other_train, _ = generate.generate_splits(generate.DEFAULT_SEED + 1)
  assert other_train != train


def test_splits_are_disjoint_and_sized():
  train = instructions.default_examples("train")
  held_out = instructions.default_examples("validation")
  assert len(train) == 21560 and len(held_out) == 480
  assert not {_user_turns(r) for r in train} & {_user_turns(r) for r in held_out}
  assert len({_user_turns(r) for r in held_out}) == 480  # no duplicates either
  arithmetic = lambda records: {_sum_of(r) for r in records if r["family"] == "arithmetic"}
  held_out_sums, train_sums = arithmetic(held_out), arithmetic(train)
  # 20 sums never asked in train in that order, each asked in train the other way round.
  assert len(held_out_sums) == 20 and not held_out_sums & train_sums
  assert all((b, a) in train_sums and a != b for a, b in held_out_sums)
  assert len(train_sums) == 80
  per_family = collections.Counter(r["family"] for r in held_out)
  assert per_family == {family: 80 for family in generate.FAMILIES}
  languages = collections.Counter((r["family"], r["language"]) for r in held_out)
  assert all(languages[(f, lang)] >= 20 for f in generate.FAMILIES for lang in ("en", "zh"))
  families_in_first_500 = collections.Counter(r["family"] for r in train[:500])
  assert all(n >= 40 for n in families_in_first_500.values())  # train is shuffled


def test_answers_are_short_and_exact():
  for record in instructions.default_examples("validation"):
    messages = record["messages"]
    answer, question = messages[-1]["content"], messages[-2]["content"]
    assert messages[-1]["role"] == "assistant" and 0 < len(answer.split()) <= 5
    words = question.split("：" if record["language"] == "zh" else ": ")[-1].split()
    if record["family"] == "copy":
      assert answer.split() == words
    elif record["family"] == "reverse":
      assert answer.split() == words[::-1]
    elif record["family"] == "sort":
      assert answer.split() == sorted(words) and len(set(words)) == len(words)
    elif record["family"] == "arithmetic":
      assert int(answer) == sum(_sum_of(record))
    elif record["family"] == "corpus_facts":
      assert answer.rstrip("色") in question  # in-context: the sentence states the answer
    else:  # recall: said by the user two turns earlier, not in the last turn
      assert len(messages) == 6 and answer in messages[0]["content"]
      assert answer not in messages[2]["content"]


def test_records_are_well_formed_jsonl():
  raw = gzip.decompress((instructions.DIRECTORY / "train.jsonl.gz").read_bytes()).decode("utf-8")
  lines = raw.splitlines()
  assert len(lines) == 21560 and raw.endswith("\n")
  record = json.loads(lines[0])
  assert list(record) == ["family", "language", "messages"]
  records = [json.loads(line) for line in lines]
  with_system = [r["messages"][0]["role"] == "system" for r in records if r["family"] != "recall"]
  assert 0.2 < sum(with_system) / len(with_system) < 0.3  # a quarter, recall's none
  assert not any(r["messages"][0]["role"] == "system" for r in records if r["family"] == "recall")


def test_every_conversation_fits_the_sft_rows_of_the_default_vocabulary():
  from batgpt_jax.data import chat, chat_records, vocab  # pylint: disable=import-outside-toplevel
  vocabulary = vocab.default_vocabulary()  # the smoke run's tokenizer (cached after first use)
  longest = {}
  for split in ("train", "validation"):
    for record in instructions.default_examples(split):
      conversation = chat_records.conversation_from_record(record, "messages", "test")
      row = len(chat.rendered(vocabulary, conversation)[0]) + 2  # <l2r> ... EOS
      longest[record["family"]] = max(longest.get(record["family"], 0), row)
  # gin/sft.gin trains on 128-token rows: no conversation loses a turn there.
  assert max(longest.values()) <= 128, longest
  sp = vocabulary.tokenizer
  assert all(sp.id_to_piece(sp.piece_to_id(c)) == c for w in generate.ZH_WORDS for c in w)
