"""Held-out exact match on the default instruction set, per task family.

`held_out_examples()` turns the held-out split into chat prompts (system prompt, history, last
user turn: exactly what chat renders) with their expected answers; the caller generates one
reply per prompt, with `<l2r>` + vocabulary.encode(example.prompt()) as the input and <eop> as a
stop token, and passes the replies to `exact_match_by_family`.

A reply is the generated text as `vocabulary.decode` gives it, with the stop token kept: a reply
that ended with <eop> contains "<eop>". Scoring keeps the text before the first "<eop>", strips
surrounding whitespace from it and from the answer, and compares them exactly (case, inner
spaces and punctuation count). A reply without "<eop>" (it ran to the length limit or stopped
at EOS) is scored the same way and counted as not ended.
"""

import collections
import dataclasses
from typing import Iterable, Sequence

from batgpt_jax.data import chat, chat_records, instructions

OVERALL = "overall"


@dataclasses.dataclass(frozen=True)
class HeldOutExample:
  """One checkable instruction: the conversation up to its last user turn, and the answer."""

  family: str
  language: str
  query: str
  answer: str
  history: tuple[tuple[str, str], ...] = ()
  system: str | None = None

  def prompt(self) -> str:
    """The chat prompt that inference encodes (after the <l2r> token)."""
    return chat.chat_prompt(self.query, self.history, self.system)


def held_out_examples(records: Iterable[dict] | None = None) -> list[HeldOutExample]:
  """The examples of `records` ({"family", "language"?, "messages"}), default the held-out
  split of the default instruction set."""
  if records is None:
    records = instructions.default_examples("validation")
  examples = []
  for n, record in enumerate(records):
    where = f"record {n}"
    if not isinstance(record, dict) or not isinstance(record.get("family"), str):
      raise ValueError(f"{where} has no string 'family'; expected a record of the default "
                       "instruction set ({'family', 'language', 'messages'}).")
    conversation = chat_records.conversation_from_record(record, "messages", where)
    *history, (query, answer) = conversation.turns
    examples.append(HeldOutExample(record["family"], record.get("language", ""), query, answer,
                                   tuple(history), conversation.system))
  return examples


def scored_reply(reply: str) -> tuple[str, bool]:
  """(the normalised answer text of a reply, whether it ended with <eop>)."""
  text, eop, _ = reply.partition(chat.END_OF_PROMPT)
  return text.strip(), bool(eop)


def exact_match_by_family(examples: Sequence[HeldOutExample], replies: Sequence[str]) -> dict:
  """Exact match per family and overall, and the share of replies that ended with <eop>.

  Returns {"exact_match": {family: share, ..., "overall": share},
           "ended_with_eop": {family: share, ..., "overall": share},
           "count": {family: n, ..., "overall": n}}; shares are in [0, 1].
  """
  if len(examples) != len(replies):
    raise ValueError(f"{len(examples)} examples but {len(replies)} replies; pass one reply per "
                     "example, in the same order.")
  if not examples:
    raise ValueError("No examples to score; pass held_out_examples() and their replies.")
  correct, ended, count = (collections.Counter() for _ in range(3))
  for example, reply in zip(examples, replies):
    if not isinstance(reply, str):
      raise TypeError(f"A reply is {type(reply).__name__}; expected the decoded text (str) with "
                      "the stop token kept, e.g. vocabulary.decode(generated_ids).")
    text, stopped = scored_reply(reply)
    for key in (example.family, OVERALL):
      count[key] += 1
      correct[key] += text == example.answer.strip()
      ended[key] += stopped
  keys = sorted(k for k in count if k != OVERALL) + [OVERALL]
  return {"exact_match": {k: correct[k] / count[k] for k in keys},
          "ended_with_eop": {k: ended[k] / count[k] for k in keys},
          "count": {k: count[k] for k in keys}}


def format_scores(scores: dict) -> str:
  """A table, one line per family: exact match, ended with <eop>, examples."""
  lines = [f"{'family':<14}{'exact match':>12}{'<eop>':>8}{'n':>6}"]
  for family, share in scores["exact_match"].items():
    lines.append(f"{family:<14}{share:>12.1%}{scores['ended_with_eop'][family]:>8.1%}"
                 f"{scores['count'][family]:>6}")
  return "\n".join(lines)
