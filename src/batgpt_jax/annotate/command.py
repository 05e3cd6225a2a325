"""`batgpt annotate init-db | serve | add-user | import | export | stats`.

Every command takes --db URL: a file path or sqlite:///path for SQLite (the default kind), or
postgresql+psycopg://user:pass@host/db. Nothing here imports JAX or TensorFlow.
"""

import argparse
import getpass
import json
import sys

DB_HELP = "database: a SQLite file path or URL, or postgresql+psycopg://user:pass@host/db"


def _engine(url: str):
  from batgpt_jax.annotate import db  # pylint: disable=import-outside-toplevel
  try:
    return db.make_engine(url)
  except ValueError as err:
    raise SystemExit(f"error: {err}") from None


def _ready_sessions(url: str):
  from batgpt_jax.annotate import db, migrate  # pylint: disable=import-outside-toplevel
  engine = _engine(url)
  migrate.require_head(engine)
  return db.session_factory(engine)


def _project(session, name: str):
  import sqlalchemy as sa  # pylint: disable=import-outside-toplevel
  from batgpt_jax.annotate import models  # pylint: disable=import-outside-toplevel
  project = session.scalar(sa.select(models.Project).where(models.Project.name == name))
  if project is None:
    known = session.scalars(sa.select(models.Project.name).order_by(models.Project.name)).all()
    raise SystemExit(f"error: no project {name!r}; the database has {known or 'none'}. "
                     "Projects are created by `batgpt annotate import --project NAME`.")
  return project


def cmd_init_db(args) -> int:
  from batgpt_jax.annotate import app, db, migrate  # pylint: disable=import-outside-toplevel
  engine = _engine(args.db)
  migrate.upgrade(engine)
  app.secret_key(db.session_factory(engine))  # stored once, shared by every server process
  print(f"Database at revision {migrate.current_revision(engine)} (head).")
  return 0


def cmd_serve(args) -> int:
  import waitress  # pylint: disable=import-outside-toplevel
  from batgpt_jax.annotate import app  # pylint: disable=import-outside-toplevel
  application = app.create_app(args.db, secure_cookies=args.secure_cookies)
  print(f"Serving on http://{args.host}:{args.port} (waitress, {args.threads} threads)",
        flush=True)
  waitress.serve(application, host=args.host, port=args.port, threads=args.threads,
                 ident="batgpt-annotate")
  return 0


def _password(args) -> str:
  if args.password_stdin:
    return sys.stdin.readline().rstrip("\n")
  first = getpass.getpass("Password: ")
  if first != getpass.getpass("Again: "):
    raise SystemExit("error: the two passwords differ; run add-user again.")
  return first


def cmd_add_user(args) -> int:
  from batgpt_jax.annotate import accounts, db  # pylint: disable=import-outside-toplevel
  factory = _ready_sessions(args.db)
  password = _password(args)
  try:
    with db.transaction(factory) as session:
      accounts.add_user(session, args.username, password, args.role)
  except ValueError as err:
    raise SystemExit(f"error: {err}") from None
  print(f"Added {args.role} {args.username!r}.")
  return 0


def cmd_import(args) -> int:
  from batgpt_jax.annotate import db, exchange  # pylint: disable=import-outside-toplevel
  factory = _ready_sessions(args.db)
  guidelines = None
  if args.guidelines:
    with open(args.guidelines, encoding="utf-8") as f:
      guidelines = f.read()
  try:
    with db.transaction(factory) as session, open(args.input, encoding="utf-8") as lines:
      project = exchange.get_or_create_project(
          session, args.project, guidelines=guidelines, votes_required=args.votes,
          lease_seconds=None if args.lease_minutes is None else int(args.lease_minutes * 60),
          gold_rate=args.gold_rate)
      added = exchange.import_records(session, project, lines)
  except ValueError as err:
    raise SystemExit(f"error: {args.input}: {err} Nothing was imported.") from None
  print(json.dumps({"project": args.project, **added}, sort_keys=True))
  return 0


def cmd_export(args) -> int:
  from batgpt_jax.annotate import db, exchange  # pylint: disable=import-outside-toplevel
  factory = _ready_sessions(args.db)
  with db.transaction(factory) as session:
    records = exchange.export_records(session, _project(session, args.project),
                                      include_ai=args.include_ai, include_gold=args.include_gold)
  count = exchange.write_export(args.output, records, style=args.style)
  print(f"Wrote {count} records to {args.output} ({args.style}).")
  return 0


def cmd_stats(args) -> int:
  from batgpt_jax.annotate import db, stats  # pylint: disable=import-outside-toplevel
  factory = _ready_sessions(args.db)
  with db.transaction(factory) as session:
    figures = stats.project_stats(session, _project(session, args.project))
  print(json.dumps(figures, indent=2, sort_keys=True))
  return 0


def _add_db(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--db", required=True, help=DB_HELP)


def add_annotate_command(subparsers) -> argparse.ArgumentParser:
  """Adds `annotate` and its subcommands; each sets `run(args) -> exit code`."""
  annotate = subparsers.add_parser("annotate", help="the A/B preference labelling web app",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = annotate.add_subparsers(dest="annotate_command", required=True)
  init = sub.add_parser("init-db", help="create or migrate the database (alembic upgrade head)")
  _add_db(init)
  init.set_defaults(run=cmd_init_db)
  serve = sub.add_parser("serve", help="serve the app with waitress (a production WSGI server)")
  _add_db(serve)
  serve.add_argument("--host", default="127.0.0.1", help="listen address (default: loopback)")
  serve.add_argument("--port", type=int, default=8080)
  serve.add_argument("--threads", type=int, default=8)
  serve.add_argument("--secure-cookies", action="store_true",
                     help="send cookies over HTTPS only (set this behind a TLS proxy)")
  serve.set_defaults(run=cmd_serve)
  add_user = sub.add_parser("add-user", help="add an account")
  _add_db(add_user)
  add_user.add_argument("--username", required=True)
  add_user.add_argument("--role", choices=("admin", "labeller"), default="labeller")
  add_user.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin (for scripts)")
  add_user.set_defaults(run=cmd_add_user)
  load = sub.add_parser("import", help="import prompts with candidate answers from JSONL")
  _add_db(load)
  load.add_argument("--project", required=True, help="created if missing")
  load.add_argument("--input", required=True, help="JSONL: prompt/messages + responses")
  load.add_argument("--votes", type=int, help="judgments wanted per comparison (new: 3)")
  load.add_argument("--lease-minutes", type=float, help="how long a lease lasts (new: 30)")
  load.add_argument("--gold-rate", type=float, help="share of gold items served (new: 0)")
  load.add_argument("--guidelines", help="a text file shown to labellers")
  load.set_defaults(run=cmd_import)
  export = sub.add_parser("export", help="write the preference JSONL of a project")
  _add_db(export)
  export.add_argument("--project", required=True)
  export.add_argument("--output", required=True)
  export.add_argument("--style", choices=("preference", "hh"), default="preference",
                      help="preference: batgpt_jax.data.preference_schema; hh: chosen/rejected "
                           "transcripts only")
  export.add_argument("--include-ai", action="store_true", help="add AI labels (source 'ai')")
  export.add_argument("--include-gold", action="store_true", help="add the gold items too")
  export.set_defaults(run=cmd_export)
  show = sub.add_parser("stats", help="agreement, bias, gold accuracy and ranking as JSON")
  _add_db(show)
  show.add_argument("--project", required=True)
  show.set_defaults(run=cmd_stats)
  return annotate


def main(argv: list[str] | None = None, prog: str = "python -m batgpt_jax.annotate") -> int:
  parser = argparse.ArgumentParser(prog=prog)
  add_annotate_command(parser.add_subparsers(dest="command", required=True))
  args = parser.parse_args(["annotate"] + list(sys.argv[1:] if argv is None else argv))
  return args.run(args)
