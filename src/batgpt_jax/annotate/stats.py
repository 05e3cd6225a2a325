"""Quality statistics: agreement, left-side bias, gold accuracy, human vs AI, Bradley-Terry.

Labels are canonical, independent of what was shown where: 'a' (the comparison's lower-id
response won), 'b', 'tie' or 'both_bad'. Skips are not labels.
"""

import collections
import itertools
import math

import sqlalchemy as sa
from sqlalchemy import orm

from batgpt_jax.annotate import models


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
  """Cohen's kappa of two labellers over the same items; None when chance agreement is 1."""
  if len(first) != len(second) or not first:
    raise ValueError(f"cohen_kappa: expected two equally long non-empty label lists, got "
                     f"{len(first)} and {len(second)}.")
  n = len(first)
  observed = sum(x == y for x, y in zip(first, second)) / n
  count_1, count_2 = collections.Counter(first), collections.Counter(second)
  chance = sum(count_1[c] * count_2[c] for c in count_1) / n**2
  return None if chance == 1 else (observed - chance) / (1 - chance)


def krippendorff_alpha(units: list[list[str]]) -> float | None:
  """Krippendorff's alpha for nominal labels; each unit is the labels one item received.

  alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k, with the coincidence matrix
  o_ck = sum over units of (ordered c-k pairs in the unit) / (m_u - 1). Units with fewer than
  two labels carry no information and are left out. None when every label is the same.
  """
  coincidence = collections.Counter()
  for labels in units:
    if len(labels) < 2:
      continue
    for i, j in itertools.permutations(range(len(labels)), 2):
      coincidence[labels[i], labels[j]] += 1 / (len(labels) - 1)
  totals = collections.Counter()
  for (c, _), value in coincidence.items():
    totals[c] += value
  n = sum(totals.values())
  disagree = sum(v for (c, k), v in coincidence.items() if c != k)
  expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
  return None if expected == 0 else 1 - (n - 1) * disagree / expected


def bradley_terry(outcomes: list[tuple[str, str, float]], iterations: int = 10_000,
                  tolerance: float = 1e-12) -> dict[str, float]:
  """Maximum-likelihood Bradley-Terry strengths (summing to 1) from (winner, loser, count).

  Hunter's MM update p_i <- W_i / sum_j n_ij / (p_i + p_j). A tie is entered by the caller as
  half a win each way. A model that never wins has strength 0 (its MLE is at the boundary).
  """
  wins, games = collections.Counter(), collections.Counter()
  players = set()
  for winner, loser, count in outcomes:
    wins[winner] += count
    games[frozenset((winner, loser))] += count
    players.update((winner, loser))
  strength = {p: 1 / len(players) for p in players}
  for _ in range(iterations):
    new = {}
    for i in players:
      denominator = sum(n / (strength[i] + strength[j])
                        for pair, n in games.items() if i in pair
                        for j in pair - {i} if strength[i] + strength[j] > 0)
      new[i] = wins[i] / denominator if denominator else 0.0
    total = sum(new.values())
    new = {p: v / total for p, v in new.items()}
    change = max(abs(new[p] - strength[p]) for p in players)
    strength = new
    if change < tolerance:
      break
  return strength


def label(judgment, comparison) -> str | None:
  if judgment.outcome == "preferred":
    return "a" if judgment.preferred_response_id == comparison.response_a_id else "b"
  return None if judgment.outcome == "skipped" else judgment.outcome


def _majority(labels: list[str]) -> str | None:
  counts = collections.Counter(labels).most_common()
  if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
    return None  # no majority: the item does not count for human-AI agreement
  return counts[0][0]


def project_stats(session: orm.Session, project: models.Project) -> dict:
  """Every quality figure of one project, as plain data (the admin page and `stats` print it)."""
  rows = session.execute(
      sa.select(models.Judgment, models.Comparison, models.User.username)
      .join(models.Comparison, models.Judgment.comparison_id == models.Comparison.id)
      .join(models.User, models.Judgment.user_id == models.User.id)
      .where(models.Comparison.project_id == project.id)
      .order_by(models.Judgment.id)).all()
  labels = collections.defaultdict(dict)  # comparison id -> username -> label (non-gold)
  left = collections.defaultdict(lambda: [0, 0])  # username -> [left picked, preferred total]
  gold = collections.defaultdict(lambda: [0, 0])  # username -> [correct, gold answered]
  models_of = dict(session.execute(
      sa.select(models.Response.id, models.Response.model_name).join(models.Prompt)
      .where(models.Prompt.project_id == project.id)).all())
  bt_games = []
  for judgment, comparison, username in rows:
    value = label(judgment, comparison)
    if value is None:
      continue
    if judgment.outcome == "preferred":
      left[username][0] += judgment.preferred_response_id == judgment.left_response_id
      left[username][1] += 1
    if comparison.gold_label is not None:
      gold[username][0] += value == comparison.gold_label
      gold[username][1] += 1
      continue
    labels[comparison.id][username] = value
    model_a, model_b = models_of[comparison.response_a_id], models_of[comparison.response_b_id]
    if value in ("a", "b") and model_a != model_b:
      winner, loser = (model_a, model_b) if value == "a" else (model_b, model_a)
      bt_games.append((winner, loser, 1.0))
    elif value == "tie" and model_a != model_b:
      bt_games += [(model_a, model_b, 0.5), (model_b, model_a, 0.5)]
  users = sorted({u for by_user in labels.values() for u in by_user})
  kappas = []
  for u, v in itertools.combinations(users, 2):
    shared = [c for c in sorted(labels) if u in labels[c] and v in labels[c]]
    if shared:
      kappas.append({"labellers": [u, v], "shared_items": len(shared),
                     "kappa": cohen_kappa([labels[c][u] for c in shared],
                                          [labels[c][v] for c in shared])})
  ai = collections.defaultdict(lambda: [0, 0])  # AI labeller -> [agree, compared]
  for judgment, comparison in session.execute(
      sa.select(models.AIJudgment, models.Comparison)
      .join(models.Comparison, models.AIJudgment.comparison_id == models.Comparison.id)
      .where(models.Comparison.project_id == project.id)):
    human = _majority(list(labels.get(comparison.id, {}).values()))
    if human is not None:
      ai[judgment.labeller][0] += label(judgment, comparison) == human
      ai[judgment.labeller][1] += 1
  strengths = bradley_terry(bt_games) if bt_games else {}
  return {
      "project": project.name,
      "judgments": len(rows),
      "kappa_pairs": kappas,
      "krippendorff_alpha": krippendorff_alpha([list(by_user.values())
                                                for _, by_user in sorted(labels.items())]),
      "left_bias": {u: {"left_rate": l / n, "preferred": n} for u, (l, n) in sorted(left.items())},
      "gold_accuracy": {u: {"accuracy": c / n, "answered": n}
                        for u, (c, n) in sorted(gold.items())},
      "human_ai_agreement": {a: {"agreement": k / n, "compared": n}
                             for a, (k, n) in sorted(ai.items()) if n},
      "bradley_terry": [{"model": m, "strength": s,
                         "elo": 1000 + 400 * math.log10(s * len(strengths)) if s > 0 else None}
                        for m, s in sorted(strengths.items(), key=lambda kv: (-kv[1], kv[0]))],
  }
