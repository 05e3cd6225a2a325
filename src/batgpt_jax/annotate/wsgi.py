"""The app for any WSGI server, configured by the environment:

  BATGPT_ANNOTATE_DB=postgresql+psycopg://... gunicorn -w 4 -b 127.0.0.1:8080 \
      'batgpt_jax.annotate.wsgi:application'
  BATGPT_ANNOTATE_DB=annotate.db waitress-serve --listen=127.0.0.1:8080 \
      batgpt_jax.annotate.wsgi:application

BATGPT_ANNOTATE_SECURE_COOKIES=1 behind HTTPS; BATGPT_ANNOTATE_SECRET_KEY overrides the key that
init-db stored in the database.
"""

import os

from batgpt_jax.annotate import app


def _from_environment():
  url = os.environ.get("BATGPT_ANNOTATE_DB")
  if not url:
    raise RuntimeError("batgpt_jax.annotate.wsgi: set BATGPT_ANNOTATE_DB to the database URL "
                       "(e.g. annotate.db or postgresql+psycopg://user:pass@host/db).")
  return app.create_app(url, secure_cookies=os.environ.get("BATGPT_ANNOTATE_SECURE_COOKIES")
                        == "1")


application = _from_environment()
