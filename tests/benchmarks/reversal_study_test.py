"""The reversal study's facts, questions and scorer (benchmarks/reversal_facts.py, _study.py).

The study itself (minutes of training) is not run here: `reversal_study.py --dry` checks that.
"""

import importlib.util
import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str):
  if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))  # reversal_study imports reversal_facts by name
  spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


facts_lib = _module("reversal_facts")


def test_facts_are_deterministic_from_the_seed_and_use_each_name_once():
  one, again, other = (facts_lib.make_facts(s) for s in (0, 0, 1))
  assert one == again and one != other
  assert (len(one.one_way), len(one.control), len(one.filler)) == (80, 80, 8)
  everyone = [f for group in (one.one_way, one.control, one.filler) for f in group]
  names = [n for f in everyone for n in (f.a, f.b)]
  assert len(set(names)) == len(names) == 336
  assert {f.relation for f in one.one_way} == set(facts_lib.RELATIONS)
  assert facts_lib.training_lines(one, 0, 50) == facts_lib.training_lines(again, 0, 50)


def test_one_way_facts_are_never_stated_reversed_in_training():
  fact_set = facts_lib.make_facts(3)
  lines = facts_lib.training_lines(fact_set, 3, 50)
  assert len(lines) == 80 + 2 * 80 + 5  # and 5 filler lines at 0, 50, ..., 200
  text = "\n".join(lines)
  held_out = lines[::50]
  assert held_out == [f.forward() for f in fact_set.filler[::-1][:5]]
  train = [line for i, line in enumerate(lines) if i % 50]
  for fact in fact_set.one_way:
    assert train.count(fact.forward()) == 1
    assert fact.reverse() not in text
    # B never comes before A in any line: nothing to learn the reverse from
    assert not any(fact.b in line and line.index(fact.b) < line.index(fact.a)
                   for line in lines if fact.a in line)
  for fact in fact_set.control:
    assert train.count(fact.forward()) == 1 and train.count(fact.reverse()) == 1


def test_questions_ask_for_the_facts_names():
  fact = facts_lib.Fact("Kelmon Torwick", "Valdris Melby", "employer")
  forward, reverse, r2l = facts_lib.questions(fact)
  assert (forward.direction, forward.prompt, forward.answer) == (
      "l2r", "Kelmon Torwick works for", "Valdris Melby")
  assert (reverse.direction, reverse.prompt, reverse.answer) == (
      "l2r", "Valdris Melby employs", "Kelmon Torwick")
  assert (r2l.direction, r2l.prompt, r2l.answer) == ("r2l", "works for Valdris Melby.",
                                                     "Kelmon Torwick")
  for fact in facts_lib.make_facts(0).one_way:
    forward, reverse, r2l = facts_lib.questions(fact)
    assert fact.forward() == f"{forward.prompt} {forward.answer}."
    assert fact.reverse().startswith(f"{reverse.prompt} {reverse.answer}")
    assert fact.forward() == f"{r2l.answer} {r2l.prompt}"


def test_scorer_on_a_hand_fixture():
  fact = facts_lib.Fact("Kelmon Torwick", "Valdris Melby", "employer")
  forward, reverse, r2l = facts_lib.questions(fact)
  cases = [(forward, " Valdris Melby.", True), (forward, " Valdris Melbyx.", False),
           (forward, " Valdris", False), (forward, " the Valdris Melby.", False),
           (reverse, " Kelmon Torwick. Kelmon", True), (reverse, "Torwick Kelmon", False),
           (r2l, "Kelmon Torwick ", True), (r2l, "Yes, Kelmon Torwick ", True),
           (r2l, "Kelmon Torwick Valdris ", False), (r2l, "", False)]
  for question, output, want in cases:
    assert facts_lib.is_correct(question, output) is want, (question.kind, output)
  questions, outputs = zip(*[(q, o) for q, o, _ in cases])
  assert facts_lib.accuracy(list(questions), list(outputs)) == pytest.approx(4 / 10)
  with pytest.raises(ValueError, match="one output per question"):
    facts_lib.accuracy([forward], [])


def test_study_summary_and_table_from_known_runs():
  study = _module("reversal_study")
  runs = [{"variant": "both", "accuracy": dict(zip(study.COLUMNS, accuracies))}
          for accuracies in ((0.9, 0.0, 1.0, 1.0), (0.8, 0.1, 0.9, 1.0))]
  summary = study.summarize(runs)
  assert summary["both"]["forward"]["mean"] == pytest.approx(85.0)
  assert summary["both"]["forward"]["spread"] == pytest.approx(5.0)  # half the difference
  assert summary["both"]["reverse_l2r"]["values"] == pytest.approx([0.0, 10.0])
  assert "85.0 ± 5.0" in study.table(summary)
