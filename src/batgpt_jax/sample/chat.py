"""`batgpt chat` at run time: the session and its loop (parser and help: sample/commands.py)."""

import dataclasses
import sys
from typing import Iterable, TextIO

import numpy as np

from batgpt_jax.data import chat
from batgpt_jax.sample import engine, options, text

COMMANDS = "/reset (forget the history), /system TEXT (set the system prompt), /quit"


class ChatSession:
  """One conversation: its history and system prompt; replies are streamed to `out`."""

  def __init__(self, loaded: options.Loaded, sampling: engine.SamplingConfig, *,
               system: str | None = None, out: TextIO = sys.stdout, log: TextIO = sys.stderr,
               show_prompt: bool = False, reply_prefix: str = ""):
    self.loaded = loaded
    self.sampling = text.with_chat_stop(loaded.vocabulary, sampling)
    self.system = system
    self.history: list[tuple[str, str]] = []
    self.out, self.log, self.show_prompt = out, log, show_prompt
    self.reply_prefix = reply_prefix  # 'bot> ' on a terminal
    self._streamed: dict[int, int] = {}  # step -> token of the reply being sampled
    self._printed = ""

  def reset(self) -> None:
    self.history = []

  def prompt_ids(self, query: str) -> tuple[list[int], list[tuple[str, str]]]:
    """(ids of the conversation plus `query`, the history they hold): the oldest turns are
    dropped until the reply fits in max_len; the system prompt always stays."""
    budget = self.loaded.cfg.max_len - self.sampling.max_new_tokens
    history = list(self.history)
    while True:
      prompt = chat.chat_prompt(query, history, self.system)
      ids = text.prompt_ids(self.loaded.vocabulary, prompt, "l2r")
      if len(ids) <= budget or not history:
        break
      history = history[1:]
      print("# the oldest turn was dropped to fit max_len", file=self.log)
    if self.show_prompt:
      print(f"# prompt: {prompt!r}", file=self.log, flush=True)
    return ids, history

  def reply(self, query: str) -> str:
    """Samples the reply to `query`, printing it as it comes, and adds the turn to the history.

    A query that cannot fit even alone raises ValueError and leaves the history as it was.
    """
    ids, history = self.prompt_ids(query)
    self._streamed, self._printed = {}, ""
    self.out.write(self.reply_prefix)
    self.out.flush()
    # A new seed each turn: the seed is data, not a new compilation.
    samples = engine.sample(
        self.loaded.cfg, self.loaded.params, [ids],
        dataclasses.replace(self.sampling, seed=self.sampling.seed + len(history)),
        mesh=self.loaded.mesh, rules=self.loaded.rules, on_token=self._on_token)
    answer = text.continuation_text(self.loaded.vocabulary, ids, samples.output_ids()[0],
                                    "l2r").strip()
    if answer.startswith(self._printed) and len(answer) > len(self._printed):
      self.out.write(answer[len(self._printed):])  # whatever the stream held back
    self.out.write("\n")
    self.out.flush()
    self.history = history + [(query, answer)]
    return answer

  def _on_token(self, step, tokens, emitted) -> None:
    """The engine's host callback: prints the reply's new text (row 0 is this conversation)."""
    if not bool(np.asarray(emitted)[0]):
      return
    self._streamed[int(step)] = int(np.asarray(tokens)[0])
    ids = []  # the tokens so far, in step order
    while len(ids) in self._streamed:
      ids.append(self._streamed[len(ids)])
    shown = self.loaded.vocabulary.decode(ids).lstrip()
    # Hold back a partial UTF-8 character (byte-fallback pieces) until it is complete.
    if shown.endswith("\ufffd") or not shown.startswith(self._printed):
      return
    self.out.write(shown[len(self._printed):])
    self.out.flush()
    self._printed = shown


def queries(stdin: TextIO, out: TextIO) -> Iterable[str]:
  """Lines typed at a `you> ` prompt on a terminal, or the lines of piped stdin."""
  if not stdin.isatty():
    yield from (line.rstrip("\n") for line in stdin)
    return
  while True:
    out.write("you> ")
    out.flush()
    line = stdin.readline()
    if not line:  # Ctrl-D
      out.write("\n")
      return
    yield line.rstrip("\n")


def converse(session: ChatSession, lines: Iterable[str]) -> None:
  """Runs the commands and turns of `lines` through `session`."""
  for line in lines:
    line = line.strip()
    if not line:
      continue
    if line in ("/quit", "/exit"):
      return
    if line == "/reset":
      session.reset()
      print("# history cleared", file=session.log, flush=True)
    elif line == "/system" or line.startswith("/system "):
      session.system = line[len("/system"):].strip() or None
      print(f"# system prompt: {session.system!r}", file=session.log, flush=True)
    elif line.startswith("/"):
      print(f"# unknown command {line.split()[0]!r}; commands: {COMMANDS}", file=session.log,
            flush=True)
    else:
      try:
        session.reply(line)
      except ValueError as err:  # e.g. one query longer than the model: say so, keep chatting
        session.out.write("\n")
        print(f"error: {err}", file=session.log, flush=True)


def _chat(args, gin_text: str) -> int:
  del gin_text
  loaded = options.load_from_flags(args)
  print(f"# {loaded.source}; commands: {COMMANDS}", file=sys.stderr, flush=True)
  session = ChatSession(loaded, options.sampling_config(args, loaded.vocabulary),
                        system=args.system, show_prompt=args.show_prompt,
                        reply_prefix="bot> " if sys.stdin.isatty() else "")
  converse(session, queries(sys.stdin, sys.stdout))
  return 0


cmd_chat = options.report_errors(_chat)
