"""Console logging: the libraries' noise dropped, everything else kept."""

import types

from batgpt_jax import logs


def _unraisable(error):
  return types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None,
                               err_msg=None, object=None)


def test_only_the_closed_event_loop_noise_is_dropped():
  seen = []
  hook = logs.closed_event_loop_dropped(seen.append)
  hook(_unraisable(RuntimeError("Event loop is closed")))
  kept = [_unraisable(RuntimeError("Event loop is closed twice")), _unraisable(ValueError("x"))]
  for unraisable in kept:
    hook(unraisable)
  assert seen == kept
