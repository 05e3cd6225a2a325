"""The labeller's pages: the item in hand, submitting it, drafts, and their own history."""

import flask
import flask_login
import sqlalchemy as sa

from batgpt_jax.annotate import app as app_module, assignment, db, models

blueprint = flask.Blueprint("label", __name__)
MULTI = ("harm_left", "harm_right", "prompt_flags")
DRAFT_FIELDS = ("choice", "acceptable_left", "acceptable_right", "helpfulness_left",
                "helpfulness_right", "comment", "skip_reason") + MULTI
MAX_DRAFT = 20_000


def _user(session) -> models.User:
  return session.get(models.User, flask_login.current_user.id)


def _project(session, project_id: int) -> models.Project:
  project = session.get(models.Project, project_id)
  if project is None:
    flask.abort(404, "No such project.")
  return project


def _form_dict(form) -> dict:
  data = {k: form.getlist(k) for k in MULTI}
  data.update({k: form.get(k) for k in form if k not in MULTI and k != "csrf_token"})
  return data


def _item(session, lease: models.Assignment) -> dict:
  """What the labeller sees: texts by side. Model names and response ids stay on the server."""
  comparison = session.get(models.Comparison, lease.comparison_id)
  prompt = session.get(models.Prompt, comparison.prompt_id)
  left = session.get(models.Response, lease.left_response_id)
  right = session.get(models.Response, lease.right_response_id)
  turns = prompt.messages or [{"role": "user", "content": prompt.text}]
  return {"assignment_id": lease.id, "comparison_id": comparison.id, "turns": turns,
          "left": left.text, "right": right.text, "expires_at": lease.expires_at}


@blueprint.get("/label")
@flask_login.login_required
def index():
  with db.transaction(app_module.sessions(read_only=True)) as session:
    projects = session.scalars(sa.select(models.Project).order_by(models.Project.id)).all()
    listing = [{"id": p.id, "name": p.name} for p in projects]
  if len(listing) == 1:
    return flask.redirect(flask.url_for("label.item", project_id=listing[0]["id"]))
  return flask.render_template("projects.html", projects=listing)


@blueprint.get("/label/<int:project_id>")
@flask_login.login_required
def item(project_id: int):
  def take(session):
    project = _project(session, project_id)
    lease = assignment.lease_next(session, _user(session), project)
    page = {"project": {"id": project.id, "name": project.name,
                        "guidelines": project.guidelines},
            "renewed": lease.renewed_after_expiry,
            "lost": (lease.lost.comparison_id if lease.lost else None)}
    if lease.assignment is not None:
      page["item"] = _item(session, lease.assignment)
      page["draft"] = assignment.draft_for(session, _user(session),
                                           lease.assignment.comparison_id)
    return page

  page = db.run(app_module.sessions(), take, retry_integrity=True)
  if "item" not in page:
    return flask.render_template("no_work.html", **page)
  return flask.render_template("label.html", models=models, scale=assignment.SCALE, **page)


@blueprint.post("/label/<int:project_id>/submit/<int:assignment_id>")
@flask_login.login_required
def submit(project_id: int, assignment_id: int):
  form = _form_dict(flask.request.form)
  try:
    answer = assignment.parse_form(form)
  except ValueError as err:
    return _redisplay(project_id, assignment_id, form, str(err))

  def store(session):
    _project(session, project_id)
    judgment, created = assignment.submit(session, _user(session), assignment_id, answer)
    return judgment.id, created

  try:
    _, created = db.run(app_module.sessions(), store, retry_integrity=True)
  except LookupError:
    flask.abort(404, "No such item in your hands.")
  except assignment.LeaseExpired as expired:
    return flask.render_template("expired.html", project_id=project_id,
                                 expired_at=expired.args[0]), 409
  flask.flash("Saved." if created else "Already saved (sent twice); stored once.")
  return flask.redirect(flask.url_for("label.item", project_id=project_id), code=303)


def _redisplay(project_id: int, assignment_id: int, form: dict, error: str):
  """A form with a mistake: shown again with what was typed (also kept as the draft)."""
  def keep(session):
    user = _user(session)
    lease = session.get(models.Assignment, assignment_id)
    if lease is None or lease.user_id != user.id or lease.done:
      return None
    project = _project(session, project_id)
    assignment.save_draft(session, user, assignment_id,
                          {k: form.get(k) for k in DRAFT_FIELDS if form.get(k) is not None})
    return {"project": {"id": project.id, "name": project.name,
                        "guidelines": project.guidelines},
            "item": _item(session, lease), "draft": form, "renewed": False, "lost": None}

  page = db.run(app_module.sessions(), keep)
  if page is None:
    flask.abort(404, "No such item in your hands.")
  return flask.render_template("label.html", models=models, scale=assignment.SCALE,
                               error=error, **page), 400


@blueprint.post("/api/draft/<int:assignment_id>")
@flask_login.login_required
def draft(assignment_id: int):
  data = flask.request.get_json(silent=True)
  if not isinstance(data, dict) or len(flask.request.get_data()) > MAX_DRAFT:
    return flask.jsonify(error=f"expected a JSON object under {MAX_DRAFT} bytes"), 400
  data = {k: data[k] for k in DRAFT_FIELDS if k in data}

  def keep(session):
    assignment.save_draft(session, _user(session), assignment_id, data)

  try:
    db.run(app_module.sessions(), keep, retry_integrity=True)
  except LookupError:
    return flask.jsonify(error="no such item in your hands"), 404
  return flask.jsonify(saved=True)


def _like(text: str) -> str:
  escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
  return f"%{escaped}%"


@blueprint.get("/history")
@flask_login.login_required
def history():
  query = flask.request.args.get("q", "")[:200]
  with db.transaction(app_module.sessions(read_only=True)) as session:
    statement = (sa.select(models.Judgment.id, models.Judgment.outcome, models.Judgment.created_at,
                           models.Prompt.text)
                 .join(models.Comparison, models.Judgment.comparison_id == models.Comparison.id)
                 .join(models.Prompt, models.Comparison.prompt_id == models.Prompt.id)
                 .where(models.Judgment.user_id == flask_login.current_user.id)
                 .order_by(models.Judgment.id.desc()).limit(200))
    if query:
      statement = statement.where(models.Prompt.text.like(_like(query), escape="\\"))
    rows = [dict(r._mapping) for r in session.execute(statement)]
  return flask.render_template("history.html", rows=rows, query=query)


@blueprint.get("/judgment/<int:judgment_id>")
@flask_login.login_required
def judgment(judgment_id: int):
  with db.transaction(app_module.sessions(read_only=True)) as session:
    found = session.get(models.Judgment, judgment_id)
    # Someone else's judgment does not exist for a labeller (404, not 403: ids reveal nothing).
    if found is None or (found.user_id != flask_login.current_user.id
                         and not flask_login.current_user.is_admin):
      flask.abort(404, "No such judgment.")
    comparison = session.get(models.Comparison, found.comparison_id)
    prompt = session.get(models.Prompt, comparison.prompt_id)
    texts = {r.id: r.text for r in session.scalars(
        sa.select(models.Response).where(models.Response.id.in_(
            [found.left_response_id, found.right_response_id])))}
    view = {"id": found.id, "outcome": found.outcome, "strength": found.strength,
            "prompt": prompt.text or prompt.messages[-1]["content"],
            "left": texts[found.left_response_id], "right": texts[found.right_response_id],
            "preferred_side": (None if found.preferred_response_id is None else
                               "A" if found.preferred_response_id == found.left_response_id
                               else "B"),
            "ratings": [{"side": "A" if r.response_id == found.left_response_id else "B",
                         "acceptable": r.acceptable, "helpfulness": r.helpfulness,
                         "harm_flags": r.harm_flags} for r in found.ratings],
            "comment": found.comment, "skip_reason": found.skip_reason}
  return flask.render_template("judgment.html", j=view)
