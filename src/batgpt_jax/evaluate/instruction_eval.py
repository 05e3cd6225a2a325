"""A checkpoint's held-out exact match on the default instruction set, through the engine.

`batgpt eval --task=instructions --checkpoint=runs/sft` renders every held-out conversation
with BatGPT's chat template, generates greedy replies in batches on the training mesh (stop at
<eop> or EOS), and scores them per task family (`instructions.exact_match_by_family`). It prints
the table and a few replies, and writes the scores as JSON beside the checkpoint's run.
"""

import json
import os
from typing import Sequence

from etils import epath

from batgpt_jax.data import chat
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.evaluate import instructions
from batgpt_jax.sample import engine, text
from batgpt_jax.train import metrics


def replies(loaded, examples: Sequence[instructions.HeldOutExample], *, max_new_tokens: int = 32,
            batch_size: int = 128) -> list[str]:
  """Greedy replies as decoded text with their stop token kept ("... <eop>" when it ended)."""
  eop = loaded.vocabulary.tokenizer.piece_to_id(chat.END_OF_PROMPT)
  sampling = engine.SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0,
                                   stop_ids=(vocab_lib.EOS_ID, eop))
  prompts = [text.prompt_ids(loaded.vocabulary, example.prompt(), "l2r") for example in examples]
  samples = engine.sample(loaded.cfg, loaded.params, prompts, sampling, mesh=loaded.mesh,
                          rules=loaded.rules, max_batch=batch_size)
  out = []
  for prompt, row, length in zip(prompts, samples.tokens, samples.lengths):
    ids = [int(t) for t in row[:int(length)] if int(t) != vocab_lib.EOS_ID]
    out.append(text.continuation_text(loaded.vocabulary, prompt, ids, "l2r"))
  return out


def evaluate(loaded, *, max_new_tokens: int = 32, show: int = 0) -> dict:
  """Scores of `loaded` on the held-out split; `show` replies per family go in 'examples',
  the wrong ones first (they are what a reader needs to see)."""
  examples = instructions.held_out_examples()
  answers = replies(loaded, examples, max_new_tokens=max_new_tokens)
  scores = instructions.exact_match_by_family(examples, answers)
  return {**scores, "examples": shown_replies(examples, answers, show)}


def shown_replies(examples: Sequence[instructions.HeldOutExample], answers: Sequence[str],
                  show: int) -> dict[str, list[dict]]:
  """Up to `show` {query, expected, reply} per family: the wrong replies first, each group in
  held-out order."""
  by_family: dict[str, list] = {}
  for example, answer in zip(examples, answers):
    right = instructions.scored_reply(answer)[0] == example.answer.strip()
    by_family.setdefault(example.family, []).append(
        (right, {"query": example.query, "expected": example.answer, "reply": answer}))
  return {family: [item for _, item in sorted(rows, key=lambda row: row[0])[:show]]
          for family, rows in by_family.items()}


def run(args, loaded) -> int:
  """The `--task=instructions` branch of `batgpt eval`: print, and write JSON beside the run."""
  scores = evaluate(loaded, max_new_tokens=args.max_new_tokens or 32, show=args.show)
  metrics.log_console(f"Held-out instructions of {loaded.source}:\n"
                      f"{instructions.format_scores(scores)}")
  for family, shown in scores["examples"].items():
    for item in shown:
      metrics.log_console(f"[{family}] {item['query']!r} -> {item['reply']!r} "
                          f"(expected {item['expected']!r})")
  checkpoints_dir, step = os.path.split(loaded.source)
  out = epath.Path(checkpoints_dir).parent / "eval" / f"instructions-{step}.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(scores, ensure_ascii=False, indent=1))
  metrics.log_console(f"Wrote {out}")
  return 0
