"""The Flask app factory: database, login, CSRF, security headers, the three groups of pages."""

import dataclasses
import os
import secrets

import flask
import flask_login
import flask_wtf

from batgpt_jax.annotate import db, migrate, models

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


@dataclasses.dataclass(frozen=True)
class CurrentUser(flask_login.UserMixin):
  """The logged-in user as the views see it: a detached copy, no database session attached."""
  id: int
  username: str
  role: str
  session_token: str

  def get_id(self) -> str:
    # The token changes at every login and logout, so a copied old cookie logs nobody in.
    return f"{self.id}:{self.session_token}"

  @property
  def is_admin(self) -> bool:
    return self.role == "admin"


def as_current(user: models.User) -> CurrentUser:
  return CurrentUser(user.id, user.username, user.role, user.session_token)


def secret_key(factory) -> str:
  """The cookie-signing key: from the environment, else the one init-db stored in the database
  (so every server process behind one database signs alike and restarts keep logins)."""
  from_env = os.environ.get("BATGPT_ANNOTATE_SECRET_KEY")
  if from_env:
    return from_env
  with db.transaction(factory) as session:
    setting = session.get(models.Setting, "secret_key")
    if setting is None:
      setting = models.Setting(key="secret_key", value=secrets.token_hex(32))
      session.add(setting)
    return setting.value


def create_app(db_url: str, secure_cookies: bool = False, check_schema: bool = True) -> flask.Flask:
  engine = db.make_engine(db_url)
  if check_schema:
    migrate.require_head(engine)
  factory = db.session_factory(engine)
  app = flask.Flask(__name__)
  app.config.update(
      SECRET_KEY=secret_key(factory),
      SESSION_COOKIE_HTTPONLY=True,
      SESSION_COOKIE_SAMESITE="Lax",
      SESSION_COOKIE_SECURE=secure_cookies,  # on behind HTTPS (docs/annotate.md)
      SESSION_COOKIE_NAME="batgpt_annotate",
      PERMANENT_SESSION_LIFETIME=12 * 3600,
      WTF_CSRF_TIME_LIMIT=12 * 3600,  # a page left open for a long item can still be sent
      MAX_CONTENT_LENGTH=256 * 1024,
  )
  app.extensions["annotate_engine"] = engine
  app.extensions["annotate_sessions"] = factory
  reads = db.session_factory(engine, read_only=True)
  app.extensions["annotate_reads"] = reads
  flask_wtf.CSRFProtect(app)
  logins = flask_login.LoginManager(app)
  logins.session_protection = None  # tokens in the id already bind the cookie to one login

  @logins.user_loader
  def _load(user_id: str):
    number, _, token = user_id.partition(":")
    if not number.isdigit() or not token:
      return None
    with reads() as session:
      user = session.get(models.User, int(number))
      if user is None or not user.active or not secrets.compare_digest(user.session_token, token):
        return None
      return as_current(user)

  @logins.unauthorized_handler
  def _unauthorized():
    if flask.request.path.startswith("/api/") or flask.request.method != "GET":
      return flask.jsonify(error="log in first"), 401
    return flask.redirect(flask.url_for("auth.login", next=flask.request.full_path.rstrip("?")))

  @app.after_request
  def _headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if flask.request.endpoint != "static":
      response.headers["Cache-Control"] = "no-store"  # labels and drafts are not for caches
    return response

  # The views import this module (for `sessions`), so they are imported once it exists.
  from batgpt_jax.annotate import (  # pylint: disable=import-outside-toplevel
      admin_views, auth_views, label_views)
  app.register_blueprint(auth_views.blueprint)
  app.register_blueprint(label_views.blueprint)
  app.register_blueprint(admin_views.blueprint)

  @app.errorhandler(403)
  @app.errorhandler(404)
  @app.errorhandler(400)
  def _error(err):
    return flask.render_template("error.html", code=err.code, message=err.description), err.code

  app.add_url_rule("/", "home", lambda: flask.redirect(flask.url_for("label.index")))
  app.add_url_rule("/healthz", "healthz", lambda: ("ok", 200, {"Content-Type": "text/plain"}))
  return app


def sessions(read_only: bool = False):
  """The current app's sessionmaker; `read_only` ones must not write (SQLite: BEGIN DEFERRED)."""
  return flask.current_app.extensions["annotate_reads" if read_only else "annotate_sessions"]


def dispose(app: flask.Flask) -> None:
  app.extensions["annotate_engine"].dispose()

