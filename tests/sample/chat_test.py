"""`batgpt chat`: the history reaches the next prompt, /reset forgets it, replies stream.

The model is random, so what it says means nothing; what is checked is the prompt it is given.
"""

import ast
import dataclasses
import io
import os
import re
import select
import subprocess
import sys
import time

import pytest

from batgpt_jax.data import chat
from batgpt_jax.sample import chat as chat_command
from batgpt_jax.sample import engine, options

SAMPLING = engine.SamplingConfig(max_new_tokens=6)


@pytest.fixture
def session(batgpt_model, data_tiny_vocab):
  cfg, params = batgpt_model
  loaded = options.Loaded(cfg=cfg, params=params, vocabulary=data_tiny_vocab, mesh=None,
                          rules=(), source="test")
  return chat_command.ChatSession(loaded, SAMPLING, out=io.StringIO(), log=io.StringIO(),
                                  show_prompt=True)


def _prompts(log: str) -> list[str]:
  return [ast.literal_eval(m) for m in re.findall(r"# prompt: ('.*')", log)]


def test_history_system_and_reset(session):
  answers = []  # what each turn replied (random text: it may hold any piece, newlines too)
  reply = session.reply
  session.reply = lambda query: answers.append(reply(query)) or answers[-1]
  chat_command.converse(session, ["Hello there", "What did I say?", "/system Be brief.",
                                  "Third", "/reset", "Again", "/nonsense", "long " * 1100])
  prompts = _prompts(session.log.getvalue())
  a1, a2, _, a4 = answers
  assert prompts[0] == chat.chat_prompt("Hello there")
  assert prompts[1] == chat.chat_prompt("What did I say?", [("Hello there", a1)])
  assert prompts[2] == chat.chat_prompt(
      "Third", [("Hello there", a1), ("What did I say?", a2)], system="Be brief.")
  assert prompts[3] == chat.chat_prompt("Again", system="Be brief.")  # history forgotten
  assert "unknown command '/nonsense'" in session.log.getvalue()
  # a query longer than the model is refused with the reason, and the history survives it
  assert "error: The longest prompt" in session.log.getvalue()
  assert session.history == [("Again", a4)]


def test_streamed_text_is_the_reply(session):
  answer = session.reply("Hello there")
  assert session.out.getvalue() == answer + "\n"  # streamed piece by piece, then the newline


def test_oldest_turns_are_dropped_to_fit_max_len(session):
  # 70 positions: the system prompt and two turns of ~29 tokens do not fit with a reply
  short = dataclasses.replace(session.loaded.cfg, max_len=70)
  session.loaded = dataclasses.replace(session.loaded, cfg=short)
  session.system = "Be brief."
  for query in ["one", "two", "three"]:
    session.reply(query)
  log = session.log.getvalue()
  assert "the oldest turn was dropped to fit max_len" in log
  last = _prompts(log)[-1]
  assert "[User] one" not in last and last.startswith("[System]\n\n Be brief.")  # kept
  assert last == chat.chat_prompt("three", session.history[:-1], system="Be brief.")


def _read_until(fd: int, marker: str, seen: list[str], deadline: float) -> str:
  """Reads the pty into `seen` until `marker` appears after what was already consumed."""
  start = len("".join(seen))
  while marker not in "".join(seen)[start:]:
    left = deadline - time.monotonic()
    if left <= 0:
      raise AssertionError(f"batgpt chat did not print {marker!r} in time; it printed:\n"
                           + "".join(seen))
    ready, _, _ = select.select([fd], [], [], left)
    if ready:
      try:
        data = os.read(fd, 4096)
      except OSError:  # the child closed the terminal
        data = b""
      if not data:
        raise AssertionError(f"batgpt chat ended before {marker!r}:\n" + "".join(seen))
      seen.append(data.decode("utf-8", "replace").replace("\r\n", "\n"))
  return "".join(seen)[start:]


def test_chat_in_a_pseudo_terminal(tiny_run, data_tiny_vocab_path):
  leader, follower = os.openpty()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one device is enough here
  child = subprocess.Popen(
      [sys.executable, "-m", "batgpt_jax.cli", "chat", f"--checkpoint={tiny_run}",
       f"--vocab={data_tiny_vocab_path}", "--max_new_tokens=4", "--show_prompt"],
      stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
  os.close(follower)
  seen: list[str] = []
  deadline = time.monotonic() + 150
  try:
    _read_until(leader, "you> ", seen, deadline)
    turns = []
    for line in ["Hello there", "What did I say?", "/reset", "Again"]:
      os.write(leader, (line + "\n").encode())
      turns.append(_read_until(leader, "you> ", seen, deadline))
    os.write(leader, b"\x04")  # Ctrl-D ends the chat
    assert child.wait(timeout=max(1, deadline - time.monotonic())) == 0
  finally:
    if child.poll() is None:
      child.kill()
    os.close(leader)
  prompt1, prompt2, prompt4 = (_prompts(turns[i])[0] for i in (0, 1, 3))
  streamed = turns[0].split("bot> ", 1)[1].rsplit("you> ", 1)[0].strip()  # reply 1, as printed
  assert prompt1 == chat.chat_prompt("Hello there")
  # turn 2 reads turn 1 (query and the reply printed) before its own query
  head, tail = chat.chat_prompt("What did I say?", [("Hello there", "\0")]).split("\0")
  assert prompt2.startswith(head) and prompt2.endswith(tail)
  assert prompt2[len(head):-len(tail)] == streamed
  assert "history cleared" in turns[2]
  assert prompt4 == chat.chat_prompt("Again")
