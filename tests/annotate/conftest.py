"""The annotation tests' fixtures live in annotate_helpers.py (importable by the tests too)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from annotate_helpers import (chromium, db_url, empty_db, make_app,  # noqa: E402,F401
                              postgres_server, sqlite_url)
