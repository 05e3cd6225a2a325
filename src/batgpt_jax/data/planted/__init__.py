"""The planted-preference sets: project-generated pairs whose preferred answer follows a rule.

`<family>.train.jsonl.gz` and `<family>.heldout.jsonl.gz` are written by `generate.py` (see its
docstring for the families); the held-out file is the 'validation' split of
`preference_tasks.PlantedPreferences`.
"""

import gzip
import json
import pathlib
from typing import Iterator

import numpy as np

DIRECTORY = pathlib.Path(__file__).resolve().parent
FAMILIES = ("sort_swap", "sort_length", "sort_digit")
SPLIT_FILES = {"train": "train", "validation": "heldout"}


def path_of(family: str, split: str) -> pathlib.Path:
  if family not in FAMILIES:
    raise ValueError(f"PlantedPreferences.family={family!r}; expected one of {FAMILIES}.")
  if split not in SPLIT_FILES:
    raise ValueError(f"split={split!r}; expected one of {tuple(SPLIT_FILES)}.")
  return DIRECTORY / f"{family}.{SPLIT_FILES[split]}.jsonl.gz"


def read_records(family: str, split: str) -> Iterator[tuple[str, dict]]:
  """(file:line, record) of a shipped family's split 'train' or 'validation'."""
  path = path_of(family, split)
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      yield f"{path}:{lineno}", json.loads(line)


def write_both_answers(family: str, path, seed: int = 0) -> None:
  """Instruction-tuning rows of a family's 'train' split, each prompt answered both ways (its
  chosen and its rejected answer), shuffled with `seed`: `{"prompt", "response"}` JSONL at
  `path`. SFT on them gives a model that follows the rule about half the time, the start of the
  PPO and DPO learning tests and studies."""
  rows = [{"prompt": r["prompt"], "response": answer}
          for _, r in read_records(family, "train")
          for answer in (r["chosen"], r["rejected"])]
  np.random.default_rng(seed).shuffle(rows)
  pathlib.Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
