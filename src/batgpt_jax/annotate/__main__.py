"""`python -m batgpt_jax.annotate ...` is `batgpt annotate ...` without the rest of the CLI."""

import sys

from batgpt_jax.annotate import command

sys.exit(command.main())
