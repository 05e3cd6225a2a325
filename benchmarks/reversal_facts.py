"""Synthetic facts for the reversal study (benchmarks/reversal_study.py): deterministic from a seed.

A fact relates two invented people, A and B, by one of a few relations; each relation has a
forward sentence ("A works for B.") and a reverse one ("B employs A."). The names are made of
syllables the tokenizer has no word for, so each is several tokens, and each name is used once.

  one_way:  stated forward only in the training text; the study's question set.
  control:  stated both ways; shows that reverse questions are answerable when trained on.
  filler:   stated forward on the lines the file split holds out for validation (every
            `validation_every`-th line, data/tasks.py), so no evaluated fact is held out.

Questions (the prompt and the name it must produce):
  forward:       'A works for'  -> B            (L2R, the way the fact was stated)
  reverse_l2r:   'B employs'    -> A            (L2R, the reverse of the statement)
  r2l_retrieval: R2L 'works for B.' -> A        (R2L, generated backwards: what comes before)
"""

import dataclasses
import random
import re

# (forward, reverse): {a} and {b} are the names; the reverse sentence starts with B.
RELATIONS = {
    "employer": ("{a} works for {b}.", "{b} employs {a}."),
    "mentor": ("{a} was trained by {b}.", "{b} trained {a}."),
    "parent": ("{a} is the child of {b}.", "{b} is the parent of {a}."),
    "seller": ("{a} sold a boat to {b}.", "{b} bought a boat from {a}."),
    "teacher": ("{a} learned music from {b}.", "{b} taught music to {a}."),
}
_ONSETS = ("Bral", "Cev", "Dor", "Fen", "Gav", "Hul", "Jor", "Kel", "Lom", "Mav", "Nid", "Pol",
           "Rav", "Sul", "Tov", "Vel", "Wim", "Yar", "Zel", "Brin")
_CODAS = ("dris", "mon", "tas", "rin", "gol", "wick", "ferd", "lix", "nor", "bert", "ric", "tane",
          "sel", "dun", "mir", "tok", "wel", "by", "rus", "vane")


@dataclasses.dataclass(frozen=True)
class Fact:
  a: str
  b: str
  relation: str

  def forward(self) -> str:
    return RELATIONS[self.relation][0].format(a=self.a, b=self.b)

  def reverse(self) -> str:
    return RELATIONS[self.relation][1].format(a=self.a, b=self.b)


@dataclasses.dataclass(frozen=True)
class Question:
  kind: str  # 'forward' | 'reverse_l2r' | 'r2l_retrieval'
  direction: str  # the prompt's direction: 'l2r' | 'r2l'
  prompt: str  # the text; for r2l, what the answer must come BEFORE
  answer: str  # the name


@dataclasses.dataclass(frozen=True)
class FactSet:
  one_way: tuple[Fact, ...]
  control: tuple[Fact, ...]
  filler: tuple[Fact, ...]


def _names(rng: random.Random, count: int) -> list[str]:
  """`count` distinct two-word names, e.g. 'Kelmon Torwick'."""
  names: set[str] = set()
  out = []
  while len(out) < count:
    name = " ".join(rng.choice(_ONSETS) + rng.choice(_CODAS) for _ in range(2))
    if name not in names:
      names.add(name)
      out.append(name)
  return out


def make_facts(seed: int, *, one_way: int = 80, control: int = 80, filler: int = 8) -> FactSet:
  """The study's facts: every name in exactly one fact, relations in turn, all from `seed`."""
  rng = random.Random(seed)
  total = one_way + control + filler
  names = _names(rng, 2 * total)
  relations = sorted(RELATIONS)
  facts = [Fact(names[2 * i], names[2 * i + 1], relations[i % len(relations)])
           for i in range(total)]
  rng.shuffle(facts)
  return FactSet(one_way=tuple(facts[:one_way]), control=tuple(facts[one_way:one_way + control]),
                 filler=tuple(facts[one_way + control:]))


def training_lines(facts: FactSet, seed: int, validation_every: int) -> list[str]:
  """The training file, one statement a line (TextFiles documents='line'), shuffled by `seed`.

  One-way facts forward only, control facts both ways; line i with i % validation_every == 0
  (the validation split) is a filler fact, so the train split holds every evaluated statement.
  """
  statements = [f.forward() for f in facts.one_way]
  statements += [s for f in facts.control for s in (f.forward(), f.reverse())]
  random.Random(seed + 1).shuffle(statements)
  lines, filler = [], list(facts.filler)
  for statement in statements:
    while len(lines) % validation_every == 0:
      if not filler:
        raise ValueError(f"{len(facts.filler)} filler facts cannot fill every "
                         f"{validation_every}-th line of {len(statements)} statements; make "
                         "more filler facts.")
      lines.append(filler.pop().forward())
    lines.append(statement)
  return lines


def _prefix(sentence: str, name: str) -> str:
  """The sentence up to (not including) the space before `name`, which ends it."""
  head = sentence[:sentence.index(name)]
  return head.rstrip()


def questions(fact: Fact) -> list[Question]:
  """The three questions about a fact (module docstring)."""
  forward_text, reverse_text = fact.forward(), fact.reverse()
  after_a = forward_text[len(fact.a):].lstrip()  # 'works for B.': what follows A
  return [Question("forward", "l2r", _prefix(forward_text, fact.b), fact.b),
          Question("reverse_l2r", "l2r", _prefix(reverse_text, fact.a), fact.a),
          Question("r2l_retrieval", "r2l", after_a, fact.a)]


def _words(text: str) -> list[str]:
  return re.findall(r"[^\W\d_]+", text)


def is_correct(question: Question, output: str) -> bool:
  """Whether the generated text gives the answer: its first words (l2r, the text after the
  prompt) or its last words (r2l, the text before it) are the name, word for word."""
  want, got = _words(question.answer), _words(output)
  return (got[:len(want)] if question.direction == "l2r" else got[-len(want):]) == want


def accuracy(questions_: list[Question], outputs: list[str]) -> float:
  """The share of questions answered correctly (is_correct), in [0, 1]."""
  if len(questions_) != len(outputs) or not questions_:
    raise ValueError(f"{len(questions_)} questions for {len(outputs)} outputs; give one output "
                     "per question (and at least one).")
  return sum(is_correct(q, o) for q, o in zip(questions_, outputs)) / len(questions_)
