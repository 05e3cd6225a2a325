"""Leases and judgments: who gets which comparison, and storing an answer exactly once.

A comparison has room for a lease while its non-skip judgments plus its live leases (not
expired, not answered) are fewer than the project's votes. Each lease is taken after locking the
comparison's row (PostgreSQL: SELECT ... FOR UPDATE; SQLite: BEGIN IMMEDIATE holds the database
lock), and the count is re-read under that lock, so concurrent requests cannot overfill it.
"""

import dataclasses
import datetime
import random

import sqlalchemy as sa
from sqlalchemy import orm

from batgpt_jax.annotate import accounts, models
from batgpt_jax.annotate.db import utcnow

SCALE = {"A3": ("left", 3), "A2": ("left", 2), "A1": ("left", 1),
         "B1": ("right", 1), "B2": ("right", 2), "B3": ("right", 3)}
CHOICES = tuple(SCALE) + ("tie", "both_bad")
CANDIDATES = 25  # comparisons tried per request before saying there is no work


class LeaseExpired(Exception):
  """The lease ran out and the comparison has no room left; the draft is kept."""


def _votes(comparison_id) -> sa.ScalarSelect:
  return (sa.select(sa.func.count()).select_from(models.Judgment)
          .where(models.Judgment.comparison_id == comparison_id,
                 models.Judgment.outcome != "skipped").scalar_subquery())


def _live_leases(comparison_id, now) -> sa.ScalarSelect:
  return (sa.select(sa.func.count()).select_from(models.Assignment)
          .where(models.Assignment.comparison_id == comparison_id,
                 models.Assignment.done.is_(False), models.Assignment.expires_at > now)
          .scalar_subquery())


def _has_room(session: orm.Session, comparison: models.Comparison, project: models.Project,
              now: datetime.datetime) -> bool:
  if comparison.gold_label is not None:
    return True  # gold items measure labellers; everyone may answer them
  taken = session.scalar(sa.select(_votes(comparison.id) + _live_leases(comparison.id, now)))
  return taken < project.votes_required


def _lock(session: orm.Session, comparison_id: int) -> models.Comparison:
  return session.scalars(sa.select(models.Comparison).where(models.Comparison.id == comparison_id)
                         .with_for_update().execution_options(populate_existing=True)).one()


def current_lease(session: orm.Session, user: models.User, project: models.Project):
  """The labeller's unanswered lease in this project, expired or not (latest first)."""
  return session.scalars(
      sa.select(models.Assignment).join(models.Comparison)
      .where(models.Assignment.user_id == user.id, models.Assignment.done.is_(False),
             models.Comparison.project_id == project.id)
      .order_by(models.Assignment.expires_at.desc())).first()


def _candidates(session, user, project, now, gold: bool) -> list[int]:
  seen = sa.select(models.Assignment.comparison_id).where(models.Assignment.user_id == user.id)
  own = sa.select(models.Response.id).where(models.Response.author_id == user.id)
  query = (sa.select(models.Comparison.id)
           .where(models.Comparison.project_id == project.id,
                  models.Comparison.id.not_in(seen),
                  models.Comparison.response_a_id.not_in(own),
                  models.Comparison.response_b_id.not_in(own)))
  if gold:
    query = query.where(models.Comparison.gold_label.is_not(None)).order_by(models.Comparison.id)
  else:
    votes = _votes(models.Comparison.id)
    query = (query.where(models.Comparison.gold_label.is_(None),
                         votes + _live_leases(models.Comparison.id, now)
                         < project.votes_required)
             .order_by(votes.desc(), models.Comparison.id))  # finish items before starting new
  return list(session.scalars(query.limit(CANDIDATES)))


@dataclasses.dataclass
class Lease:
  assignment: models.Assignment | None  # None: no work left for this labeller
  renewed_after_expiry: bool = False  # it had run out; the draft was kept and it was taken again
  lost: models.Assignment | None = None  # an expired lease others filled meanwhile (draft kept)


def lease_next(session: orm.Session, user: models.User, project: models.Project,
               rng: random.Random = random, now: datetime.datetime | None = None) -> Lease:
  """The labeller's live lease, a renewal of their expired one, or a new one (or none)."""
  now = now or utcnow()
  held, lost = current_lease(session, user, project), None
  if held is not None:
    if held.expires_at > now:
      return Lease(held)
    comparison = _lock(session, held.comparison_id)
    if _has_room(session, comparison, project, now):
      held.expires_at = now + datetime.timedelta(seconds=project.lease_seconds)
      accounts.audit(session, "lease_renewed", user, comparison_id=comparison.id)
      return Lease(held, renewed_after_expiry=True)
    held.done = True  # others filled it meanwhile; the draft stays, the item is closed for them
    accounts.audit(session, "lease_lost", user, comparison_id=comparison.id)
    lost = held
  gold_first = project.gold_rate > 0 and rng.random() < project.gold_rate
  for gold in (gold_first, not gold_first):
    # Locks are taken in id order, so new leases never wait on each other in a cycle (a renewal
    # that locked its own item first can; PostgreSQL then aborts one, and db.run retries it).
    for comparison_id in sorted(_candidates(session, user, project, now, gold)):
      comparison = _lock(session, comparison_id)
      if not _has_room(session, comparison, project, now):
        continue
      left, right = comparison.response_a_id, comparison.response_b_id
      if rng.random() < 0.5:
        left, right = right, left
      lease = models.Assignment(comparison_id=comparison.id, user_id=user.id,
                                left_response_id=left, right_response_id=right, leased_at=now,
                                expires_at=now + datetime.timedelta(seconds=project.lease_seconds))
      session.add(lease)
      session.flush()
      accounts.audit(session, "lease", user, comparison_id=comparison.id, assignment_id=lease.id)
      return Lease(lease, lost=lost)
  return Lease(None, lost=lost)


def _answer(form: dict, side: str) -> dict:
  acceptable = form.get(f"acceptable_{side}")
  helpfulness = form.get(f"helpfulness_{side}")
  if acceptable not in ("yes", "no"):
    raise ValueError(f"Answer {'A' if side == 'left' else 'B'}: say whether it is acceptable.")
  if helpfulness not in ("1", "2", "3", "4", "5"):
    raise ValueError(f"Answer {'A' if side == 'left' else 'B'}: rate its helpfulness 1-5.")
  harms = sorted(set(form.get(f"harm_{side}", [])))
  unknown = [h for h in harms if h not in models.HARM_FLAGS]
  if unknown:
    raise ValueError(f"Unknown harm flag {unknown[0]!r}; expected one of {models.HARM_FLAGS}.")
  return {"acceptable": acceptable == "yes", "helpfulness": int(helpfulness), "harm_flags": harms}


def parse_form(form: dict) -> dict:
  """Checks a submitted form (lists for multi-valued fields) and returns it in side terms."""
  prompt_flags = sorted(set(form.get("prompt_flags", [])))
  if any(f not in models.PROMPT_FLAGS for f in prompt_flags):
    raise ValueError(f"Unknown prompt flag; expected some of {models.PROMPT_FLAGS}.")
  comment = (form.get("comment") or "")[:5000]
  if form.get("action") == "skip":
    reason = form.get("skip_reason")
    if reason not in models.SKIP_REASONS:
      raise ValueError(f"Skipping needs a reason: one of {models.SKIP_REASONS}.")
    return {"outcome": "skipped", "skip_reason": reason, "prompt_flags": prompt_flags,
            "comment": comment}
  choice = form.get("choice")
  if choice not in CHOICES:
    raise ValueError("Choose the overall preference (A much better ... B much better, tie or "
                     "both bad).")
  return {"outcome": choice if choice in ("tie", "both_bad") else "preferred", "choice": choice,
          "left": _answer(form, "left"), "right": _answer(form, "right"),
          "prompt_flags": prompt_flags, "comment": comment}


def submit(session: orm.Session, user: models.User, assignment_id: int, answer: dict,
           now: datetime.datetime | None = None):
  """Stores a judgment by response id. Returns (judgment, created); a replay returns the first.

  Raises LookupError for a lease that is not the user's and LeaseExpired when it ran out and
  others have since filled the comparison.
  """
  now = now or utcnow()
  lease = session.get(models.Assignment, assignment_id)
  if lease is None or lease.user_id != user.id:
    raise LookupError("no such lease")
  comparison = _lock(session, lease.comparison_id)
  session.refresh(lease)  # re-read under the lock: a concurrent double submit may have finished
  existing = session.scalars(sa.select(models.Judgment)
                             .where(models.Judgment.assignment_id == lease.id)).first()
  if existing is not None:
    return existing, False
  project = session.get(models.Project, comparison.project_id)
  if lease.done:
    raise LeaseExpired(lease.expires_at)
  if lease.expires_at <= now:
    # Live leases of others were counted without this one; take a slot again if one is free.
    if not _has_room(session, comparison, project, now):
      raise LeaseExpired(lease.expires_at)
  preferred, strength = None, None
  if answer["outcome"] == "preferred":
    side, strength = SCALE[answer["choice"]]
    preferred = lease.left_response_id if side == "left" else lease.right_response_id
  judgment = models.Judgment(
      assignment_id=lease.id, comparison_id=lease.comparison_id, user_id=user.id,
      left_response_id=lease.left_response_id, right_response_id=lease.right_response_id,
      outcome=answer["outcome"], preferred_response_id=preferred, strength=strength,
      prompt_flags=answer["prompt_flags"], skip_reason=answer.get("skip_reason"),
      comment=answer["comment"], created_at=now)
  session.add(judgment)
  session.flush()
  if answer["outcome"] != "skipped":
    for side in ("left", "right"):
      rating = answer[side]
      session.add(models.AnswerRating(
          judgment_id=judgment.id, response_id=getattr(lease, f"{side}_response_id"),
          acceptable=rating["acceptable"], helpfulness=rating["helpfulness"],
          harm_flags=rating["harm_flags"]))
  lease.done = True
  session.execute(sa.delete(models.Draft).where(models.Draft.user_id == user.id,
                                                models.Draft.comparison_id == lease.comparison_id))
  accounts.audit(session, "judgment", user, judgment_id=judgment.id,
                 comparison_id=lease.comparison_id, outcome=answer["outcome"])
  return judgment, True


def save_draft(session: orm.Session, user: models.User, assignment_id: int, data: dict) -> None:
  """Keeps the labeller's unfinished answer; an answered (or lost) lease takes no more drafts."""
  lease = session.get(models.Assignment, assignment_id)
  if lease is None or lease.user_id != user.id or lease.done:
    raise LookupError("no such lease")
  draft = session.scalars(sa.select(models.Draft).where(
      models.Draft.user_id == user.id, models.Draft.comparison_id == lease.comparison_id)).first()
  if draft is None:
    session.add(models.Draft(user_id=user.id, comparison_id=lease.comparison_id, data=data))
  else:
    draft.data, draft.updated_at = data, utcnow()


def draft_for(session: orm.Session, user: models.User, comparison_id: int) -> dict:
  draft = session.scalars(sa.select(models.Draft).where(
      models.Draft.user_id == user.id, models.Draft.comparison_id == comparison_id)).first()
  return draft.data if draft else {}
