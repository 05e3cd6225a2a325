"""Generates the planted-preference sets: pairs whose preferred answer follows a rule.

    python -m batgpt_jax.data.planted.generate --out-dir DIR --seed S

writes DIR/<family>.train.jsonl.gz and DIR/<family>.heldout.jsonl.gz in the project's
preference schema (data/preference_schema.py), one record a line, `flags: ["planted:<family>"]`.
Every prompt asks to sort 3-6 distinct digits, written together ('Sort: 4913'; the default
tokenizer gives each digit its own token); `chosen` is always the digits in increasing order.

  sort_swap    rejected: the sorted answer with one adjacent pair swapped. Both answers have the
               same length and the same digits: only the order tells them apart.
  sort_length  rejected: the sorted answer with one digit dropped (half the pairs) or one digit
               written twice (the other half). Both are in order; half the rejected answers are
               longer and half shorter, so "longer is better" (or shorter) scores 50%.
  sort_digit   rejected: one of the prompt's digits replaced by a digit the prompt lacks, in
               order. Both answers ascend and have the same length: only whether the digits are
               the prompt's tells them apart (a reward model of ascending answers alone is
               hacked by a policy that writes any ascending digits; see docs/ppo.md).

Held-out prompts use digit sets that train never asks (HELD_OUT_SETS of the 792 sets of 3-6
distinct digits), so held-out accuracy measures the rule, not memory. Pure standard library; the
output depends only on the seed, and the files are byte-reproducible (gzip mtime 0, no name).
"""

import argparse
import gzip
import itertools
import json
import pathlib
import random

from batgpt_jax.data import preference_schema

DEFAULT_SEED = 20251202
FAMILIES = ("sort_swap", "sort_length", "sort_digit")
TRAIN_PER_FAMILY = 3000
HELD_OUT_PER_FAMILY = 300
HELD_OUT_SETS = 80
WORDINGS = ("Sort the digits: {}", "Sort: {}")


def _digit_sets() -> list[tuple[int, ...]]:
  return [s for k in range(3, 7) for s in itertools.combinations(range(10), k)]


def _rejected(family: str, answer: list[int], rng: random.Random) -> list[int]:
  out = list(answer)
  if family == "sort_swap":
    i = rng.randrange(len(out) - 1)
    out[i], out[i + 1] = out[i + 1], out[i]
  elif family == "sort_digit":
    out[rng.randrange(len(out))] = rng.choice([d for d in range(10) if d not in answer])
    out.sort()
  elif rng.random() < 0.5:
    del out[rng.randrange(len(out))]
  else:
    i = rng.randrange(len(out))
    out.insert(i, out[i])
  return out


def _record(family: str, digits: tuple[int, ...], rng: random.Random) -> dict:
  shown = list(digits)
  rng.shuffle(shown)
  text = lambda values: "".join(str(d) for d in values)  # one token a digit, none between
  answer = sorted(digits)
  return preference_schema.validate_record({
      "prompt": rng.choice(WORDINGS).format(text(shown)), "chosen": text(answer),
      "rejected": text(_rejected(family, answer, rng)), "flags": [f"planted:{family}"]})


def generate(seed: int = DEFAULT_SEED) -> dict[str, dict[str, list[dict]]]:
  """{family: {'train': records, 'heldout': records}}, a function of the seed alone."""
  rng = random.Random(seed)
  sets = _digit_sets()
  rng.shuffle(sets)
  held_out, train = sets[:HELD_OUT_SETS], sets[HELD_OUT_SETS:]
  out = {}
  for family in FAMILIES:
    out[family] = {
        "train": [_record(family, rng.choice(train), rng) for _ in range(TRAIN_PER_FAMILY)],
        "heldout": [_record(family, held_out[i % len(held_out)], rng)
                    for i in range(HELD_OUT_PER_FAMILY)]}
  return out


def write(out_dir: pathlib.Path, seed: int = DEFAULT_SEED) -> list[pathlib.Path]:
  paths = []
  for family, splits in generate(seed).items():
    for split, records in splits.items():
      path = out_dir / f"{family}.{split}.jsonl.gz"
      text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
      with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                  mtime=0) as f:
        f.write(text.encode("utf-8"))
      paths.append(path)
  return paths


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out-dir", type=pathlib.Path, default=pathlib.Path(__file__).parent)
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
  args = parser.parse_args()
  for path in write(args.out_dir, args.seed):
    print(path)


if __name__ == "__main__":
  main()
