"""The tables. Judgments name responses by id, never as 'A' or 'B'; the shown order rides along.

A comparison's two responses are stored with `response_a_id < response_b_id` (a canonical order
for statistics); which one the labeller saw on the left is a property of the lease.
"""

import datetime

import sqlalchemy as sa
from sqlalchemy import orm

from batgpt_jax.annotate.db import utcnow

ROLES = ("admin", "labeller")
OUTCOMES = ("preferred", "tie", "both_bad", "skipped")
HARM_FLAGS = ("hate", "sexual", "violence_self_harm", "personal_data", "dangerous_advice",
              "needless_refusal")
PROMPT_FLAGS = ("unclear", "non_english", "harmful_request", "duplicate", "pii_in_prompt")
SKIP_REASONS = ("expertise", "unreadable", "broken_item", "discomfort", "other")

NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
          "pk": "pk_%(table_name)s"}


class Base(orm.DeclarativeBase):
  metadata = sa.MetaData(naming_convention=NAMING)


def _fk(target: str, nullable: bool = False) -> orm.Mapped:
  return orm.mapped_column(sa.ForeignKey(target, ondelete="RESTRICT"), nullable=nullable,
                           index=True)


class Setting(Base):
  __tablename__ = "settings"
  key: orm.Mapped[str] = orm.mapped_column(sa.String(64), primary_key=True)
  value: orm.Mapped[str] = orm.mapped_column(sa.Text)


class User(Base):
  __tablename__ = "users"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  username: orm.Mapped[str] = orm.mapped_column(sa.String(64), unique=True)
  password_hash: orm.Mapped[str] = orm.mapped_column(sa.String(255))
  role: orm.Mapped[str] = orm.mapped_column(sa.String(16))
  active: orm.Mapped[bool] = orm.mapped_column(default=True)
  # Part of the login cookie; a new one at every login and logout makes old cookies worthless.
  session_token: orm.Mapped[str] = orm.mapped_column(sa.String(64))
  created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
  __table_args__ = (sa.CheckConstraint("role IN ('admin', 'labeller')", name="role"),)


class Project(Base):
  __tablename__ = "projects"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  name: orm.Mapped[str] = orm.mapped_column(sa.String(128), unique=True)
  guidelines: orm.Mapped[str] = orm.mapped_column(sa.Text, default="")
  votes_required: orm.Mapped[int] = orm.mapped_column(default=3)
  lease_seconds: orm.Mapped[int] = orm.mapped_column(default=1800)
  gold_rate: orm.Mapped[float] = orm.mapped_column(default=0.0)
  created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)


class Prompt(Base):
  __tablename__ = "prompts"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  project_id: orm.Mapped[int] = _fk("projects.id")
  # The import's id for the record (or a hash of it): importing the same file twice adds nothing.
  external_id: orm.Mapped[str] = orm.mapped_column(sa.String(128))
  text: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
  messages: orm.Mapped[list | None] = orm.mapped_column(sa.JSON)
  created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
  __table_args__ = (sa.UniqueConstraint("project_id", "external_id", name="uq_prompts_external"),)


class Response(Base):
  __tablename__ = "responses"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  prompt_id: orm.Mapped[int] = _fk("prompts.id")
  model_name: orm.Mapped[str] = orm.mapped_column(sa.String(128))  # never shown to labellers
  text: orm.Mapped[str] = orm.mapped_column(sa.Text)
  author_id: orm.Mapped[int | None] = _fk("users.id", nullable=True)  # a labeller's own answer


class Comparison(Base):
  __tablename__ = "comparisons"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  project_id: orm.Mapped[int] = _fk("projects.id")
  prompt_id: orm.Mapped[int] = _fk("prompts.id")
  response_a_id: orm.Mapped[int] = _fk("responses.id")
  response_b_id: orm.Mapped[int] = _fk("responses.id")
  # Gold items carry the expected label ('a', 'b' or 'tie'); they are exempt from the vote cap.
  gold_label: orm.Mapped[str | None] = orm.mapped_column(sa.String(8))
  created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
  __table_args__ = (
      sa.CheckConstraint("response_a_id < response_b_id", name="canonical_order"),
      sa.UniqueConstraint("response_a_id", "response_b_id", name="uq_comparisons_pair"),
  )


class Assignment(Base):
  """A lease: one labeller may answer one comparison until `expires_at`."""
  __tablename__ = "assignments"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  comparison_id: orm.Mapped[int] = _fk("comparisons.id")
  user_id: orm.Mapped[int] = _fk("users.id")
  left_response_id: orm.Mapped[int] = _fk("responses.id")
  right_response_id: orm.Mapped[int] = _fk("responses.id")
  leased_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
  expires_at: orm.Mapped[datetime.datetime]
  done: orm.Mapped[bool] = orm.mapped_column(default=False)
  # One lease per labeller and comparison, ever: nobody sees the same item twice.
  __table_args__ = (sa.UniqueConstraint("comparison_id", "user_id", name="uq_assignments_once"),)


class Judgment(Base):
  __tablename__ = "judgments"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  assignment_id: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("assignments.id"), unique=True)
  comparison_id: orm.Mapped[int] = _fk("comparisons.id")
  user_id: orm.Mapped[int] = _fk("users.id")
  left_response_id: orm.Mapped[int] = _fk("responses.id")   # the order the labeller saw
  right_response_id: orm.Mapped[int] = _fk("responses.id")
  outcome: orm.Mapped[str] = orm.mapped_column(sa.String(16))
  preferred_response_id: orm.Mapped[int | None] = _fk("responses.id", nullable=True)
  strength: orm.Mapped[int | None]  # 1 slightly, 2 better, 3 much better
  prompt_flags: orm.Mapped[list] = orm.mapped_column(sa.JSON, default=list)
  skip_reason: orm.Mapped[str | None] = orm.mapped_column(sa.String(32))
  comment: orm.Mapped[str] = orm.mapped_column(sa.Text, default="")
  created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
  ratings: orm.Mapped[list["AnswerRating"]] = orm.relationship(order_by="AnswerRating.response_id")
  __table_args__ = (
      sa.UniqueConstraint("comparison_id", "user_id", name="uq_judgments_once"),
      sa.CheckConstraint("outcome IN ('preferred', 'tie', 'both_bad', 'skipped')", name="outcome"),
      sa.CheckConstraint("(outcome = 'preferred') = (preferred_response_id IS NOT NULL)",
                         name="preferred_iff_outcome"),
  )


class AnswerRating(Base):
  __tablename__ = "answer_ratings"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  judgment_id: orm.Mapped[int] = _fk("judgments.id")
  response_id: orm.Mapped[int] = _fk("responses.id")
  acceptable: orm.Mapped[bool]
  harm_flags: orm.Mapped[list] = orm.mapped_column(sa.JSON, default=list)
  helpfulness: orm.Mapped[int]
  __table_args__ = (
      sa.UniqueConstraint("judgment_id", "response_id", name="uq_answer_ratings_once"),
      sa.CheckConstraint("helpfulness BETWEEN 1 AND 5", name="helpfulness"),
  )


class Draft(Base):
  __tablename__ = "drafts"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  user_id: orm.Mapped[int] = _fk("users.id")
  comparison_id: orm.Mapped[int] = _fk("comparisons.id")
  data: orm.Mapped[dict] = orm.mapped_column(sa.JSON)
  updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
  __table_args__ = (sa.UniqueConstraint("user_id", "comparison_id", name="uq_drafts_once"),)


class AIJudgment(Base):
  __tablename__ = "ai_judgments"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  comparison_id: orm.Mapped[int] = _fk("comparisons.id")
  labeller: orm.Mapped[str] = orm.mapped_column(sa.String(128))
  outcome: orm.Mapped[str] = orm.mapped_column(sa.String(16))
  preferred_response_id: orm.Mapped[int | None] = _fk("responses.id", nullable=True)
  strength: orm.Mapped[int | None]
  created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
  __table_args__ = (sa.UniqueConstraint("comparison_id", "labeller", name="uq_ai_judgments_once"),)


class AuditLog(Base):
  """Append-only (a trigger refuses UPDATE and DELETE): logins, leases, judgments, imports."""
  __tablename__ = "audit_log"
  id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
  at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow, index=True)
  user_id: orm.Mapped[int | None] = _fk("users.id", nullable=True)
  username: orm.Mapped[str] = orm.mapped_column(sa.String(64), default="", index=True)
  ip: orm.Mapped[str] = orm.mapped_column(sa.String(64), default="")
  action: orm.Mapped[str] = orm.mapped_column(sa.String(32), index=True)
  detail: orm.Mapped[dict] = orm.mapped_column(sa.JSON, default=dict)
