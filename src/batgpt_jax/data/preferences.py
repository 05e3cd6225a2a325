"""Preference pairs: records in three layouts -> `Pair` -> one pair document -> two row segments.

Layouts (`pair_from_record`, `format`):
  schema  the project's preference JSONL (data/preference_schema.py): `prompt` or `messages`,
          `chosen`, `rejected`, optional tie / margin / p_chosen / weight / source / flags.
  trl     TRL's {"prompt", "chosen", "rejected"}: strings, or lists of {role, content} messages
          (the prompt's messages, then each answer as its assistant message).
  hh      Anthropic HH-RLHF: two full transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..." that share
          everything before the last Assistant turn; the history is that shared part.
  auto    schema when the record has 'prompt' or 'messages' (a TRL string record is a schema
          record), hh when it has only 'chosen' and 'rejected'.

Labels. p_chosen defaults to 1 (chosen is preferred), margin to 0 and weight to 1. A tie (tie:
true) is p_chosen = 0.5 and margin 0 (neither side is better); a tie that also gives another
p_chosen or a margin > 0 is refused, naming the record.

The pair document (`pair_example`). Both answers are rendered in the chat template after the same
prompt (data/chat.py: the ids are exactly what chat sees), and they travel as ONE document:

  targets   chosen side ids, EOS, <l2r>, rejected side ids, EOS

(the pipeline's L2R direction step puts the first <l2r> in front, so each side reads
`<l2r> [Turn 1] ... [Assistant] answer <eop> EOS`, as one conversation alone would). Per-token
fields: `loss_mask` 1 on the answer tokens (reply and <eop>), `rejected` 1 on the rejected side,
`score_at` 1 at each side's <eop> (the answer's last real token), and the pair's `pair_weight`,
`pair_margin`, `pair_p_chosen` on every token. A pair whose two sides do not fit in one row
drops the oldest turns of the shared history first; if it still does not fit it is skipped and
counted, never cut. Packing never cuts a document that fits, so a pair is never split across
rows (or hosts). `split_pair_sides` then gives each packed row's pair k segments 2k - 1
(chosen) and 2k (rejected) with positions restarting at each side: two conversations that
attend only to themselves, exactly as if each were alone (objectives/preference.py reads them).
"""

import dataclasses
import re

import numpy as np

from batgpt_jax.config import InputError
from batgpt_jax.data import chat, preference_schema

FORMATS = ("auto", "schema", "trl", "hh")
PAIR_FIELDS = ("loss_mask", "rejected", "score_at", "pair_weight", "pair_margin",
               "pair_p_chosen")
FLOAT_FIELDS = ("pair_weight", "pair_margin", "pair_p_chosen")


@dataclasses.dataclass(frozen=True)
class Pair:
  """Two answers to one prompt (the last user turn after `history`), with the label."""

  history: tuple[tuple[str, str], ...]  # earlier (user, assistant) turns, oldest first
  query: str
  chosen: str
  rejected: str
  system: str | None = None
  p_chosen: float = 1.0
  margin: float = 0.0
  weight: float = 1.0

  def side(self, answer: str, drop: int = 0) -> chat.Conversation:
    return chat.Conversation(self.history[drop:] + ((self.query, answer),), self.system)


# --- records -> Pair ----------------------------------------------------------------------------

def record_format(record: dict, fmt: str) -> str:
  if fmt != "auto":
    return fmt
  if "prompt" in record or "messages" in record:
    return "schema"
  return "hh" if {"chosen", "rejected"} <= set(record) else "unknown"


def pair_from_record(record, fmt: str, where: str) -> Pair:
  """The pair in `record` (a parsed JSON value read at `where`, e.g. 'file.jsonl:12')."""
  if fmt not in FORMATS:
    raise ValueError(f"format={fmt!r}; expected one of {FORMATS}.")
  if not isinstance(record, dict):
    raise InputError(f"{where}: expected a JSON object with 'chosen' and 'rejected', found "
                     f"{type(record).__name__}.")
  kind = record_format(record, fmt)
  try:
    if kind == "schema":
      return _from_schema(preference_schema.validate_record(record))
    if kind == "trl":
      return _from_trl(record)
    if kind == "hh":
      return _from_hh(record)
  except ValueError as err:
    raise InputError(f"{where}: {err}") from None
  raise InputError(f"{where}: a record with keys {sorted(record)} is no preference layout; "
                   "expected {prompt or messages, chosen, rejected} (schema, TRL) or two HH-RLHF "
                   "transcripts {chosen, rejected}. Rename the fields or set the format.")


def _label(record: dict) -> dict:
  if record.get("tie"):
    if record.get("p_chosen", 0.5) != 0.5 or record.get("margin", 0.0) > 0:
      raise ValueError(f"a tie has p_chosen 0.5 and no margin, found p_chosen="
                       f"{record.get('p_chosen')} and margin={record.get('margin')}. Drop "
                       "'tie' or those fields.")
    return {"p_chosen": 0.5, "margin": 0.0, "weight": float(record.get("weight", 1.0))}
  return {"p_chosen": float(record.get("p_chosen", 1.0)),
          "margin": float(record.get("margin", 0.0)), "weight": float(record.get("weight", 1.0))}


def _history(messages: list[dict]) -> tuple[str | None, tuple, str]:
  """(system, earlier turns, last user query) of a dialogue that ends with the user's turn."""
  roles = [m["role"] for m in messages]
  contents = [m["content"].strip() for m in messages]
  system = None
  if roles and roles[0] == "system":
    system, roles, contents = contents[0] or None, roles[1:], contents[1:]
  expected = (["user", "assistant"] * len(roles))[:len(roles)]
  if not roles or roles != expected or roles[-1] != "user":
    raise ValueError(f"the messages' roles are {roles}; expected an optional 'system', then "
                     "'user' and 'assistant' in turn, ending with the 'user' turn the answers "
                     "reply to.")
  if not all(contents):
    raise ValueError("a message of the dialogue is empty; give it text.")
  return system, tuple(zip(contents[0:-1:2], contents[1:-1:2])), contents[-1]


def _answers(record: dict) -> tuple[str, str]:
  out = []
  for field in ("chosen", "rejected"):
    text = record[field].strip()
    if not text:
      raise ValueError(f"field '{field}' is empty; give the answer's text.")
    out.append(text)
  return tuple(out)


def _from_schema(record: dict) -> Pair:
  if "messages" in record:
    system, history, query = _history(record["messages"])
  else:
    system, history, query = None, (), record["prompt"].strip()
    if not query:
      raise ValueError("field 'prompt' is empty; give the instruction.")
  return Pair(history, query, *_answers(record), system=system, **_label(record))


def _trl_answer(value, field: str) -> str:
  if isinstance(value, str):
    return value
  if (isinstance(value, list) and value and isinstance(value[-1], dict)
      and value[-1].get("role") == "assistant" and isinstance(value[-1].get("content"), str)):
    return value[-1]["content"]
  raise ValueError(f"field '{field}' should be a string or a list of messages ending with the "
                   f"assistant's, found {value!r:.80}.")


def _from_trl(record: dict) -> Pair:
  prompt = record.get("prompt")
  answers = {f: _trl_answer(record.get(f), f) for f in ("chosen", "rejected")}
  if isinstance(prompt, list):
    return _from_schema({"messages": prompt, **answers})
  if not isinstance(prompt, str):
    raise ValueError(f"field 'prompt' should be a string or a list of messages, found "
                     f"{prompt!r:.80}.")
  return _from_schema({"prompt": prompt, **answers})


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _hh_turns(text: str, field: str) -> list[tuple[str, str]]:
  parts = _HH_TURN.split("\n\n" + text.lstrip("\n"))
  if parts[0].strip() or len(parts) < 5:
    raise ValueError(f"field '{field}' is not an HH-RLHF transcript: expected '\\n\\nHuman: "
                     "...\\n\\nAssistant: ...' turns.")
  return list(zip(parts[1::2], (p.strip() for p in parts[2::2])))


def _from_hh(record: dict) -> Pair:
  sides = {}
  for field in ("chosen", "rejected"):
    if not isinstance(record.get(field), str):
      raise ValueError(f"field '{field}' should be a transcript string, found "
                       f"{record.get(field)!r:.80}.")
    sides[field] = _hh_turns(record[field], field)
  chosen, rejected = sides["chosen"], sides["rejected"]
  if chosen[:-1] != rejected[:-1] or chosen[-1][0] != "Assistant" or rejected[-1][0] != "Assistant":
    raise ValueError("the two HH-RLHF transcripts should share every turn before a last "
                     "Assistant turn, but they differ earlier (or end with Human).")
  messages = [{"role": "user" if who == "Human" else "assistant", "content": text}
              for who, text in chosen[:-1]]
  return _from_schema({"messages": messages, "chosen": chosen[-1][1],
                       "rejected": rejected[-1][1]})


# --- Pair -> one document -----------------------------------------------------------------------

def _answer_end(mask: list[int]) -> int:
  return max(i for i, m in enumerate(mask) if m)  # the <eop>: the answer's last token


def pair_example(vocabulary, pair: Pair, *, seq_len: int, eos_id: int,
                 l2r_id: int) -> dict[str, np.ndarray] | None:
  """The pair as one document (targets and the per-token PAIR_FIELDS), fitted to `seq_len` with
  both sides in one row; None when even the last turn alone does not fit."""
  for drop in range(len(pair.history) + 1):
    chosen, chosen_mask = chat.rendered(vocabulary, pair.side(pair.chosen, drop),
                                        last_turn_only=True)
    rejected, rejected_mask = chat.rendered(vocabulary, pair.side(pair.rejected, drop),
                                            last_turn_only=True)
    length = len(chosen) + len(rejected) + 4  # two direction tokens, two EOS
    if length <= seq_len:
      break
  else:
    return None
  targets = chosen + [eos_id, l2r_id] + rejected + [eos_id]
  first = len(chosen) + 1  # the rejected side's <l2r>
  score_at = np.zeros(len(targets), np.int32)
  score_at[[_answer_end(chosen_mask), first + 1 + _answer_end(rejected_mask)]] = 1
  constant = lambda value: np.full(len(targets), value, np.float32)
  return {"targets": np.asarray(targets, np.int32),
          "loss_mask": np.asarray(chosen_mask + [0, 0] + rejected_mask + [0], np.int32),
          "rejected": (np.arange(len(targets)) >= first).astype(np.int32),
          "score_at": score_at, "pair_weight": constant(pair.weight),
          "pair_margin": constant(pair.margin), "pair_p_chosen": constant(pair.p_chosen)}


# --- packed rows -> pair segments ---------------------------------------------------------------

def split_pair_sides(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A packed row of pair documents (segments 1..k) -> sides as segments 2k - 1 and 2k, with
  positions restarting at every side. [L] arrays; padding (segment 0) stays 0."""
  out = dict(row)
  segments = np.asarray(row["segment_ids"], np.int32)
  rejected = np.asarray(out.pop("rejected"), np.int32)  # the segments say it from here on
  sides = np.where(segments > 0, 2 * segments - 1 + rejected, 0).astype(np.int32)
  index = np.arange(len(sides))
  is_start = np.ones(len(sides), bool)
  is_start[1:] = sides[1:] != sides[:-1]
  start = np.maximum.accumulate(np.where(is_start, index, 0))
  out["segment_ids"] = sides
  out["positions"] = np.where(sides > 0, index - start, 0).astype(np.int32)
  return out


def pair_row(doc: dict[str, np.ndarray], seq_len: int, l2r_id: int,
             left_pad: int = 0) -> dict[str, np.ndarray]:
  """One pair document alone in a row of `seq_len` (after `left_pad` padding), with its sides as
  segments 1 and 2: what scoring a pair by itself feeds the model."""
  length = 1 + len(doc["targets"])
  if left_pad + length > seq_len:
    raise ValueError(f"A pair of {length} tokens does not fit in {seq_len - left_pad}.")
  row = {name: np.zeros(seq_len, np.float32 if name in FLOAT_FIELDS else np.int32)
         for name in ("tokens", "segment_ids", "positions", *PAIR_FIELDS)}
  where = slice(left_pad, left_pad + length)
  row["tokens"][where] = [l2r_id] + doc["targets"].tolist()
  row["segment_ids"][where] = 1
  row["positions"][where] = np.arange(length)
  for name in PAIR_FIELDS:
    row[name][left_pad + 1:left_pad + length] = doc[name]
  return split_pair_sides(row)
