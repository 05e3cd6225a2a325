"""Held-out prompts of the default instruction set and exact-match scoring per family."""

import pytest

from batgpt_jax.data import chat
from batgpt_jax.data.instructions import generate
from batgpt_jax.evaluate import instructions as scoring


def test_held_out_prompts_are_the_history_and_the_last_user_turn():
  examples = scoring.held_out_examples()
  assert len(examples) == 480
  assert {e.family for e in examples} == set(generate.FAMILIES)
  recall = [e for e in examples if e.family == "recall"]
  assert len(recall) == 80 and all(len(e.history) == 2 for e in recall)
  first = recall[0]
  # The answer is something the user said two turns earlier.
  assert first.answer in first.history[0][0] and first.answer not in first.history[1][0]
  assert first.prompt() == chat.chat_prompt(first.query, first.history, first.system)
  assert first.prompt().startswith("[Turn 1]\n\n[User] ") and first.prompt().endswith(
      "[Turn 3]\n\n[User] " + first.query + "\n\n[Assistant]")
  arithmetic = [e for e in examples if e.family == "arithmetic"]
  assert len(arithmetic) == 80 and all(e.answer.isdigit() for e in arithmetic)


def test_exact_match_by_family_counts_and_normalises():
  examples = [scoring.HeldOutExample("arithmetic", "en", "What is 2 + 3?", "5"),
              scoring.HeldOutExample("arithmetic", "en", "What is 1 + 1?", "2"),
              scoring.HeldOutExample("copy", "zh", "照抄：猫 狗", "猫 狗"),
              scoring.HeldOutExample("recall", "en", "What is my name?", "Nora",
                                     (("My name is Nora.", "OK."), ("I live in Oakford.", "OK.")))]
  replies = [" 5\n\n<eop>",        # right, ended
             "3<eop>",             # wrong, ended
             "猫 狗",               # right, but it never said <eop>
             "Nora\n\n<eop>[Turn 4]\n\n[User] more"]  # what follows <eop> is ignored
  scores = scoring.exact_match_by_family(examples, replies)
  assert scores["exact_match"] == {"arithmetic": 0.5, "copy": 1.0, "recall": 1.0,
                                   "overall": 0.75}
  assert scores["ended_with_eop"] == {"arithmetic": 1.0, "copy": 0.0, "recall": 1.0,
                                      "overall": 0.75}
  assert scores["count"] == {"arithmetic": 2, "copy": 1, "recall": 1, "overall": 4}
  assert scoring.exact_match_by_family(examples, ["5", "2", "猫  狗", "nora"])[
      "exact_match"]["overall"] == 0.5  # inner spaces and case count
  table = scoring.format_scores(scores)
  assert table.splitlines()[1].split() == ["arithmetic", "50.0%", "100.0%", "2"]
  assert table.splitlines()[-1].split() == ["overall", "75.0%", "75.0%", "4"]


def test_perfect_replies_score_one_per_family():
  examples = scoring.held_out_examples()
  scores = scoring.exact_match_by_family(examples, [f" {e.answer}\n\n<eop>" for e in examples])
  assert set(scores["exact_match"].values()) == {1.0}
  assert scores["count"]["overall"] == 480 and scores["count"]["sort"] == 80


def test_bad_inputs_are_clear_errors():
  examples = scoring.held_out_examples()[:2]
  with pytest.raises(ValueError, match="2 examples but 1 replies"):
    scoring.exact_match_by_family(examples, ["5"])
  with pytest.raises(TypeError, match=r"expected the decoded text \(str\)"):
    scoring.exact_match_by_family(examples, [[5, 1], "x"])
  with pytest.raises(ValueError, match="has no string 'family'"):
    scoring.held_out_examples([{"messages": []}])
