"""PPO's prompts (data/prompts.py): the chat template up to the assistant's turn with the
record's reference reply, fitted to max_prompt_len (history dropped first, then the record
skipped and counted), and the stream: batch i a function of (seed, i), an epoch each prompt
once, several sources each at its fixed share of every batch."""

import json

import numpy as np
import pytest

from batgpt_jax.data import chat, prompts, tasks
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.data.preference_tasks import PlantedPreferences


@pytest.fixture(scope="module")
def vocabulary():
  return vocab_lib.default_vocabulary(2048)


def _chat_file(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return tasks.ChatJsonl(file_pattern=str(path))


def _messages(*turns, system=None):
  out = [{"role": "system", "content": system}] if system else []
  for query, reply in turns:
    out += [{"role": "user", "content": query}, {"role": "assistant", "content": reply}]
  return {"messages": out}


def test_a_prompt_is_the_template_up_to_the_assistant_turn(tmp_path, vocabulary):
  # Record 0 of a file is held out (validation); records 1 and 2 train.
  source = _chat_file(tmp_path / "chat.jsonl", [
      _messages(("held out", "yes")),
      _messages(("Sort: 4913", "1349"), system="Be brief."),
      _messages(("Hello", "Hi there"), ("Sort: 81", "18"))])
  l2r, _ = vocab_lib.direction_ids(vocabulary)
  train = prompts.read_prompts(source, vocabulary, "train", max_prompt_len=128)
  encode = lambda text: tuple(int(i) for i in vocabulary.encode(text))
  assert [p.ids for p in train] == [
      (l2r,) + encode(chat.chat_prompt("Sort: 4913", (), "Be brief.")),
      (l2r,) + encode(chat.chat_prompt("Sort: 81", (("Hello", "Hi there"),)))]
  assert [p.reference for p in train] == ["1349", "18"]
  assert vocabulary.decode(list(train[1].ids[1:])).endswith("[Assistant]")
  (held_out,) = prompts.read_prompts(source, vocabulary, "validation", max_prompt_len=128)
  assert held_out.reference == "yes"


def test_a_long_prompt_drops_its_history_then_is_skipped_and_counted(tmp_path, vocabulary):
  long_query = "Sort: " + " ".join(["4913"] * 40)
  source = _chat_file(tmp_path / "long.jsonl", [
      _messages(("held out", "yes")),
      _messages(("Hello " * 30, "Hi"), ("Sort: 81", "18")),
      _messages((long_query, "1349"))])
  l2r, _ = vocab_lib.direction_ids(vocabulary)
  limit = 1 + len(vocabulary.encode(chat.chat_prompt("Sort: 81", (("Hello", "Hi"),))))
  before = tasks.skipped_count(prompts.SKIP_REASON)
  (only,) = prompts.read_prompts(source, vocabulary, "train", max_prompt_len=limit)
  assert only.ids == (l2r,) + tuple(int(i) for i in vocabulary.encode(chat.chat_prompt(
      "Sort: 81")))
  assert tasks.skipped_count(prompts.SKIP_REASON) == before + 1
  with pytest.raises(ValueError, match="no validation prompt of at most 3 tokens"):
    prompts.read_prompts(source, vocabulary, "validation", max_prompt_len=3)


def test_documents_are_not_prompts(vocabulary):
  with pytest.raises(ValueError, match="holds documents, not prompts"):
    prompts.read_prompts(tasks.DefaultCorpus(), vocabulary, "train", max_prompt_len=64)


def test_planted_prompts_carry_the_chosen_answer(vocabulary):
  train = prompts.read_prompts(PlantedPreferences(family="sort_swap"), vocabulary, "train",
                               max_prompt_len=64)
  assert len(train) > 1000
  digits = vocabulary.decode(list(train[0].ids[1:])).split("[User]")[1].split("[Assistant]")[0]
  assert train[0].reference == "".join(sorted(c for c in digits if c.isdigit()))


def _pool(name: str, n: int) -> list[prompts.Prompt]:
  return [prompts.Prompt((i,), f"{name}{i}") for i in range(n)]


def test_batches_are_a_function_of_seed_and_index_and_an_epoch_covers_each_prompt_once():
  pool = _pool("a", 10)
  stream = prompts.PromptStream([pool], 3, seed=7)
  epoch = [p.reference for i in range(3) for p in stream.batch(i)]
  assert len(set(epoch)) == 9  # 3 whole batches; the tenth prompt waits
  again = prompts.PromptStream([pool], 3, seed=7)
  assert [p.reference for p in again.batch(4)] == [p.reference for p in stream.batch(4)]
  assert [p.reference for i in range(3, 6) for p in stream.batch(i)] != epoch  # reshuffled
  other = prompts.PromptStream([pool], 3, seed=8)
  assert [p.reference for i in range(3) for p in other.batch(i)] != epoch
  with pytest.raises(ValueError, match="takes 11 prompts from a source that has 10"):
    prompts.PromptStream([pool], 11, seed=0)


def test_several_sources_give_each_batch_their_share_of_rows():
  a, b = _pool("a", 12), _pool("b", 4)
  stream = prompts.PromptStream([a, b], 4, seed=3, rates=[3.0, 1.0])
  assert stream.rows == [3, 1]
  batches = [[p.reference for p in stream.batch(i)] for i in range(8)]
  assert all([r[0] for r in batch] == ["a", "a", "a", "b"] for batch in batches)
  assert sorted(batch[3] for batch in batches[:4]) == ["b0", "b1", "b2", "b3"]  # b's epoch
  # The first source deals its prompts as it would alone (at its share of the rows).
  alone = prompts.PromptStream([a], 3, seed=3)
  assert [batch[:3] for batch in batches] == [[p.reference for p in alone.batch(i)]
                                              for i in range(8)]


def test_mixture_rows_are_proportional_with_the_remainder_to_the_largest_fractions():
  assert prompts.mixture_rows(10, [1.0, 1.0, 1.0]) == [4, 3, 3]
  assert prompts.mixture_rows(64, [0.7, 0.3]) == [45, 19]
  assert prompts.mixture_rows(8, [5.0]) == [8]
  assert sum(prompts.mixture_rows(127, list(np.linspace(0.1, 1.0, 7)))) == 127
  with pytest.raises(ValueError, match=r"gives a source no row \(\[4, 0\]\)"):
    prompts.mixture_rows(4, [1.0, 0.01])
