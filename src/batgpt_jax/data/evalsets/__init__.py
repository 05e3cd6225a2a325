"""Project-generated multiple-choice sets in the C-Eval (ceval/) and CMMLU (cmmlu/) layouts."""

import pathlib

# Resolved from __file__ so it works from a source checkout and from an installed package.
PACKAGED_DIR = pathlib.Path(__file__).resolve().parent
