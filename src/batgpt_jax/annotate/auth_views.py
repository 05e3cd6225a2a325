"""Log in and out: throttled, audited, with a new session cookie at every login."""

import secrets
import urllib.parse

import flask
import flask_login

from batgpt_jax.annotate import accounts, app as app_module, db, models

blueprint = flask.Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
  """Only paths on this site: `next=https://evil.example` must not bounce a fresh login away."""
  if not target:
    return flask.url_for("label.index")
  parts = urllib.parse.urlsplit(target)
  if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
    return flask.url_for("label.index")
  return target


@blueprint.route("/login", methods=["GET", "POST"])
def login():
  if flask.request.method == "GET":
    return flask.render_template("login.html", next=flask.request.args.get("next", ""))
  username = flask.request.form.get("username", "")[:200]
  password = flask.request.form.get("password", "")[:1000]
  ip = flask.request.remote_addr or ""

  def attempt(session):
    user, reason = accounts.authenticate(session, username, password, ip)
    return (app_module.as_current(user) if user else None), reason

  user, reason = db.run(app_module.sessions(), attempt)
  if reason == "throttled":
    return flask.render_template("login.html", next="", error=(
        "Too many failed logins. Wait five minutes, then try again.")), 429
  if user is None:
    return flask.render_template("login.html", next="", error="Wrong username or password."), 401
  flask.session.clear()  # nothing from before the login survives: a fresh, different cookie
  flask_login.login_user(user)
  return flask.redirect(_safe_next(flask.request.form.get("next")), code=303)


@blueprint.post("/logout")
@flask_login.login_required
def logout():
  user_id = flask_login.current_user.id

  def forget(session):
    user = session.get(models.User, user_id)
    user.session_token = secrets.token_hex(16)  # any copy of the old cookie is now worthless
    accounts.audit(session, "logout", user)

  db.run(app_module.sessions(), forget)
  flask_login.logout_user()
  flask.session.clear()
  return flask.redirect(flask.url_for("auth.login"), code=303)
