"""Multiple choice: accuracy against a hand count, choice scores against a forward pass, the
k-shot prompts, the two layouts' files and their errors, and the command end to end."""

import csv
import json
import pathlib

import numpy as np
import pytest

from batgpt_jax import checkpoints, cli
from batgpt_jax.data import evalsets
from batgpt_jax.data.evalsets import generate
from batgpt_jax.evaluate import loglikelihood, multiple_choice as mc
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.sample import options
from batgpt_jax.train import state as train_state
from testlib import direct_continuation_logprob, trained_like_params

CFG = ModelConfig(vocab_size=400, max_len=1024, init_std=0.2)
HEADER = ("id", "question", "A", "B", "C", "D", "answer", "explanation")
# subject -> which of its test rows the model must get right (the answers are written to match)
RIGHT = {"colours": (True, True, False, True), "sums": (False, True, False)}


@pytest.fixture(scope="module")
def loaded(data_tiny_vocab):
  return options.Loaded(cfg=CFG, params=trained_like_params(CFG, seed=5),
                        vocabulary=data_tiny_vocab, mesh=None, rules=(), source="run/checkpoints/7")


def direct(loaded_, context, continuation) -> tuple[float, bool]:
  return direct_continuation_logprob(loaded_.cfg, loaded_.params, context, continuation)


def _write(path: pathlib.Path, header, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", encoding="utf-8", newline="") as f:
    csv.writer(f, lineterminator="\n").writerows([header, *rows])


def _questions(subject, n, rng):
  words = ["red", "blue", "cat", "dog", "bread", "town", "river", "small"]
  return [(f"{subject} {i}: which {rng.choice(words)} is {rng.choice(words)}?",
           *rng.choice(words, 4, replace=False).tolist()) for i in range(n)]


def _predicted(loaded_, subject_dir, subject, question_rows) -> list[str]:
  """The letter a direct forward pass ranks first, 0-shot: the hand count's ground truth."""
  out = []
  for row in question_rows:
    q = mc.Question(subject, row[0], tuple(row[1:5]), "A")
    text = mc.prompt("ceval", mc.subject_name(subject_dir, subject), [], q, 0)
    scores = [direct(loaded_, *loglikelihood.text_request(loaded_.vocabulary, text, letter))[0]
              for letter in mc.LETTERS]
    out.append(mc.LETTERS[int(np.argmax(scores))])
  return out


@pytest.fixture(scope="module")
def ceval_dir(loaded, tmp_path_factory):
  """A C-Eval-layout directory whose val answers make the model right exactly where RIGHT says."""
  root = tmp_path_factory.mktemp("ceval")
  rng = np.random.default_rng(0)
  for subject, right in RIGHT.items():
    dev = _questions(f"{subject} dev", 6, rng)
    _write(root / "dev" / f"{subject}_dev.csv", HEADER,
           [(i, *row, "ABCD"[i % 4], "") for i, row in enumerate(dev)])
    val = _questions(subject, len(right), rng)
    guesses = _predicted(loaded, root, subject, val)
    answers = [g if ok else mc.LETTERS[(mc.LETTERS.index(g) + 1) % 4]
               for g, ok in zip(guesses, right)]
    _write(root / "val" / f"{subject}_val.csv", HEADER,
           [(i, *row, a, "") for i, (row, a) in enumerate(zip(val, answers))])
  return root


def test_accuracy_equals_the_hand_count(loaded, ceval_dir):
  results = mc.evaluate(loaded, mc.MultipleChoiceConfig(data_dir=str(ceval_dir), shots=(0,)))
  table = results["shots"]["0"]
  assert table["subjects"]["colours"] == {"correct": 3, "total": 4, "accuracy": 0.75}
  assert table["subjects"]["sums"] == {"correct": 1, "total": 3, "accuracy": 1 / 3}
  assert table["average"] == pytest.approx((0.75 + 1 / 3) / 2, abs=1e-12)
  assert mc.scalars(results)["ceval/0shot/average"] == table["average"]


@pytest.mark.parametrize("continuation", mc.CONTINUATIONS)
def test_choice_loglikelihoods_equal_a_direct_forward_pass(loaded, ceval_dir, continuation):
  cfg = mc.MultipleChoiceConfig(data_dir=str(ceval_dir), shots=(5,), continuation=continuation,
                                subjects=("sums",), batch_size=5)
  results = mc.evaluate(loaded, cfg)
  dev = mc.read_questions("ceval", ceval_dir, "dev", "sums")
  questions = mc.read_questions("ceval", ceval_dir, "val", "sums")
  for question, record in zip(questions, results["shots"]["5"]["choices"]):
    text = mc.prompt("ceval", "sums", dev, question, 5)
    for choice, got in zip(mc.choice_texts(question, continuation), record["loglikelihoods"]):
      request = loglikelihood.text_request(loaded.vocabulary, text, choice)
      assert len(request.context) + len(request.continuation) <= CFG.max_len  # nothing cut
      want = direct(loaded, *request)[0]
      assert got == pytest.approx(want, abs=1e-5)
    assert record["predicted"] == mc.LETTERS[int(np.argmax(record["loglikelihoods"]))]


def test_five_shot_prompts_hold_five_dev_rows_of_the_same_subject(ceval_dir):
  dev = {s: mc.read_questions("ceval", ceval_dir, "dev", s) for s in RIGHT}
  question = mc.read_questions("ceval", ceval_dir, "val", "colours")[0]
  text = mc.prompt("ceval", "colours", dev["colours"], question, 5)
  assert text.startswith("以下是中国关于colours考试的单项选择题")
  assert text.count(mc.ANSWER_CUE) == 6 and text.endswith(mc.ANSWER_CUE)  # 5 solved + the cue
  assert sum(d.question in text for d in dev["colours"]) == 5  # the first five of six
  assert dev["colours"][5].question not in text
  assert not any(d.question in text for d in dev["sums"])
  assert f"{dev['colours'][0].question}\nA. {dev['colours'][0].options[0]}" in text
  assert mc.prompt("ceval", "colours", dev["colours"], question, 0).count(mc.ANSWER_CUE) == 1
  with pytest.raises(ValueError, match="fewer than shots=7"):
    mc.prompt("ceval", "colours", dev["colours"], question, 7)


def test_both_packaged_layouts_read_and_regenerate_byte_for_byte(tmp_path):
  for layout, split in (("ceval", "val"), ("cmmlu", "test")):
    directory = evalsets.PACKAGED_DIR / layout
    subjects = mc.subjects_of(layout, directory, split)
    assert len(subjects) == 3
    for subject in subjects:
      assert len(mc.read_questions(layout, directory, "dev", subject)) == generate.DEV_ROWS
      rows = mc.read_questions(layout, directory, split, subject)
      assert len(rows) == generate.EVAL_ROWS and all(q.answer in "ABCD" for q in rows)
  assert any("\u4e00" <= ch <= "\u9fff" for q in rows for ch in q.question)  # Chinese subjects
  assert generate.write(tmp_path) == 18
  for path in tmp_path.rglob("*"):
    if path.is_file():
      assert path.read_bytes() == (evalsets.PACKAGED_DIR / path.relative_to(tmp_path)).read_bytes()


def test_cmmlu_files_have_an_unnamed_index_column(tmp_path):
  _write(tmp_path / "test" / "law.csv", ("", "Question", "A", "B", "C", "D", "Answer"),
         [(0, "q?", "w", "x", "y", "z", "C")])
  assert mc.read_questions("cmmlu", tmp_path, "test", "law") == [
      mc.Question("law", "q?", ("w", "x", "y", "z"), "C")]


def test_bad_files_say_what_to_change(tmp_path):
  _write(tmp_path / "val" / "a_val.csv", ("id", "question", "A", "B", "C", "answer"),
         [(0, "q", "1", "2", "3", "A")])
  with pytest.raises(ValueError, match=r"missing \['D'\]"):
    mc.read_questions("ceval", tmp_path, "val", "a")
  _write(tmp_path / "val" / "b_val.csv", HEADER, [(0, "q", "1", "2", "3", "4", "E", "")])
  with pytest.raises(ValueError, match=r"b_val.csv:2: answer='E'; expected one of A/B/C/D"):
    mc.read_questions("ceval", tmp_path, "val", "b")
  _write(tmp_path / "test" / "b_test.csv", HEADER, [(0, "q", "1", "2", "3", "4", "", "")])
  with pytest.raises(ValueError, match="use split='val'"):
    mc.read_questions("ceval", tmp_path, "test", "b")
  _write(tmp_path / "test" / "c.csv", ("id", "", "Question", "A", "B", "C", "D", "Answer"),
         [(0, 0, "q", "1", "2", "3", "4", "A")])
  with pytest.raises(ValueError, match="unnamed first column"):
    mc.read_questions("cmmlu", tmp_path, "test", "c")
  with pytest.raises(ValueError, match="layout='mmlu'"):
    mc.MultipleChoiceConfig(layout="mmlu")


def test_the_command_prints_writes_json_and_tensorboard(loaded, data_tiny_vocab_path, tmp_path,
                                                       capsys):
  run_dir = tmp_path / "run"
  checkpoints.write_run_dir(str(run_dir), CFG, loaded.params, train_state.OptimizerConfig())
  code = cli.main(["eval", "--task=multiple_choice", f"--checkpoint={run_dir}",
                   f"--vocab={data_tiny_vocab_path}", "--layout=cmmlu",
                   "--gin.MultipleChoiceConfig.shots=(0,)",
                   "--gin.MultipleChoiceConfig.subjects=('chinese_measure_words',)"])
  assert code == 0
  captured = capsys.readouterr()
  out = captured.out + captured.err
  assert "chinese_measure_words" in out and "0-shot" in out
  written = json.loads((run_dir / "eval" / "multiple_choice-cmmlu-test-0.json").read_text())
  table = written["shots"]["0"]
  assert table["subjects"]["chinese_measure_words"]["total"] == generate.EVAL_ROWS
  assert table["average"] == table["subjects"]["chinese_measure_words"]["accuracy"]
  assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
