"""The chat JSONL formats: messages, prompt/response, Alpaca, auto; malformed records."""

import pytest

from batgpt_jax.data.chat import Conversation
from batgpt_jax.data.chat_records import conversation_from_record as parse

MESSAGES = {"messages": [{"role": "system", "content": " Be brief. "},
                         {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello."},
                         {"role": "user", "content": "2 + 3?"},
                         {"role": "assistant", "content": "5\n"}], "id": 7}


def test_each_format_parses():
  expected = Conversation((("Hi", "Hello."), ("2 + 3?", "5")), "Be brief.")
  assert parse(MESSAGES, "messages", "a.jsonl:1") == expected
  assert parse(MESSAGES, "auto", "a.jsonl:1") == expected
  no_system = {"messages": MESSAGES["messages"][1:3]}
  assert parse(no_system, "auto", "w") == Conversation((("Hi", "Hello."),))
  pair = {"prompt": "Name a colour.", "response": "red", "system": "Be brief."}
  assert parse(pair, "prompt_response", "w") == parse(pair, "auto", "w") == Conversation(
      (("Name a colour.", "red"),), "Be brief.")
  alpaca = {"instruction": "Sort the numbers.", "input": "3 1 2", "output": "1 2 3"}
  assert parse(alpaca, "alpaca", "w") == parse(alpaca, "auto", "w") == Conversation(
      (("Sort the numbers.\n\n3 1 2", "1 2 3"),))
  for empty in ({"input": ""}, {"input": "  "}, {}):
    record = {"instruction": "Say hi.", "output": "hi", **empty}
    assert parse(record, "auto", "w") == Conversation((("Say hi.", "hi"),))


@pytest.mark.parametrize("record, fmt, message", [
    ([1, 2], "auto", r"f.jsonl:3: expected a JSON object .* found list"),
    ({"text": "x"}, "auto", r"f.jsonl:3: a record with keys \['text'\] is none of the chat "
                            r"formats.*ChatJsonl.format"),
    ({"prompt": "x"}, "auto", r"f.jsonl:3: field 'response' is missing; expected a non-empty "
                              r"string \(record keys: \['prompt'\]\)"),
    ({"prompt": "x", "response": 5}, "prompt_response", r"'response' is of type int"),
    ({"prompt": "x", "response": "  "}, "auto", r"f.jsonl:3: field 'response' is empty"),
    ({"instruction": "x", "input": 3, "output": "y"}, "alpaca", r"'input' is int"),
    ({"messages": "hi"}, "messages", r"f.jsonl:3: 'messages' must be a non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "auto", r"message 0 is .*'bot'"),
    ({"messages": [{"role": "user", "content": "a"}]}, "auto",
     r"roles are \['user'\]; expected an optional 'system' first.*drop a trailing user"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, "auto",
     r"roles are \['user', 'user', 'assistant'\].*Merge consecutive messages"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
                   {"role": "assistant", "content": " "}]}, "auto",
     r"f.jsonl:3: assistant message 2 is empty"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "system", "content": "late"}]}, "auto",
     r"roles are \['user', 'assistant', 'system'\]"),
    ({"prompt": "x", "response": "y"}, "alpaca", r"field 'instruction' is missing"),
])
def test_malformed_records_name_the_line_and_the_fix(record, fmt, message):
  with pytest.raises(ValueError, match=message):
    parse(record, fmt, "f.jsonl:3")


def test_unknown_format():
  with pytest.raises(ValueError, match=r"format='chatml'; expected one of \('auto'"):
    parse({"prompt": "a", "response": "b"}, "chatml", "w")
