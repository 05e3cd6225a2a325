"""Generates the default instruction set: short, exactly checkable English and Chinese tasks.

    python -m batgpt_jax.data.instructions.generate --out-dir DIR --seed S

writes DIR/train.jsonl.gz and DIR/heldout.jsonl.gz, one record a line:
{"family": ..., "language": "en"|"zh", "messages": [{"role", "content"}, ...]}, ending with the
assistant reply that is the exact answer. Families (FAMILIES):

  arithmetic    a + b with one-digit a and b; the held-out split asks 20 sums a + b that train
                only ever asks as b + a (in every wording and language), never in that order
  copy          repeat 2-3 words (English: half of them people's names and towns)
  reverse       say 2-3 words in reverse order
  sort          3-4 distinct digits (en, zh) or letters (en) in increasing order
  corpus_facts  a sentence in the embedded corpus's style, built from its generator and lexicon
                (a character's trade and town, a pet, the weather, a shopping trip), and a
                question that it answers; in-context, so a tiny model can learn it exactly
  recall        three user turns: two statements (each acknowledged) and a question about the
                FIRST, said two turns earlier (in train a quarter ask about the second instead);
                names and towns, the values with many choices, are asked most (RECALL_WEIGHTS)

Arithmetic asks every sum in two English and two Chinese wordings; the other families are
Chinese 40% of the time (CHINESE_SHARE), copy's and reverse's train conversations half the time
(TRAIN_CHINESE_SHARE). A quarter of the train conversations (not recall's) have a system
prompt; held-out ones have none. Every conversation fits in 128 tokens of the default
vocabulary (tests/data). Held-out conversations never occur in train (for arithmetic: no
held-out sum at all). Replies are short and regular so that a tiny model can learn them. Pure
standard library plus the corpus lexicon; the output depends only on the seed, and the files
are byte-reproducible.
"""

import argparse
import gzip
import json
import pathlib
import random

from batgpt_jax.data.corpus import generate as corpus_gen
from batgpt_jax.data.corpus import lexicon as lx

DEFAULT_SEED = 20250301
FAMILIES = ("arithmetic", "copy", "reverse", "sort", "corpus_facts", "recall")
HELD_OUT_PER_FAMILY = 80
# Enough distinct conversations that a small model learns each rule instead of memorising its
# examples (make sft-smoke sees each about 3 times); recall, the hardest, gets the most; copy
# and reverse get more for their Chinese (TRAIN_CHINESE_SHARE).
TRAIN_PER_FAMILY = {"copy": 4000, "reverse": 4000, "sort": 3000, "corpus_facts": 3000,
                    "recall": 5000}
ARITHMETIC_HELD_OUT_SUMS = 20  # of the 90 one-digit sums a + b with a != b
ARITHMETIC_REPEATS = 8  # each train wording 8 times, 2 of them with a system prompt
CHINESE_SHARE = 0.4
# The Chinese copy and reverse instructions (照抄, 重复这些词, 倒序, 把这些词倒过来说) have no
# pieces in the default tokenizer, 6-24 byte tokens each, so the small model tells copy from
# reverse by bytes; with about 1,100 Chinese train conversations a family it mixed them up
# (`照抄：羊 狗` -> `狗 羊`). Train asks these two in Chinese half the time, on top of as many
# English ones as before: taking the Chinese from the English (3,000 at 0.6) cost the copying
# of names, one rare token each (copy and recall fell to 73%). Held-out draws keep
# CHINESE_SHARE, so the held-out set does not change with this.
TRAIN_CHINESE_SHARE = {"copy": 0.5, "reverse": 0.5}
SYSTEM_SHARE = 0.25
SYSTEMS = {"en": ("You are a helpful assistant.", "Answer briefly."),
           "zh": ("你是一个有用的助手。", "请简短回答。")}
ACK = {"en": "OK.", "zh": "好的。"}

EN_WORDS = tuple(sorted({a[0] for a in lx.ANIMALS} | set(lx.COLOURS) | {p for p, _ in lx.PETS}
                        | {b for b in lx.BUILDINGS if " " not in b}))
EN_NAMES = lx.FEMALE_NAMES + lx.MALE_NAMES
# Names and towns are one rare token each (the default tokenizer learnt them whole from the
# corpus), so a reply that copies one is only right if train has made that token an answer often
# enough: 60 of the corpus's 540 town names, each then in 23-55 train answers (40 on average).
TOWNS = tuple(sorted(random.Random(DEFAULT_SEED).sample(
    [head + tail for head in lx.TOWN_HEADS for tail in lx.TOWN_TAILS], 60)))
COPY_NAMES_SHARE = 0.5  # English copy draws its words from EN_NAMES + TOWNS this often
# How often each slot is the one asked about: a colour, pet or number is one of a few values,
# a name or town one of 60-80.
RECALL_WEIGHTS = {"name": 3, "town": 3, "colour": 1, "pet": 1, "number": 1,
                  "place": 2, "animals": 1}
# Words whose characters are all pieces of the default tokenizer (trained on the corpus), so a
# copied word is one or two tokens, not six bytes.
ZH_WORDS = ("猫", "狗", "鸟", "鱼", "马", "羊", "鸭子", "花", "树", "山", "河", "书", "菜", "学校",
            "公园", "商店", "医院", "市场", "饭馆", "朋友", "老师", "河边", "山上", "图书馆")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _turns(*pairs) -> list[dict]:
  messages = []
  for user, assistant in pairs:
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
  return messages


# --- families: each returns (language, [(user, assistant), ...]) for one rng draw ---


def arithmetic_wordings(a: int, b: int) -> list[tuple[str, str, str]]:
  """(language, question, answer): every wording of the sum a + b."""
  answer = str(a + b)
  return [("en", f"What is {a} + {b}?", answer), ("en", f"What is {a} plus {b}?", answer),
          ("zh", f"{a}加{b}等于多少？", answer), ("zh", f"计算{a}+{b}。", answer)]


def _language(rng, chinese_share: float) -> str:
  return "zh" if rng.random() < chinese_share else "en"


def copy_words(rng, chinese_share: float = CHINESE_SHARE):
  language = _language(rng, chinese_share)
  if language == "zh":
    pool = ZH_WORDS
  else:
    pool = EN_NAMES + TOWNS if rng.random() < COPY_NAMES_SHARE else EN_WORDS
  words = " ".join(rng.sample(pool, rng.randint(2, 3)))
  ask = (("Repeat these words: ", "Copy: ") if language == "en" else ("重复这些词：", "照抄："))
  return language, [(rng.choice(ask) + words, words)]


def reverse_words(rng, chinese_share: float = CHINESE_SHARE):
  language = _language(rng, chinese_share)
  words = rng.sample(EN_WORDS if language == "en" else ZH_WORDS, rng.randint(2, 3))
  ask = (("Reverse the order of these words: ", "Say these words backwards: ")
         if language == "en" else ("把这些词倒过来说：", "倒序："))
  return language, [(rng.choice(ask) + " ".join(words), " ".join(reversed(words)))]


def sort_items(rng, chinese_share: float = CHINESE_SHARE):
  language = _language(rng, chinese_share)
  letters = language == "en" and rng.random() < 0.4
  items = rng.sample(LETTERS if letters else "0123456789", rng.randint(3, 4))
  if letters:
    ask = "Sort these letters alphabetically: "
  elif language == "en":
    ask = "Sort these numbers from smallest to largest: "
  else:
    ask = "把这些数从小到大排列："
  return language, [(ask + " ".join(items), " ".join(sorted(items)))]


def corpus_fact(rng, chinese_share: float = CHINESE_SHARE):
  if rng.random() < chinese_share:
    return "zh", [_zh_fact(rng)]
  return "en", [_en_fact(rng)]


def _en_fact(rng) -> tuple[str, str]:
  p, home = corpus_gen.Person(rng), rng.choice(TOWNS)
  kind = rng.randrange(5)
  if kind < 2:
    text = f"{p.name} is a {p.trade} who lives in {home}."
    if kind == 0:
      return f"{text} Where does {p.name} live?", home
    return f"{text} What is {p.name}'s trade?", p.trade
  if kind < 4:
    (pet, _), colour, pet_name = (rng.choice(lx.PETS), rng.choice(lx.COLOURS),
                                  rng.choice(lx.PET_NAMES))
    text = f"{p.name} has {corpus_gen.an(colour)} {pet} called {pet_name}."
    if kind == 2:
      return f"{text} What is the {pet} called?", pet_name
    return f"{text} What colour is the {pet}?", colour
  day, (weather, _, _) = rng.choice(lx.DAYS), rng.choice(lx.WEATHER)
  return (f"On {day} the weather in {home} was {weather}. What was the weather on {day}?",
          weather)


def _zh_fact(rng) -> tuple[str, str]:
  name, kind = rng.choice(lx.ZH_NAMES), rng.randrange(4)
  if kind == 0:
    where, act = rng.choice(lx.ZH_PLACES)
    return f"{name}去{where}{act}。{name}去哪里了？", where
  if kind == 1:
    (beast, unit), n = rng.choice(lx.ZH_ANIMALS), rng.randint(1, 12)
    count = corpus_gen.zh_number(n, True)
    return f"{name}家有{count}{unit}{beast}。{name}家有几{unit}{beast}？", count
  if kind == 2:
    food = rng.choice(lx.ZH_FOODS)
    return f"{name}喜欢吃{food}。{name}喜欢吃什么？", food
  colour = rng.choice(lx.ZH_COLOURS)
  return f"{name}穿了一件{colour}色的衣服。{name}的衣服是什么颜色？", f"{colour}色"


def _en_slots(rng) -> dict:
  """slot -> (statement, question, answer), one value each."""
  name, home = rng.choice(EN_NAMES), rng.choice(TOWNS)
  colour, pet, number = rng.choice(lx.COLOURS), rng.choice(lx.PETS)[0], rng.randint(1, 20)
  return {"name": (f"My name is {name}.", "What is my name?", name),
          "town": (f"I live in {home}.", "Where do I live?", home),
          "colour": (f"My favourite colour is {colour}.", "What is my favourite colour?", colour),
          "pet": (f"My pet is {corpus_gen.an(pet)}.", "What pet do I have?", pet),
          "number": (f"My lucky number is {number}.", "What is my lucky number?", str(number))}


def _zh_slots(rng) -> dict:
  name, colour = rng.choice(lx.ZH_NAMES), rng.choice(lx.ZH_COLOURS)
  where, number = rng.choice(lx.ZH_PLACES)[0], rng.randint(1, 20)
  (beast, unit), count = rng.choice(lx.ZH_ANIMALS), corpus_gen.zh_number(rng.randint(1, 9), True)
  return {"name": (f"我叫{name}。", "我叫什么名字？", name),
          "colour": (f"我最喜欢的颜色是{colour}色。", "我最喜欢什么颜色？", f"{colour}色"),
          "animals": (f"我家有{count}{unit}{beast}。", f"我家有几{unit}{beast}？", count),
          "place": (f"我今天去了{where}。", "我今天去了哪里？", where),
          "number": (f"我的幸运数字是{number}。", "我的幸运数字是多少？", str(number))}


def recall(rng, chinese_share: float = CHINESE_SHARE, ask_first: bool = True):
  language = _language(rng, chinese_share)
  slots = _en_slots(rng) if language == "en" else _zh_slots(rng)
  names = sorted(slots)
  first = rng.choices(names, [RECALL_WEIGHTS[n] for n in names])[0]
  second = rng.choice([n for n in names if n != first])
  asked = slots[first if ask_first else second]
  return language, [(slots[first][0], ACK[language]), (slots[second][0], ACK[language]),
                    (asked[1], asked[2])]


_DRAW = {"copy": copy_words, "reverse": reverse_words, "sort": sort_items,
         "corpus_facts": corpus_fact, "recall": recall}


# --- the splits ---


def _record(family: str, language: str, turns, system: str | None = None) -> dict:
  messages = _turns(*turns)
  if system:
    messages.insert(0, {"role": "system", "content": system})
  return {"family": family, "language": language, "messages": messages}


def _maybe_system(rng, language: str) -> str | None:
  return rng.choice(SYSTEMS[language]) if rng.random() < SYSTEM_SHARE else None


def _user_key(turns) -> tuple[str, ...]:
  return tuple(user for user, _ in turns)


def _arithmetic(seed: int) -> tuple[list[dict], list[dict]]:
  rng = random.Random(f"batgpt-instructions:{seed}:arithmetic")
  pairs = [(a, b) for a in range(10) for b in range(a + 1, 10)]
  # One order of each held-out pair; the other order stays in train.
  held_out = {pair if rng.random() < 0.5 else pair[::-1]
              for pair in rng.sample(pairs, ARITHMETIC_HELD_OUT_SUMS)}
  train, test = [], []
  for a in range(10):
    for b in range(10):
      for language, question, answer in arithmetic_wordings(a, b):
        turns = [(question, answer)]
        if (a, b) in held_out:
          test.append(_record("arithmetic", language, turns))
          continue
        for repeat in range(ARITHMETIC_REPEATS):
          system = rng.choice(SYSTEMS[language]) if repeat < 2 else None
          train.append(_record("arithmetic", language, turns, system))
  return train, test


def _drawn(seed: int, family: str) -> tuple[list[dict], list[dict]]:
  rng = random.Random(f"batgpt-instructions:{seed}:{family}")
  seen, splits = set(), []
  for size, is_train in ((HELD_OUT_PER_FAMILY, False), (TRAIN_PER_FAMILY[family], True)):
    share = TRAIN_CHINESE_SHARE.get(family, CHINESE_SHARE) if is_train else CHINESE_SHARE
    records = []
    while len(records) < size:
      if family == "recall":
        language, turns = recall(rng, share, ask_first=not is_train or rng.random() < 0.75)
      else:
        language, turns = _DRAW[family](rng, share)
      if _user_key(turns) in seen:
        continue
      seen.add(_user_key(turns))
      # No system prompt on recall: three turns and a Chinese system prompt would not fit in
      # 128 tokens, and dropping the oldest turn would drop the fact that is asked for.
      system = _maybe_system(rng, language) if is_train and family != "recall" else None
      records.append(_record(family, language, turns, system))
    splits.append(records)
  test, train = splits
  return train, test


def generate_splits(seed: int) -> tuple[list[dict], list[dict]]:
  """(train, held_out) records. train is shuffled (families interleaved, so that any stretch of
  the file, and any data shard, mixes them); held_out is grouped by family."""
  train, held_out = [], []
  for family in FAMILIES:
    family_train, family_test = _arithmetic(seed) if family == "arithmetic" else _drawn(seed,
                                                                                        family)
    train += family_train
    held_out += family_test
  random.Random(f"batgpt-instructions:{seed}:order").shuffle(train)
  return train, held_out


def write_jsonl_gz(path, records) -> None:
  """One JSON object a line, gzip'd with mtime 0 and no file name (byte-reproducible)."""
  data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9,
                                            mtime=0) as gz:
    gz.write(data)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out-dir", required=True, help="where train.jsonl.gz and "
                      "heldout.jsonl.gz are written")
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
  args = parser.parse_args(argv)
  train, held_out = generate_splits(args.seed)
  out = pathlib.Path(args.out_dir)
  write_jsonl_gz(out / "train.jsonl.gz", train)
  write_jsonl_gz(out / "heldout.jsonl.gz", held_out)
  print(f"wrote {len(train)} train and {len(held_out)} held-out conversations to {out}")


if __name__ == "__main__":
  main()
