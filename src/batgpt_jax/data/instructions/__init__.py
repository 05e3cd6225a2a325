"""The default instruction set: project-generated, checkable English and Chinese conversations.

`train.jsonl.gz` and `heldout.jsonl.gz` are written by `generate.py` (see README.md). Each line
is {"family": ..., "language": "en"|"zh", "messages": [...]}; the held-out split is the
'validation' split of `tasks.DefaultInstructions`.
"""

import gzip
import json
import pathlib
from typing import Iterator

# Resolved from __file__ so it works from a source checkout and from an installed package.
DIRECTORY = pathlib.Path(__file__).resolve().parent
SPLIT_FILES = {"train": DIRECTORY / "train.jsonl.gz", "validation": DIRECTORY / "heldout.jsonl.gz"}


def read_default_records(split: str) -> Iterator[tuple[str, dict]]:
  """(file:line, record) of the shipped split 'train' or 'validation' (the held-out file)."""
  if split not in SPLIT_FILES:
    raise ValueError(f"split={split!r}; expected one of {tuple(SPLIT_FILES)}.")
  path = SPLIT_FILES[split]
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      yield f"{path}:{lineno}", json.loads(line)


def default_examples(split: str) -> list[dict]:
  """The records of the shipped split, in file order."""
  return [record for _, record in read_default_records(split)]
