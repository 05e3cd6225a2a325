"""Import of prompts with candidate answers; export of judgments as preference JSONL.

Import, one JSON object per line:
  {"id": "optional stable id", "prompt": "..."  (or "messages": [{role, content}, ...]),
   "responses": [{"text": "...", "model": "ckpt-a", "author": "optional username"}, ...],
   "gold": 0 | 1 | "tie"            (optional, two responses only: the expected answer),
   "ai_labels": [{"labeller": "judge", "chosen": 0, "rejected": 1, "strength": 2},
                 {"labeller": "judge2", "tie": true}]}        (optional, two responses only)
Every pair of responses becomes a comparison. A record whose id is already in the project is
left alone, so importing the same file twice adds nothing.

Export: one record per answered comparison in the schema of `batgpt_jax.data.preference_schema`
(votes merged: p_chosen is the share of votes, ties counting half), or `--style hh` for
HH-RLHF's `chosen`/`rejected` transcripts. Records are ordered by comparison id and carry no
timestamps, so the same database always exports the same bytes.
"""

import collections
import hashlib
import importlib.util
import itertools
import json
import pathlib
import sys

import sqlalchemy as sa
from sqlalchemy import orm

from batgpt_jax.annotate import accounts, models, stats


_SCHEMA_ALIAS = "_batgpt_preference_schema"


def preference_schema():
  """The schema module, without running `batgpt_jax.data/__init__` (which imports TensorFlow)."""
  for name in ("batgpt_jax.data.preference_schema", _SCHEMA_ALIAS):
    if name in sys.modules:
      return sys.modules[name]
  path = pathlib.Path(__file__).resolve().parents[1] / "data" / "preference_schema.py"
  spec = importlib.util.spec_from_file_location(_SCHEMA_ALIAS, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  sys.modules[_SCHEMA_ALIAS] = module
  return module


def _fail(line: int, message: str) -> None:
  raise ValueError(f"import line {line}: {message}")


def _response_index(line: int, value, count: int) -> int:
  if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < count:
    _fail(line, f"expected a response index in 0..{count - 1}, found {value!r}.")
  return value


def _check(line: int, record) -> None:
  if not isinstance(record, dict):
    _fail(line, f"expected a JSON object, found {type(record).__name__}.")
  if ("prompt" in record) == ("messages" in record):
    _fail(line, "give either 'prompt' or 'messages' (the dialogue), not both or neither.")
  if "messages" in record:
    preference_schema().validate_record({"messages": record["messages"], "chosen": "",
                                         "rejected": ""})
  elif not isinstance(record["prompt"], str) or not record["prompt"].strip():
    _fail(line, "'prompt' should be non-empty text.")
  responses = record.get("responses")
  if not isinstance(responses, list) or len(responses) < 2:
    _fail(line, "'responses' should list two or more {\"text\": ..., \"model\": ...} objects.")
  for i, response in enumerate(responses):
    if not (isinstance(response, dict) and isinstance(response.get("text"), str)
            and isinstance(response.get("model"), str) and response["model"]):
      _fail(line, f"responses[{i}] should be {{\"text\": str, \"model\": str}}, found "
                  f"{response!r}.")
  if ("gold" in record or record.get("ai_labels")) and len(responses) != 2:
    _fail(line, "'gold' and 'ai_labels' need exactly two responses (one comparison).")


def _external_id(record: dict) -> str:
  if "id" in record:
    return str(record["id"])[:128]
  canonical = json.dumps({k: record.get(k) for k in ("prompt", "messages", "responses")},
                         sort_keys=True, ensure_ascii=False)
  return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def get_or_create_project(session: orm.Session, name: str, **settings) -> models.Project:
  project = session.scalar(sa.select(models.Project).where(models.Project.name == name))
  if project is None:
    project = models.Project(name=name, **{k: v for k, v in settings.items() if v is not None})
    session.add(project)
    session.flush()
  else:
    for key, value in settings.items():
      if value is not None:
        setattr(project, key, value)
  return project


def _outcome(line: int, label: dict, ids: list[int]):
  """(outcome, preferred response id, strength) of an AI label given by response index."""
  if label.get("tie"):
    return "tie", None, None
  if label.get("both_bad"):
    return "both_bad", None, None
  chosen = _response_index(line, label.get("chosen"), 2)
  rejected = _response_index(line, label.get("rejected"), 2)
  if chosen == rejected:
    _fail(line, "an AI label's 'chosen' and 'rejected' must differ.")
  strength = label.get("strength", 2)
  if strength not in (1, 2, 3):
    _fail(line, f"an AI label's 'strength' should be 1, 2 or 3, found {strength!r}.")
  return "preferred", ids[chosen], strength


def import_records(session: orm.Session, project: models.Project, lines) -> dict:
  """Adds prompts, responses, comparisons and AI labels. Returns counts of what was added."""
  added = collections.Counter()
  users = dict(session.execute(sa.select(models.User.username, models.User.id)).all())
  for number, text in enumerate(lines, 1):
    if not text.strip():
      continue
    try:
      record = json.loads(text)
    except json.JSONDecodeError as err:
      _fail(number, f"not JSON ({err}).")
    _check(number, record)
    external_id = _external_id(record)
    if session.scalar(sa.select(models.Prompt.id).where(models.Prompt.project_id == project.id,
                                                        models.Prompt.external_id == external_id)):
      added["skipped_existing"] += 1
      continue
    prompt = models.Prompt(project_id=project.id, external_id=external_id,
                           text=record.get("prompt"), messages=record.get("messages"))
    session.add(prompt)
    session.flush()
    responses = []
    for response in record["responses"]:
      author = response.get("author")
      if author is not None and author not in users:
        _fail(number, f"author {author!r} is not a user. Add it with `batgpt annotate add-user`.")
      responses.append(models.Response(prompt_id=prompt.id, model_name=response["model"][:128],
                                       text=response["text"], author_id=users.get(author)))
    session.add_all(responses)
    session.flush()
    ids = [r.id for r in responses]
    gold = record.get("gold")
    gold_label = None
    if gold is not None:
      gold_label = "tie" if gold == "tie" else ("a" if ids[_response_index(number, gold, 2)]
                                                 == min(ids) else "b")
    comparisons = []
    for first, second in itertools.combinations(sorted(ids), 2):
      comparisons.append(models.Comparison(project_id=project.id, prompt_id=prompt.id,
                                           response_a_id=first, response_b_id=second,
                                           gold_label=gold_label))
    session.add_all(comparisons)
    session.flush()
    for label in record.get("ai_labels", []):
      outcome, preferred, strength = _outcome(number, label, ids)
      session.add(models.AIJudgment(comparison_id=comparisons[0].id,
                                    labeller=str(label.get("labeller", "ai"))[:128],
                                    outcome=outcome, preferred_response_id=preferred,
                                    strength=strength))
      added["ai_labels"] += 1
    added["prompts"] += 1
    added["responses"] += len(responses)
    added["comparisons"] += len(comparisons)
  accounts.audit(session, "import", username="cli", project=project.name, **added)
  return dict(added)


def _context(prompt: models.Prompt) -> dict:
  return {"prompt": prompt.text} if prompt.messages is None else {"messages": prompt.messages}


def _human_record(comparison, judgments, ratings, texts, prompt) -> dict | None:
  votes = [(stats.label(j, comparison), j) for j in judgments]
  counted = [(v, j) for v, j in votes if v in ("a", "b", "tie")]
  if not counted:
    return None
  p_a = sum(1.0 if v == "a" else 0.5 if v == "tie" else 0.0 for v, _ in counted) / len(counted)
  tie = p_a == 0.5
  chosen_is_a = p_a >= 0.5
  chosen = comparison.response_a_id if chosen_is_a else comparison.response_b_id
  rejected = comparison.response_b_id if chosen_is_a else comparison.response_a_id
  signed = [0 if v == "tie" else (j.strength if j.preferred_response_id == chosen
                                  else -j.strength) for v, j in counted]
  flags = set()
  if any(v == "both_bad" for v, _ in votes):
    flags.add("both_bad")
  for judgment in judgments:
    flags.update(f"prompt:{f}" for f in judgment.prompt_flags)
  for side, response_id in (("chosen", chosen), ("rejected", rejected)):
    rated = [r for r in ratings if r.response_id == response_id]
    for rating in rated:
      flags.update(f"{side}_harm:{h}" for h in rating.harm_flags)
    if rated and sum(not r.acceptable for r in rated) * 2 > len(rated):
      flags.add(f"{side}_unacceptable")
  return {**_context(prompt), "chosen": texts[chosen], "rejected": texts[rejected],
          "tie": tie, "p_chosen": round(max(p_a, 1 - p_a), 6),
          # A tie names no better side, so it has no margin either.
          "margin": 0.0 if tie else round(max(0.0, sum(signed) / len(signed)), 6),
          "source": "human",
          "weight": float(len(counted)), "flags": sorted(flags)}


def _ai_record(comparison, judgment, texts, prompt) -> dict | None:
  if judgment.outcome == "both_bad":
    return None
  if judgment.outcome == "tie":
    chosen, rejected = comparison.response_a_id, comparison.response_b_id
  else:
    chosen = judgment.preferred_response_id
    rejected = comparison.response_b_id if chosen == comparison.response_a_id \
        else comparison.response_a_id
  tie = judgment.outcome == "tie"
  return {**_context(prompt), "chosen": texts[chosen], "rejected": texts[rejected], "tie": tie,
          "p_chosen": 0.5 if tie else 1.0, "margin": 0.0 if tie else float(judgment.strength),
          "source": "ai", "weight": 1.0, "flags": [f"labeller:{judgment.labeller}"]}


def export_records(session: orm.Session, project: models.Project, include_ai: bool = False,
                   include_gold: bool = False) -> list[dict]:
  comparisons = session.scalars(sa.select(models.Comparison)
                                .where(models.Comparison.project_id == project.id)
                                .order_by(models.Comparison.id)).all()
  judgments = collections.defaultdict(list)
  for judgment in session.scalars(sa.select(models.Judgment).join(models.Comparison)
                                  .where(models.Comparison.project_id == project.id)
                                  .order_by(models.Judgment.id)):
    judgments[judgment.comparison_id].append(judgment)
  ratings = collections.defaultdict(list)
  for rating, comparison_id in session.execute(
      sa.select(models.AnswerRating, models.Judgment.comparison_id).join(models.Judgment)
      .join(models.Comparison).where(models.Comparison.project_id == project.id)
      .order_by(models.AnswerRating.id)):
    ratings[comparison_id].append(rating)
  ai = collections.defaultdict(list)
  if include_ai:
    for judgment in session.scalars(sa.select(models.AIJudgment).join(models.Comparison)
                                    .where(models.Comparison.project_id == project.id)
                                    .order_by(models.AIJudgment.labeller, models.AIJudgment.id)):
      ai[judgment.comparison_id].append(judgment)
  texts = dict(session.execute(
      sa.select(models.Response.id, models.Response.text).join(models.Prompt)
      .where(models.Prompt.project_id == project.id)).all())
  prompts = {p.id: p for p in session.scalars(sa.select(models.Prompt)
                                              .where(models.Prompt.project_id == project.id))}
  records = []
  for comparison in comparisons:
    if comparison.gold_label is not None and not include_gold:
      continue
    prompt = prompts[comparison.prompt_id]
    human = _human_record(comparison, judgments[comparison.id], ratings[comparison.id], texts,
                          prompt)
    if human is not None:
      records.append(human)
    for judgment in ai[comparison.id]:
      record = _ai_record(comparison, judgment, texts, prompt)
      if record is not None:
        records.append(record)
  return records


def _transcript(context: dict, answer: str) -> str:
  turns = context.get("messages") or [{"role": "user", "content": context["prompt"]}]
  speaker = {"user": "Human", "assistant": "Assistant", "system": "System"}
  text = "".join(f"\n\n{speaker[t['role']]}: {t['content']}" for t in turns)
  return f"{text}\n\nAssistant: {answer}"


def write_export(path, records: list[dict], style: str = "preference") -> int:
  """Writes the records (validated against the schema) or their HH-RLHF form. Returns the count."""
  schema = preference_schema()
  if style == "preference":
    return schema.write_jsonl(path, records)
  if style != "hh":
    raise ValueError(f"export style: expected 'preference' or 'hh', got {style!r}.")
  hh = [{"chosen": _transcript(r, r["chosen"]), "rejected": _transcript(r, r["rejected"])}
        for r in map(schema.validate_record, records) if not r.get("tie")]
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8", newline="\n") as f:
    for record in hh:
      f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
  tmp.replace(path)
  return len(hh)
