"""Generates the packaged multiple-choice sets, in the C-Eval and CMMLU file layouts.

    python -m batgpt_jax.data.evalsets.generate --out-dir DIR [--seed S]

writes DIR/ceval/{dev,val,test}/{subject}_{split}.csv (columns id,question,A,B,C,D,answer,
explanation) and DIR/cmmlu/{dev,test}/{subject}.csv (an unnamed index column, then
Question,A,B,C,D,Answer), plus DIR/{layout}/subject_names.json (the name the prompt header uses), and the generation set
DIR/generation/default.jsonl (`evaluate/generation.py`): the same kinds of question asked
openly, one JSON record a line with its accepted answers and its category.
Every question is written by this project from the embedded corpus's lexicon
(`data/corpus/lexicon.py`) and arithmetic: the facts the default corpus states (what an animal
eats, where it lives, the months of a season, the day after a day) and sums in English words,
Chinese numerals and digits. Each subject has DEV_ROWS dev rows (for 5-shot prompts) and
EVAL_ROWS rows in each other split; the generation set has GENERATION_ROWS prompts a subject,
drawn apart from the multiple-choice rows. Pure standard library; the files depend only on the seed and
are byte-reproducible (`tests/data/evalsets_test.py` checks the shipped ones).
"""

import argparse
import csv
import io
import json
import pathlib
import random

from batgpt_jax.data import evalsets
from batgpt_jax.data.corpus import generate as corpus_gen
from batgpt_jax.data.corpus import lexicon as lx

DEFAULT_SEED = 20251202
DEV_ROWS = 5
EVAL_ROWS = 20
GENERATION_ROWS = 20
LETTERS = "ABCD"


def _choices(rng: random.Random, answer: str, pool) -> tuple[list[str], str]:
  """Four distinct options, `answer` among them at a random place, and its letter."""
  others = sorted({str(x) for x in pool} - {answer})
  options = rng.sample(others, 3) + [answer]
  rng.shuffle(options)
  return options, LETTERS[options.index(answer)]


# --- subjects: each returns (question, options, letter, explanation) ----------------------------

def arithmetic(rng):
  a, b = rng.randint(2, 40), rng.randint(2, 40)
  if rng.random() < 0.5:
    total = a + b
    question = f"What is {corpus_gen.words(a)} plus {corpus_gen.words(b)}?"
    why = f"{a} + {b} = {total}"
  else:
    a, b = max(a, b), min(a, b)
    total = a - b
    question = f"What is {corpus_gen.words(a)} minus {corpus_gen.words(b)}?"
    why = f"{a} - {b} = {total}"
  pool = [total + d for d in (-10, -2, -1, 1, 2, 10) if total + d >= 0]
  options, letter = _choices(rng, str(total), pool)
  return question, options, letter, why + "."


def animal_facts(rng):
  sing, plur, _, coat, home, food, act_s, _ = rng.choice(lx.ANIMALS)
  field = rng.randrange(4)
  question, answer, index = [
      (f"What do {plur} eat?", food, 5),
      (f"Where do {plur} live?", home, 4),
      (f"Which animal has {coat}?", sing, 0),
      (f"What does {corpus_gen.an(sing)} do when it is frightened?", act_s, 6),
  ][field]
  pool = [a[index] for a in lx.ANIMALS if a[index] != answer]
  options, letter = _choices(rng, answer, pool)
  return question, options, letter, f"{corpus_gen.cap(plur)}: {answer}."


def calendar(rng):
  kind = rng.randrange(5)
  if kind < 2:
    i, step = rng.randrange(7), (1, -1)[kind]
    question = f"Which day comes {('after', 'before')[kind]} {lx.DAYS[i]}?"
    answer, pool = lx.DAYS[(i + step) % 7], lx.DAYS
  elif kind < 4:
    i, step = rng.randrange(12), (1, -1)[kind - 2]
    question = f"Which month comes {('after', 'before')[kind - 2]} {lx.MONTHS[i]}?"
    answer, pool = lx.MONTHS[(i + step) % 12], lx.MONTHS
  else:
    season, months, _ = rng.choice(lx.SEASONS)
    month = lx.MONTHS[rng.choice(months)]
    question = f"In which season is {month}?"
    answer, pool = season, [s[0] for s in lx.SEASONS]
  options, letter = _choices(rng, answer, pool)
  return question, options, letter, f"The answer is {answer}."


def chinese_arithmetic(rng):
  a, b = rng.randint(1, 9), rng.randint(1, 9)
  total = a + b
  question = f"{corpus_gen.zh_number(a)}加{corpus_gen.zh_number(b)}等于多少？"
  pool = [total + d for d in (-3, -2, -1, 1, 2, 3) if total + d >= 0]
  options, letter = _choices(rng, str(total), pool)
  return question, options, letter, f"{a}+{b}={total}。"


def chinese_calendar(rng):
  i, n = rng.randrange(7), rng.randint(1, 4)
  count = corpus_gen.zh_number(n, counting_things=True)
  if rng.random() < 0.5:
    question, answer = f"{lx.ZH_DAYS[i]}的后{count}天是星期几？", lx.ZH_DAYS[(i + n) % 7]
  else:
    question, answer = f"{lx.ZH_DAYS[i]}的前{count}天是星期几？", lx.ZH_DAYS[(i - n) % 7]
  options, letter = _choices(rng, answer, lx.ZH_DAYS)
  return question, options, letter, f"答案是{answer}。"


def chinese_measure_words(rng):
  animal, measure = rng.choice(lx.ZH_ANIMALS)
  n = rng.randint(2, 9)
  question = f"“{corpus_gen.zh_number(n, counting_things=True)}___{animal}”中应填哪个量词？"
  options, letter = _choices(rng, measure, ("只", "条", "匹", "头", "本", "张"))
  return question, options, letter, f"{animal}用“{measure}”。"


# subject -> (generator, prompt-header name); the names are the ones the C-Eval and CMMLU
# headers ("以下是中国关于{name}考试的单项选择题…") read naturally with.
CEVAL_SUBJECTS = {
    "arithmetic": (arithmetic, "arithmetic"),
    "animal_facts": (animal_facts, "animal facts"),
    "chinese_arithmetic": (chinese_arithmetic, "算术"),
}
CMMLU_SUBJECTS = {
    "calendar": (calendar, "the calendar"),
    "chinese_calendar": (chinese_calendar, "日历"),
    "chinese_measure_words": (chinese_measure_words, "量词"),
}


def subject_rows(make, rng: random.Random, n: int, seen: set) -> list[tuple]:
  """`n` questions from `make`, none asked twice in the subject (over all its splits)."""
  rows = []
  for _ in range(1000 * n):
    if len(rows) == n:
      return rows
    question, options, letter, why = make(rng)
    if question in seen:
      continue
    seen.add(question)
    rows.append((question, *options, letter, why))
  raise ValueError(f"{make.__name__} gave {len(rows)} distinct questions, not {n}; it needs "
                   "more kinds of question, or lower the rows per split.")


def _csv_text(header, rows) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  return out.getvalue()


def generate(seed: int = DEFAULT_SEED) -> dict[str, str]:
  """{relative path: file text} for both layouts."""
  files = {}
  for layout, subjects, splits in (("ceval", CEVAL_SUBJECTS, ("dev", "val", "test")),
                                   ("cmmlu", CMMLU_SUBJECTS, ("dev", "test"))):
    for subject, (make, _) in subjects.items():
      rng, seen = random.Random(f"{seed}/{layout}/{subject}"), set()
      for split in splits:
        rows = subject_rows(make, rng, DEV_ROWS if split == "dev" else EVAL_ROWS, seen)
        if layout == "ceval":
          files[f"ceval/{split}/{subject}_{split}.csv"] = _csv_text(
              ("id", "question", "A", "B", "C", "D", "answer", "explanation"),
              [(i, *row) for i, row in enumerate(rows)])
        else:
          files[f"cmmlu/{split}/{subject}.csv"] = _csv_text(
              ("", "Question", "A", "B", "C", "D", "Answer"),
              [(i, *row[:-1]) for i, row in enumerate(rows)])
    names = {subject: name for subject, (_, name) in subjects.items()}
    files[f"{layout}/subject_names.json"] = json.dumps(names, ensure_ascii=False, indent=1) + "\n"
  files["generation/default.jsonl"] = "".join(
      json.dumps(r, ensure_ascii=False) + "\n" for r in generation_records(seed))
  return files


def generation_records(seed: int = DEFAULT_SEED) -> list[dict]:
  """The open questions of every subject, English and Chinese: {prompt, answers, category}."""
  records = []
  for subject, (make, _) in {**CEVAL_SUBJECTS, **CMMLU_SUBJECTS}.items():
    rng = random.Random(f"{seed}/generation/{subject}")
    for question, *options, letter, _ in subject_rows(make, rng, GENERATION_ROWS, set()):
      answer = options[LETTERS.index(letter)]
      answers = [answer]
      if subject == "arithmetic":  # a sum may be answered in digits or in words
        answers.append(corpus_gen.words(int(answer)))
      records.append({"category": subject, "prompt": question, "answers": answers})
  return records


def write(out_dir, seed: int = DEFAULT_SEED) -> int:
  out_dir = pathlib.Path(out_dir)
  files = generate(seed)
  for relative, text in files.items():
    path = out_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
  return len(files)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out-dir", default=str(evalsets.PACKAGED_DIR))
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
  args = parser.parse_args(argv)
  print(f"wrote {write(args.out_dir, args.seed)} files under {args.out_dir}")


if __name__ == "__main__":
  main()
