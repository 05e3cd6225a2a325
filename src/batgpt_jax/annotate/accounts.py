"""Accounts: argon2id hashes, login throttling and the append-only audit log."""

import datetime
import secrets

import argon2
import sqlalchemy as sa
from sqlalchemy import orm

from batgpt_jax.annotate import models
from batgpt_jax.annotate.db import utcnow

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory parameters.
_HASHER = argon2.PasswordHasher()
THROTTLE_WINDOW = datetime.timedelta(minutes=5)
THROTTLE_FAILURES = 5  # the sixth failed attempt inside the window is refused unchecked
MIN_PASSWORD = 10


def hash_password(password: str) -> str:
  if len(password) < MIN_PASSWORD:
    raise ValueError(f"password: expected at least {MIN_PASSWORD} characters, got "
                     f"{len(password)}. Choose a longer one.")
  return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
  try:
    return _HASHER.verify(stored_hash, password)
  except (argon2.exceptions.VerifyMismatchError, argon2.exceptions.InvalidHashError):
    return False


def audit(session: orm.Session, action: str, user: models.User | None = None, username: str = "",
          ip: str = "", **detail) -> None:
  session.add(models.AuditLog(action=action, user_id=user.id if user else None,
                              username=user.username if user else username[:64], ip=ip[:64],
                              detail=detail))


def add_user(session: orm.Session, username: str, password: str, role: str) -> models.User:
  if role not in models.ROLES:
    raise ValueError(f"role: expected one of {models.ROLES}, got {role!r}.")
  if not username or len(username) > 64 or not username.isprintable():
    raise ValueError(f"username: expected 1-64 printable characters, got {username!r}.")
  if session.scalar(sa.select(models.User).where(models.User.username == username)):
    raise ValueError(f"username: {username!r} exists already. Pick another name.")
  user = models.User(username=username, password_hash=hash_password(password), role=role,
                     session_token=secrets.token_hex(16))
  session.add(user)
  session.flush()
  audit(session, "add_user", user, role=role)
  return user


def recent_failures(session: orm.Session, username: str, ip: str) -> int:
  """Failed logins for this name, or from this address, inside the throttle window."""
  since = utcnow() - THROTTLE_WINDOW
  return session.scalar(
      sa.select(sa.func.count()).select_from(models.AuditLog).where(
          models.AuditLog.action == "login_failed", models.AuditLog.at >= since,
          sa.or_(models.AuditLog.username == username[:64], models.AuditLog.ip == ip[:64])))


def authenticate(session: orm.Session, username: str, password: str, ip: str):
  """Returns (user or None, reason). Every attempt is audited; throttled ones are not checked."""
  if recent_failures(session, username, ip) >= THROTTLE_FAILURES:
    audit(session, "login_throttled", username=username, ip=ip)
    return None, "throttled"
  user = session.scalar(sa.select(models.User).where(models.User.username == username))
  # A missing user costs the same hash as a wrong password, so timing tells no names apart.
  ok = verify_password(user.password_hash if user else _DUMMY_HASH, password)
  if not (ok and user and user.active):
    audit(session, "login_failed", username=username, ip=ip)
    return None, "bad_credentials"
  user.session_token = secrets.token_hex(16)  # a fresh login cookie; older ones stop working
  audit(session, "login", user, ip=ip)
  return user, "ok"


_DUMMY_HASH = _HASHER.hash("not-a-real-password-at-all")
