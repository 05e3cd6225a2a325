"""Procedurally generates the embedded default corpus: short English (and some Chinese) documents.

Each document is one paragraph built from the hand-written lexicon in `lexicon.py`, with facts that
stay consistent inside it (a character keeps their name, pronoun, trade and town; sums add up; the
warmest day really is the warmest), so a tiny model has patterns to learn at several levels.

    python -m batgpt_jax.data.corpus.generate --out PATH --documents N --seed S

Pure standard library; the output depends only on (N, seed), and `.gz` output is byte-reproducible.
"""

import argparse
import gzip
import pathlib
import random

from batgpt_jax.data.corpus import lexicon as lx

# The shipped default_corpus.txt.gz is generate_documents(DEFAULT_DOCUMENTS, DEFAULT_SEED).
DEFAULT_DOCUMENTS = 6500
DEFAULT_SEED = 20240611

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
_SIZE_RANK = {"tiny": 0, "small": 1, "medium": 2, "large": 3, "tall": 3}


def words(n: int) -> str:
  """0..999 as English words: 42 -> 'forty-two'."""
  if n < 20:
    return _ONES[n]
  if n < 100:
    return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
  rest = n % 100
  return _ONES[n // 100] + " hundred" + (" and " + words(rest) if rest else "")


def cap(text: str) -> str:
  return text[0].upper() + text[1:]


def plural(noun: str) -> str:
  if noun.endswith("y") and noun[-2] not in "aeiou":
    return noun[:-1] + "ies"
  return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def join_list(items) -> str:
  """['a', 'b', 'c'] -> 'a, b and c'."""
  items = list(items)
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def an(word: str) -> str:
  return ("an " if word[0] in "aeiou" else "a ") + word


def count_of(n: int, singular: str, plural_form: str) -> str:
  return f"{words(n)} {singular if n == 1 else plural_form}"


def town(rng) -> str:
  return rng.choice(lx.TOWN_HEADS) + rng.choice(lx.TOWN_TAILS)


class Person:
  """A named character whose pronouns and facts stay fixed for the whole document."""

  def __init__(self, rng, avoid=()):
    while True:
      self.sex = rng.choice("fm")
      self.name = rng.choice(lx.FEMALE_NAMES if self.sex == "f" else lx.MALE_NAMES)
      if self.name not in avoid:
        break
    self.he, self.him, self.his = lx.PRONOUNS[self.sex]
    self.trade, self.workplace, self.does, self.makes, self.tool = rng.choice(lx.TRADES)


# --- English document kinds; each takes an rng and returns a list of sentences ---


def story(rng):
  p, home = Person(rng), town(rng)
  pet, pet_act = rng.choice(lx.PETS)
  pet_name = rng.choice(lx.PET_NAMES)
  s = [f"{p.name} is a {p.trade} who lives in {home}.",
       f"Every day {p.he} {p.does} at the {p.workplace}."]
  if rng.random() < 0.6:
    s.append(f"{cap(p.he)} has {an(rng.choice(lx.COLOURS))} {pet} called {pet_name}.")
  else:
    pet = None
  day = rng.randrange(7)
  weather, adj, did = rng.choice(lx.WEATHER)
  s.append(f"On {lx.DAYS[day]} the weather was {weather}, and the people of {home} {did}.")
  # One or two of three small episodes, in random order.
  for event in rng.sample(range(3), rng.randint(1, 2)):
    if event == 0:
      made = rng.randint(4, 30)
      sold = rng.randint(1, made - 1)
      s += [f"By noon {p.name} had made {words(made)} {p.makes}.",
            f"{cap(p.he)} sold {words(sold)} of them, so {words(made - sold)} were left."]
    elif event == 1:
      place, why = rng.choice(lx.ERRANDS)
      q = Person(rng, avoid=(p.name,))
      good, goods, _ = rng.choice(lx.GOODS)
      k = rng.randint(1, 6)
      s += [f"{cap(rng.choice(lx.TIMES))}, {p.name} went to {place} {why}.",
            f"There {p.he} met {q.name}, the {q.trade}, who {q.does}.",
            f"{q.name} gave {p.him} {count_of(k, good, goods)} and asked about {p.his} work.",
            f"{p.name} thanked {q.him} and walked home through the {adj} streets."]
    else:
      spot = rng.choice(("under the table", "behind the door", "in a basket", "by the well",
                         "beneath a pile of sacks", "on the windowsill"))
      s += [f"One morning {p.his} {p.tool} was missing, and {p.he} could not work without it.",
            f"{cap(p.he)} looked everywhere, and at last {p.he} found it {spot}."]
      if pet:
        s.append(f"{pet_name} the {pet} had carried it there, and the {pet} {pet_act}.")
  if pet and rng.random() < 0.5:
    s.append(f"In the evening {pet_name} sat beside {p.him} while {p.he} ate supper.")
  tomorrow = lx.DAYS[(day + 1) % 7]
  s.append(f"{p.name} felt {rng.choice(lx.FEELINGS)}, because the next day was {tomorrow}.")
  return s


def animal(rng):
  a = rng.choice(lx.ANIMALS)
  sing, plur, size, coat, home, food, act_s, act_p = a
  art = an(sing).split()[0]
  s = [f"{cap(art)} {sing} is a {size} animal with {coat}.",
       f"{cap(plur)} live in {home} and eat {food}.",
       f"When it is frightened, {art} {sing} {act_s}.",
       f"{cap(plur)} are easiest to see {rng.choice(lx.TIMES)}."]
  other = rng.choice(lx.ANIMALS)
  if _SIZE_RANK[other[2]] != _SIZE_RANK[size]:
    word = "bigger" if _SIZE_RANK[size] > _SIZE_RANK[other[2]] else "smaller"
    s.append(f"{cap(an(sing))} is {word} than {an(other[0])}, and {other[1]} eat {other[5]}.")
  n = rng.randint(1, 12)
  where = town(rng)
  s.append(f"Near {where} there {'is' if n == 1 else 'are'} {count_of(n, sing, plur)}.")
  s.append(f"At night the {sing if n == 1 else plur} {act_s if n == 1 else act_p} softly.")
  if rng.random() < 0.5:
    s.append("One " + sing + ", " + ", ".join(f"{words(i)} {plur}" for i in range(2, 5)) + ".")
  if rng.random() < 0.6:
    p = Person(rng)
    s.append(f"{p.name} the {p.trade} once saw {art} {sing} near {p.his} {p.workplace}, and "
             f"{p.he} stood very still so as not to scare it.")
  return s


def place(rng):
  name, river = town(rng), rng.choice(lx.RIVERS)
  kinds = rng.sample(lx.BUILDINGS, rng.randint(2, 4))
  counts = [rng.randint(1, 6) for _ in kinds]
  s = [f"{name} is a {rng.choice(('small', 'busy', 'quiet', 'old'))} town on the river {river}.",
       f"It has {join_list(count_of(c, k, plural(k)) for c, k in zip(counts, kinds))}.",
       f"That makes {words(sum(counts))} buildings of those kinds in all."]
  colour = rng.choice(lx.COLOURS)
  s.append(f"Most doors on the main street are painted {colour}.")
  for _ in range(rng.randint(1, 3)):
    p = Person(rng)
    s.append(f"The {p.trade} of {name} is called {p.name}; {p.he} {p.does}.")
  season = rng.choice(lx.SEASONS)
  s.append(f"In {season[0]} {rng.choice(season[2])} in {name}.")
  if rng.random() < 0.5:
    s.append(f"From the bridge you can see the {rng.choice(('hills', 'woods', 'fields'))} "
             f"and the slow water of the {river}.")
  return s


def weather_week(rng):
  where, month = town(rng), rng.randrange(12)
  start, n = rng.randrange(7), rng.randint(3, 7)
  cold = month in (11, 0, 1)
  s = [f"This is the weather in {where} for {words(n)} days in {lx.MONTHS[month]}."]
  temps = []
  for i in range(n):
    w, _, did = rng.choice([x for x in lx.WEATHER if cold or x[0] not in ("snowy", "frosty")])
    t = rng.randint(-5, 6) if w in ("snowy", "frosty") else rng.randint(2 if cold else 10, 28)
    temps.append(t)
    deg = f"minus {words(-t)}" if t < 0 else words(t)
    s.append(f"On {lx.DAYS[(start + i) % 7]} it was {w} and {deg} degrees, so people {did}.")
  hi, lo = temps.index(max(temps)), temps.index(min(temps))
  if hi != lo:
    s.append(f"The warmest day was {lx.DAYS[(start + hi) % 7]} and the coldest was "
             f"{lx.DAYS[(start + lo) % 7]}.")
  return s


def arithmetic(rng):
  s = []
  for _ in range(rng.randint(6, 12)):
    op = rng.randrange(4)
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    if op == 0:
      text, sym, c = "plus", "+", a + b
    elif op == 1:
      a, b = max(a, b), min(a, b)
      text, sym, c = "minus", "-", a - b
    elif op == 2:
      a, b = a % 13, b % 13
      text, sym, c = "times", "x", a * b
    else:
      s.append(f"Half of {words(2 * a)} is {words(a)}, and 2 x {a} = {2 * a}.")
      continue
    form = rng.randrange(3)
    if form == 0:
      s.append(f"{cap(words(a))} {text} {words(b)} is {words(c)}.")
    elif form == 1:
      s.append(f"{a} {sym} {b} = {c}, which we read as {words(a)} {text} {words(b)} equals "
               f"{words(c)}.")
    else:
      s.append(f"What is {words(a)} {text} {words(b)}? The answer is {c}.")
  if rng.random() < 0.5:
    p = Person(rng)
    good, goods, _ = rng.choice(lx.GOODS)
    have = rng.randint(2, 15)
    eat = rng.randint(1, have - 1)
    s.append(f"{p.name} had {count_of(have, good, goods)} and gave away {words(eat)}, so "
             f"{p.he} had {words(have - eat)} left.")
  return s


def counting(rng):
  step, start, n = rng.randint(1, 10), rng.randint(0, 30), rng.randint(5, 12)
  seq = [start + step * i for i in range(n)]
  by = plural(_ONES[step])
  s = [f"Let us count by {by}, starting at {words(start)}.",
       cap(", ".join(words(x) for x in seq)) + ".",
       "In digits that is " + ", ".join(str(x) for x in seq) + ".",
       f"The number after {words(seq[-1])} in this count would be {words(seq[-1] + step)}."]
  if rng.random() < 0.6:
    top = rng.randint(5, 20)
    s.append(f"Counting down from {words(top)}: " +
             ", ".join(words(x) for x in range(top, max(top - 8, 0) - 1, -1)) + ".")
  if rng.random() < 0.6:
    racers = rng.sample(lx.FEMALE_NAMES + lx.MALE_NAMES, rng.randint(3, 6))
    s.append(f"In the race at {town(rng)}, " +
             join_list(f"{r} came {_ORDINALS[i]}" for i, r in enumerate(racers)) + ".")
    s.append(f"So {racers[-1]} was last and {racers[0]} won the ribbon.")
  return s


def market(rng):
  p, where = Person(rng), town(rng)
  items = rng.sample(lx.GOODS, rng.randint(2, 5))
  qty = [rng.randint(1, 5) for _ in items]
  total = sum(q * price for q, (_, _, price) in zip(qty, items))
  money = total + rng.randint(0, 20)
  s = [f"{p.name} went to the market in {where} with {words(money)} coins.",
       f"{cap(p.his)} list said: {join_list(g[1] for g in items)}."]
  for q, (good, goods, price) in zip(qty, items):
    cost = q * price
    s.append(f"{cap(p.he)} bought {count_of(q, good, goods)} for {words(cost)} "
             f"{'coin' if cost == 1 else 'coins'}.")
  seller = Person(rng, avoid=(p.name,))
  s.append(f"The seller, {seller.name}, counted the coins twice and put them in {seller.his} box.")
  s.append(f"Altogether {p.he} spent {words(total)} coins, so {p.he} had {words(money - total)} "
           f"left.")
  if rng.random() < 0.5:
    s.append(f"On the way home {p.name} met a {Person(rng).trade} and talked about the "
             f"{rng.choice(lx.WEATHER)[0]} weather.")
  return s


def dialogue(rng):
  a = Person(rng)
  b = Person(rng, avoid=(a.name,))
  where, why = rng.choice(lx.ERRANDS)
  good, goods, _ = rng.choice(lx.GOODS)
  k = rng.randint(2, 9)
  s = [f'"Good {rng.choice(("morning", "afternoon", "evening"))}, {b.name}," said {a.name}. '
       f'"Where are you going?"',
       f'"I am going to {where} {why}," {b.name} replied.',
       f'"May I come with you?" asked {a.name}.',
       f'"Of course," said {b.name}, and {b.he} smiled.']
  if rng.random() < 0.7:
    s += [f'"How many {goods} do we need?" {a.name} asked.',
          f'"{cap(words(k))}," said {b.name}. "One for each of us and the rest for the '
          f'{b.workplace}."']
  s.append(f"So the two friends walked to {where} together.")
  if rng.random() < 0.6:
    s.append(f"On the way {a.name} told {b.him} about {a.his} work as a {a.trade}, and {b.name} "
             f"said that a {b.trade} starts work {rng.choice(lx.TIMES)}.")
  s.append(f'"Thank you for coming," said {b.name} when they got there.')
  return s


def calendar(rng):
  m, d = rng.randrange(12), rng.randrange(7)
  k = rng.randint(2, 6)
  s = [f"{lx.MONTHS[m]} comes after {lx.MONTHS[m - 1]} and before {lx.MONTHS[(m + 1) % 12]}.",
       f"If today is {lx.DAYS[d]}, tomorrow is {lx.DAYS[(d + 1) % 7]} and yesterday was "
       f"{lx.DAYS[d - 1]}.",
       f"{cap(words(k))} days after {lx.DAYS[d]} comes {lx.DAYS[(d + k) % 7]}."]
  season = next(x for x in lx.SEASONS if m in x[1])
  s.append(f"{lx.MONTHS[m]} is in {season[0]}, when {rng.choice(season[2])}.")
  j = rng.randint(2, 9)
  s.append(f"{cap(words(j))} months after {lx.MONTHS[m]} comes {lx.MONTHS[(m + j) % 12]}.")
  if rng.random() < 0.5:
    s.append("There are seven days in a week and twelve months in a year.")
  if rng.random() < 0.5:
    w = rng.randint(2, 5)
    s.append(f"{cap(words(w))} weeks have {words(7 * w)} days, and the day of the week is the same "
             f"at the end as at the start.")
  p = Person(rng)
  bm = rng.randrange(12)
  bs = next(x for x in lx.SEASONS if bm in x[1])
  s.append(f"{p.name}'s birthday is in {lx.MONTHS[bm]}, so {p.he} always has {an(bs[0])} birthday.")
  if rng.random() < 0.5:
    s.append(f"The months of {bs[0]} are " + join_list(lx.MONTHS[i] for i in bs[1]) + ".")
  return s


# --- Chinese ---


def zh_number(n: int, counting_things: bool = False) -> str:
  """0..99 in Chinese numerals; 2 of something is 两, not 二."""
  if counting_things and n == 2:
    return "两"
  if n < 10:
    return lx.ZH_DIGITS[n]
  tens, ones = divmod(n, 10)
  return ("" if tens == 1 else lx.ZH_DIGITS[tens]) + "十" + (lx.ZH_DIGITS[ones] if ones else "")


def chinese(rng):
  # One person, one season and one day per document, so the facts agree with each other.
  name, day = rng.choice(lx.ZH_NAMES), rng.randrange(7)
  season, event, weathers = rng.choice(lx.ZH_SEASONS)
  s = [f"现在是{season}，{event}。", f"今天是{lx.ZH_DAYS[day]}，{rng.choice(weathers)}。"]
  said, hour = set(), 0  # clothes, shopping and each animal at most once; times of day in order
  for _ in range(rng.randint(6, 13)):
    kind = rng.randrange(6)
    if kind in said:
      kind = rng.choice((0, 2, 3))
    if kind in (4, 5):
      said.add(kind)
    if kind == 0:
      (where, act), hour = rng.choice(lx.ZH_PLACES), rng.randint(hour, len(lx.ZH_TIMES) - 1)
      s.append(f"{lx.ZH_TIMES[hour]}，{name}去{where}{act}。")
    elif kind == 1:
      (beast, unit), n = rng.choice(lx.ZH_ANIMALS), rng.randint(1, 12)
      if beast in said:
        continue
      said.add(beast)
      s.append(f"{name}家有{zh_number(n, True)}{unit}{beast}。")
    elif kind == 2:
      a, b = rng.randint(1, 40), rng.randint(1, 40)
      s.append(f"{zh_number(a)}加{zh_number(b)}等于{zh_number(a + b)}。")
    elif kind == 3:
      start = rng.randint(1, 10)
      s.append("我们来数数：" + "，".join(zh_number(x) for x in range(start, start + 6)) + "。")
    elif kind == 4:
      food, n = rng.choice(lx.ZH_FOODS), rng.randint(1, 9)
      s.append(f"{name}喜欢吃{food}，今天买了{zh_number(n, True)}个。")
    else:
      s.append(f"{name}穿了一件{rng.choice(lx.ZH_COLOURS)}色的衣服。")
  s.append(f"明天是{lx.ZH_DAYS[(day + 1) % 7]}，{name}{rng.choice(lx.ZH_FEELINGS)}。")
  return s


# (weight, kind): Chinese is about a tenth of the documents.
_KINDS = ((18, story), (10, animal), (9, place), (9, weather_week), (9, arithmetic),
          (7, counting), (10, market), (12, dialogue), (6, calendar), (10, chinese))


def generate_document(index: int, seed: int) -> str:
  """Document `index` of the corpus for `seed`; independent of how many documents are made."""
  rng = random.Random(f"batgpt-corpus:{seed}:{index}")  # str seeds hash stably (SHA-512)
  kind = rng.choices([k for _, k in _KINDS], weights=[w for w, _ in _KINDS])[0]
  sentences = kind(rng)
  return ("" if kind is chinese else " ").join(sentences)


def generate_documents(n: int, seed: int) -> list[str]:
  """The first `n` documents for `seed`; a prefix of any longer run with the same seed."""
  return [generate_document(i, seed) for i in range(n)]


def write_corpus(path, documents) -> None:
  """Writes documents separated by blank lines; gzip (mtime 0, no name) when path ends in .gz."""
  data = ("\n\n".join(documents) + "\n").encode("utf-8")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.name.endswith(".gz"):
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f,
                                              compresslevel=9, mtime=0) as gz:
      gz.write(data)
  else:
    path.write_bytes(data)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="output path; gzip-compressed if it ends .gz")
  parser.add_argument("--documents", type=int, default=DEFAULT_DOCUMENTS)
  parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
  args = parser.parse_args(argv)
  docs = generate_documents(args.documents, args.seed)
  write_corpus(args.out, docs)
  print(f"wrote {len(docs)} documents, {sum(map(len, docs))} characters to {args.out}")


if __name__ == "__main__":
  main()
