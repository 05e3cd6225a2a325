"""Alembic environment: runs on the connection that `migrate.upgrade` hands over, or on `-x db=URL`."""

from alembic import context

from batgpt_jax.annotate import db, models

config = context.config
target_metadata = models.Base.metadata


def _run(connection) -> None:
  context.configure(connection=connection, target_metadata=target_metadata,
                    render_as_batch=connection.dialect.name == "sqlite")
  with context.begin_transaction():
    context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
  _run(connection)
else:
  url = context.get_x_argument(as_dictionary=True).get("db")
  if not url:
    raise SystemExit("error: no database given. Run `alembic -c .../alembic.ini -x db=URL "
                     "upgrade head` or `batgpt annotate init-db --db URL`.")
  engine = db.make_engine(url)
  with engine.connect() as conn:
    _run(conn)
  engine.dispose()
