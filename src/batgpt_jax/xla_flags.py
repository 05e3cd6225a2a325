"""The XLA flags this project runs with, added to XLA_FLAGS before JAX starts its backend.

On CPU, `--xla_cpu_experimental_ynn_fusion_type=dot,reduce` lets XLA hand reductions to YNNPACK
beside the matmuls: the `bench` model's plain gradient takes 8.3 s instead of 10.5 s under XLA's
defaults, and 1.15x less time than with `dot` alone, with the same losses. `eltwise` as well is
slower and triples the compiler's peak memory (docs/performance.md has the sweep). Flags of other
platforms are ignored by the CPU backend and these by theirs. A flag already named in XLA_FLAGS is
left as the user set it.
"""

import os

DEFAULTS = ("--xla_cpu_experimental_ynn_fusion_type=dot,reduce",)


def apply_defaults(environ=os.environ) -> str:
  """Appends each default flag that XLA_FLAGS does not set already; returns the new value.

  Takes effect only before JAX initialises its backend (the first computation or device
  query), so entry points call it at import. BATGPT_XLA_DEFAULTS=0 turns it off (XLA's own defaults;
  the tests run with these flags, as users do)."""
  flags = environ.get("XLA_FLAGS", "")
  if environ.get("BATGPT_XLA_DEFAULTS", "1") == "0":
    return flags
  for flag in DEFAULTS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  environ["XLA_FLAGS"] = flags
  return flags
