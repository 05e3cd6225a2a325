"""The one preference JSONL schema: what the annotation export writes and the reward model reads.

One JSON object per line:

  prompt     str                      the instruction; or
  messages   [{role, content}, ...]   the dialogue history before the answers (not both)
  chosen     str                      the preferred answer
  rejected   str                      the other answer
  tie        bool, optional           the answers were judged equal (chosen/rejected then only
                                      name the two sides; p_chosen should be 0.5)
  margin     float, optional          how much better chosen is (>= 0; e.g. the mean strength)
  p_chosen   float in [0, 1], opt.    soft label: the probability that chosen is preferred
  source     'human' | 'ai', opt.     who judged
  weight     float > 0, optional      the record's weight in the loss (e.g. the vote count)
  flags      [str, ...], optional     free labels such as 'both_bad' or 'harm:violence'

This module imports only the standard library (the annotation app reads it without JAX or TF).
"""

import json
import math
import pathlib
from typing import Iterable, Iterator

ROLES = ("system", "user", "assistant")
SOURCES = ("human", "ai")
FIELDS = ("prompt", "messages", "chosen", "rejected", "tie", "margin", "p_chosen", "source",
          "weight", "flags")


def _fail(field: str, expected: str, found, fix: str) -> None:
  raise ValueError(f"preference record: field '{field}' should be {expected}, found {found!r}. "
                   f"{fix}")


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_messages(messages) -> None:
  if not isinstance(messages, list) or not messages:
    _fail("messages", "a non-empty list of {role, content}", messages,
          "Give the dialogue history, e.g. [{\"role\": \"user\", \"content\": \"...\"}].")
  for i, turn in enumerate(messages):
    if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
      _fail(f"messages[{i}]", "an object with exactly 'role' and 'content'", turn,
            "Write each turn as {\"role\": ..., \"content\": ...}.")
    if turn["role"] not in ROLES:
      _fail(f"messages[{i}].role", f"one of {ROLES}", turn["role"], "Use a known role.")
    if not isinstance(turn["content"], str):
      _fail(f"messages[{i}].content", "a string", turn["content"], "Store the turn's text.")


def validate_record(record: dict) -> dict:
  """Returns `record` unchanged when it follows the schema; raises ValueError naming the field."""
  if not isinstance(record, dict):
    raise ValueError(f"preference record: expected a JSON object, found {type(record).__name__}.")
  unknown = sorted(set(record) - set(FIELDS))
  if unknown:
    _fail(unknown[0], f"one of the schema's fields {FIELDS}", unknown[0],
          "Drop the field or rename it to a schema field.")
  has_prompt, has_messages = "prompt" in record, "messages" in record
  if has_prompt == has_messages:
    _fail("prompt", "present exactly when 'messages' is absent",
          "both" if has_prompt else "neither",
          "Give either 'prompt' (a string) or 'messages' (the dialogue history), not both.")
  if has_prompt and not isinstance(record["prompt"], str):
    _fail("prompt", "a string", record["prompt"], "Use 'messages' for a dialogue.")
  if has_messages:
    _check_messages(record["messages"])
  for field in ("chosen", "rejected"):
    if not isinstance(record.get(field), str):
      _fail(field, "a string (the answer's text)", record.get(field), f"Add '{field}'.")
  if "tie" in record and not isinstance(record["tie"], bool):
    _fail("tie", "true or false", record["tie"], "Write a JSON boolean.")
  if "margin" in record and not (_is_number(record["margin"]) and record["margin"] >= 0):
    _fail("margin", "a finite number >= 0", record["margin"],
          "Swap chosen and rejected rather than giving a negative margin.")
  if "p_chosen" in record and not (_is_number(record["p_chosen"])
                                   and 0 <= record["p_chosen"] <= 1):
    _fail("p_chosen", "a number in [0, 1]", record["p_chosen"], "Give a probability.")
  if "source" in record and record["source"] not in SOURCES:
    _fail("source", f"one of {SOURCES}", record["source"], "Say who judged.")
  if "weight" in record and not (_is_number(record["weight"]) and record["weight"] > 0):
    _fail("weight", "a finite number > 0", record["weight"], "Drop records of weight 0.")
  if "flags" in record and not (isinstance(record["flags"], list)
                                and all(isinstance(f, str) for f in record["flags"])):
    _fail("flags", "a list of strings", record["flags"], "Write flags as [\"name\", ...].")
  return record


def write_jsonl(path, records: Iterable[dict]) -> int:
  """Validates and writes records, one per line, byte-identical for equal input. Returns the count.

  Keys are sorted and the text is UTF-8 without escapes, so the same records give the same file.
  The file is written beside its target and renamed, so a reader never sees half a file.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  count = 0
  try:
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
      for record in records:
        f.write(json.dumps(validate_record(record), ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  tmp.replace(path)
  return count


def read_jsonl(path) -> Iterator[dict]:
  """Yields the validated records of a preference JSONL file; errors name the line."""
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield validate_record(json.loads(line))
      except (ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}:{number}: {err}") from None
