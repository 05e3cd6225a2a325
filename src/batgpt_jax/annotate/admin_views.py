"""Admin pages: projects with their quality figures and the Bradley-Terry ranking plot."""

import functools

import flask
import flask_login
import sqlalchemy as sa

from batgpt_jax.annotate import app as app_module, db, models, stats

blueprint = flask.Blueprint("admin", __name__, url_prefix="/admin")


def admin_required(view):
  @functools.wraps(view)
  @flask_login.login_required
  def wrapped(*args, **kwargs):
    if not flask_login.current_user.is_admin:
      flask.abort(403, "Admins only.")
    return view(*args, **kwargs)
  return wrapped


@blueprint.get("")
@admin_required
def index():
  with db.transaction(app_module.sessions(read_only=True)) as session:
    counts = session.execute(
        sa.select(models.Project.id, models.Project.name, models.Project.votes_required,
                  sa.select(sa.func.count()).select_from(models.Comparison)
                  .where(models.Comparison.project_id == models.Project.id).scalar_subquery(),
                  sa.select(sa.func.count()).select_from(models.Judgment).join(models.Comparison)
                  .where(models.Comparison.project_id == models.Project.id).scalar_subquery())
        .order_by(models.Project.id)).all()
    users = session.execute(sa.select(models.User.username, models.User.role, models.User.active)
                            .order_by(models.User.username)).all()
  return flask.render_template("admin.html", projects=counts, users=users)


def ranking_plot(ranking: list[dict]) -> dict:
  """Bar geometry for the inline SVG (no script, no inline style: CSP-clean)."""
  top = max((r["strength"] for r in ranking), default=0) or 1
  return {"height": 30 * len(ranking) + 10,
          "bars": [{"model": r["model"], "y": 10 + 30 * i,
                    "width": round(300 * r["strength"] / top), "label": f"{r['strength']:.3f}"}
                   for i, r in enumerate(ranking)]}


@blueprint.get("/project/<int:project_id>")
@admin_required
def project(project_id: int):
  with db.transaction(app_module.sessions(read_only=True)) as session:
    found = session.get(models.Project, project_id)
    if found is None:
      flask.abort(404, "No such project.")
    figures = stats.project_stats(session, found)
  return flask.render_template("admin_project.html", s=figures,
                               plot=ranking_plot(figures["bradley_terry"]))
