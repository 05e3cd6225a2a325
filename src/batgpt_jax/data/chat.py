"""BatGPT's chat template (as in the released BatGPT-15B-sirius tokenizer's build_inputs).

  [System]\n\n {system}\n\n<eot>                                   (optional, once)
  [Turn n]\n\n[User] {query}\n\n[Assistant] {reply}\n\n<eop>      (each earlier turn)
  [Turn n]\n\n[User] {query}\n\n[Assistant]                        (the turn to answer)
The model's reply ends with <eop>, which is therefore a stop token for chat generation.

Training examples (`training_example`). A conversation is rendered in the same template and
tokenized; the loss mask is 1 on exactly the tokens the model generates at inference: everything
after an assistant turn's `[Assistant]` up to and including its `<eop>` (the reply, the "\n\n"
before <eop>, and <eop>). User, system and template tokens are never targets.

How the reply tokens are found. `[System]`, `[User]`, `[Assistant]`, `<eot>` and `<eop>` are
user-defined SentencePiece pieces (data/vocab.py), which the tokenizer never merges with their
neighbours, so the template is tokenized piece by piece (each piece after the special token
before it, which reproduces the in-context tokenization) and the concatenation is checked
against tokenizing the whole conversation at once. The ids are therefore exactly what inference
sees: `vocabulary.encode(chat_prompt(query, history, system))` is a prefix of them at every
assistant turn (tests/data/chat_test.py checks this).

Over-long conversations. A conversation whose tokens, plus the direction token before them and
the EOS after them, exceed `seq_len` drops its OLDEST turns first (the rest are renumbered from
[Turn 1], as chat renders a history) and always keeps the system prompt and the last turn. If
the system prompt and the last turn alone do not fit, the conversation is dropped (None): a reply
cut short would teach the model to stop mid-answer, and a cut prompt to answer what was not
asked.
"""

import dataclasses
from typing import Sequence

import numpy as np

END_OF_PROMPT = "<eop>"  # the end of an assistant reply
END_OF_SYSTEM = "<eot>"
TEMPLATE_PIECES = ("[System]", "[User]", "[Assistant]", END_OF_SYSTEM, END_OF_PROMPT)


def system_block(system: str) -> str:
  return f"[System]\n\n {system}\n\n{END_OF_SYSTEM}"


def turn_prompt(turn: int, query: str) -> str:
  """Turn `turn` (from 1) up to the point where the assistant starts to answer."""
  return f"[Turn {turn}]\n\n[User] {query}\n\n[Assistant]"


def reply_block(reply: str) -> str:
  """What the assistant generates after `[Assistant]`."""
  return f" {reply}\n\n{END_OF_PROMPT}"


def chat_prompt(query: str, history: Sequence[tuple[str, str]] = (),
                system: str | None = None) -> str:
  prompt = system_block(system) if system else ""
  for turn, (old_query, reply) in enumerate(history, start=1):
    prompt += turn_prompt(turn, old_query) + reply_block(reply)
  return prompt + turn_prompt(len(history) + 1, query)


@dataclasses.dataclass(frozen=True)
class Conversation:
  """A system prompt (or None) and (user query, assistant reply) turns, oldest first."""

  turns: tuple[tuple[str, str], ...]
  system: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "turns", tuple(tuple(turn) for turn in self.turns))
    if not self.turns:
      raise ValueError("A Conversation needs at least one (user, assistant) turn.")

  def text(self) -> str:
    """The whole conversation in the template (what `rendered` tokenizes)."""
    *history, (query, reply) = self.turns
    return chat_prompt(query, history, self.system) + reply_block(reply)


def _pieces(conversation: Conversation, last_turn_only: bool) -> list[tuple[str, bool]]:
  """(text, is_target) pieces whose concatenation is conversation.text()."""
  pieces = [(system_block(conversation.system), False)] if conversation.system else []
  last = len(conversation.turns)
  for turn, (query, reply) in enumerate(conversation.turns, start=1):
    pieces += [(turn_prompt(turn, query), False),
               (reply_block(reply), turn == last or not last_turn_only)]
  return pieces


def _encode(vocabulary, text: str) -> list[int]:
  return [int(i) for i in vocabulary.encode(text)]


def _encode_after(vocabulary, previous_piece: str | None, text: str) -> list[int]:
  """The ids of `text` as tokenized right after the special piece `previous_piece`."""
  if previous_piece is None:
    return _encode(vocabulary, text)
  prefix = _encode(vocabulary, previous_piece)
  ids = _encode(vocabulary, previous_piece + text)
  return ids[len(prefix):] if ids[:len(prefix)] == prefix else []  # [] fails the check below


def _check_template_pieces(vocabulary) -> None:
  sp = vocabulary.tokenizer
  missing = [p for p in TEMPLATE_PIECES if sp.id_to_piece(sp.piece_to_id(p)) != p]
  if missing:
    raise ValueError(
        f"The tokenizer {vocabulary.sentencepiece_model_file} has no single piece for "
        f"{missing}, so BatGPT's chat template cannot be masked exactly. It needs "
        f"{TEMPLATE_PIECES} as user-defined pieces: retrain it with `batgpt tokenizer train` "
        "(which adds them), or use the default vocabulary.")


def rendered(vocabulary, conversation: Conversation, *,
             last_turn_only: bool = False) -> tuple[list[int], list[int]]:
  """(ids, loss_mask) of the conversation: ids == vocabulary.encode(conversation.text())."""
  _check_template_pieces(vocabulary)
  ids, mask, previous = [], [], None
  for text, is_target in _pieces(conversation, last_turn_only):
    piece_ids = _encode_after(vocabulary, previous, text)
    ids += piece_ids
    mask += [int(is_target)] * len(piece_ids)
    previous = END_OF_PROMPT if text.endswith(END_OF_PROMPT) else (
        END_OF_SYSTEM if text.endswith(END_OF_SYSTEM) else "[Assistant]")
  whole = _encode(vocabulary, conversation.text())
  if ids != whole:
    raise ValueError(
        f"The tokenizer {vocabulary.sentencepiece_model_file} tokenizes BatGPT's chat template "
        f"differently in context than piece by piece, so replies cannot be masked exactly. It "
        f"needs {TEMPLATE_PIECES} as user-defined pieces: retrain it with `batgpt tokenizer "
        f"train` (which adds them), or use the default vocabulary.")
  return ids, mask


def training_example(vocabulary, conversation: Conversation, *, seq_len: int,
                     eos_id: int, last_turn_only: bool = False) -> dict[str, np.ndarray] | None:
  """{'targets': ids + [EOS], 'loss_mask'} (int32, same length), fitted to `seq_len`.

  The row is [direction token] + targets, so targets hold at most seq_len - 1 ids. Oldest turns
  are dropped until it fits (the system prompt and the last turn are kept); None when even the
  system prompt and the last turn do not fit.
  """
  for drop in range(len(conversation.turns)):
    kept = dataclasses.replace(conversation, turns=conversation.turns[drop:])
    ids, mask = rendered(vocabulary, kept, last_turn_only=last_turn_only)
    if len(ids) + 2 <= seq_len:
      return {"targets": np.asarray(ids + [eos_id], np.int32),
              "loss_mask": np.asarray(mask + [0], np.int32)}
  return None
