"""Instruction records (one JSON object each) -> chat.Conversation, in the formats users have.

  messages         {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
                   an optional system message first, then user and assistant messages in turn,
                   ending with an assistant message.
  prompt_response  {"prompt": "...", "response": "..."}                     (one turn)
  alpaca           {"instruction": "...", "input": "...", "output": "..."}   (one turn; "input"
                   may be empty or absent; when present it follows the instruction after a
                   blank line, as in Alpaca's own prompt)
  auto             each record by its keys: "messages", else "prompt", else "instruction".

prompt_response and alpaca records may carry a "system" string. Other keys (an id, a task
family) are ignored. Contents are stripped of surrounding whitespace, as chat history is; a
user or assistant content that is empty after stripping is an error (there is nothing to learn
or to answer). Errors name the record (`where`, e.g. file:line) and the fix.
"""

from typing import Any

from batgpt_jax.data.chat import Conversation

FORMATS = ("auto", "messages", "prompt_response", "alpaca")
ROLES = ("system", "user", "assistant")
_SHAPES = ('{"messages": [{"role": ..., "content": ...}, ...]}, '
           '{"prompt": ..., "response": ...} or {"instruction": ..., "input": ..., "output": ...}')


def record_format(record: dict, fmt: str) -> str:
  """The format of `record`: `fmt` itself unless it is 'auto'."""
  if fmt != "auto":
    return fmt
  for key, found in (("messages", "messages"), ("prompt", "prompt_response"),
                     ("instruction", "alpaca")):
    if key in record:
      return found
  return "unknown"


def conversation_from_record(record: Any, fmt: str, where: str) -> Conversation:
  """The conversation in `record`, a parsed JSON value read at `where` (e.g. 'file.jsonl:12')."""
  if fmt not in FORMATS:
    raise ValueError(f"format={fmt!r}; expected one of {FORMATS}.")
  if not isinstance(record, dict):
    raise ValueError(f"{where}: expected a JSON object ({_SHAPES}), found "
                     f"{type(record).__name__}. Write one object per line.")
  kind = record_format(record, fmt)
  if kind == "messages":
    return _from_messages(record, where)
  if kind == "prompt_response":
    return Conversation(((_text(record, "prompt", where), _text(record, "response", where)),),
                        _system(record, where))
  if kind == "alpaca":
    instruction = _text(record, "instruction", where)
    extra = record.get("input", "")
    if not isinstance(extra, str):
      raise ValueError(f"{where}: 'input' is {type(extra).__name__}; expected a string (it may "
                       "be empty or left out).")
    query = f"{instruction}\n\n{extra.strip()}" if extra.strip() else instruction
    return Conversation(((query, _text(record, "output", where)),), _system(record, where))
  raise ValueError(f"{where}: a record with keys {sorted(record)} is none of the chat formats; "
                   f"expected {_SHAPES}. Rename the fields, or set ChatJsonl.format.")


def _text(record: dict, key: str, where: str) -> str:
  value = record.get(key)
  if not isinstance(value, str):
    found = "missing" if key not in record else f"of type {type(value).__name__}"
    raise ValueError(f"{where}: field {key!r} is {found}; expected a non-empty string (record "
                     f"keys: {sorted(record)}).")
  if not value.strip():
    raise ValueError(f"{where}: field {key!r} is empty; give it text or leave the record out.")
  return value.strip()


def _system(record: dict, where: str) -> str | None:
  if record.get("system") is None:
    return None
  system = record["system"]
  if not isinstance(system, str):
    raise ValueError(f"{where}: 'system' is {type(system).__name__}; expected a string.")
  return system.strip() or None


def _from_messages(record: dict, where: str) -> Conversation:
  messages = record["messages"]
  if not isinstance(messages, list) or not messages:
    raise ValueError(f"{where}: 'messages' must be a non-empty list of "
                     '{"role": ..., "content": ...} objects.')
  roles, contents = [], []
  for n, message in enumerate(messages):
    if (not isinstance(message, dict) or message.get("role") not in ROLES
        or not isinstance(message.get("content"), str)):
      raise ValueError(f"{where}: message {n} is {message!r}; expected "
                       f'{{"role": one of {ROLES}, "content": a string}}.')
    roles.append(message["role"])
    contents.append(message["content"].strip())
  system, offset = None, 0
  if roles[0] == "system":
    system, offset = contents[0] or None, 1
    roles, contents = roles[1:], contents[1:]
  expected = ["user", "assistant"] * (len(roles) // 2 + 1)
  if not roles or roles != expected[:len(roles)] or roles[-1] != "assistant":
    raise ValueError(f"{where}: the roles are {['system'] * offset + roles}"
                     "; expected an optional 'system' first, then 'user' and 'assistant' in "
                     "turn, ending with 'assistant'. Merge consecutive messages of one role and "
                     "drop a trailing user message (it has no reply to learn).")
  for n, (role, content) in enumerate(zip(roles, contents)):
    if not content:
      raise ValueError(f"{where}: {role} message {n + offset} is empty; give it "
                       "text or leave the conversation out.")
  return Conversation(tuple(zip(contents[0::2], contents[1::2])), system)
