"""Surviving faults: one agreed stop step after a preemption notice, and non-finite steps skipped.

Preemption. A SIGTERM (a preemption or maintenance notice, `scancel`, a pod being deleted) may
reach any one host. In a multi-process run JAX's coordination service catches it and every host
learns of it; `multihost_utils.reached_preemption_sync_point` then returns True on all hosts at
the same step, where they save and exit. A single process catches SIGTERM itself, and treats
Ctrl-C (SIGINT) the same way: save at the current step, exit with PREEMPTED_EXIT; a second
Ctrl-C aborts at once (KeyboardInterrupt), without saving. (With several processes Ctrl-C keeps
its default: one host alone cannot agree a stop step with the others.)

Non-finite steps. `train_step` skips the update of a step whose loss or gradient norm is NaN or
Inf (parameters and optimizer state are kept) and reports it; `NonFiniteSteps` counts them and
stops the run after `limit` in a row. It reads each step's flag one step late, so the host never
waits for the device.
"""

import logging
import signal

import jax
from jax.experimental import multihost_utils

PREEMPTED_EXIT = 143  # 128 + SIGTERM: a checkpoint was saved, and the run is not finished


class TrainingDivergedError(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient norm."""


class StopAgreement:
  """Whether to save and stop at this step: the same answer on every host."""

  def __init__(self):
    self._multihost = jax.process_count() > 1
    self._received = False
    self._previous = {}
    if not self._multihost:  # with several processes, the coordination service owns SIGTERM
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT:  # the next Ctrl-C is the default one: abort at once
      signal.signal(signal.SIGINT, signal.default_int_handler)
      logging.warning("Ctrl-C: saving a checkpoint at the current step, then exiting (press "
                      "Ctrl-C again to abort without saving).")
    else:
      logging.warning("Received signal %d: saving a checkpoint at the current step, then "
                      "exiting.", signum)
    self._received = True

  def reached(self, step: int) -> bool:
    """Call once per step, with the same step numbers on every host."""
    if self._multihost:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received

  def close(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}


class NonFiniteSteps:
  """Counts skipped (non-finite) steps; raises after `limit` of them in a row."""

  def __init__(self, limit: int, skipped_before: int = 0):
    self.limit = limit
    self.total = skipped_before  # over the whole run, carried in the checkpoint
    self.in_a_row = 0
    self._pending = None  # (step, device flag) not yet read

  def observe(self, step: int, skipped_flag) -> None:
    """Records `step`'s flag and reads the previous step's (already computed by now)."""
    previous, self._pending = self._pending, (step, skipped_flag)
    if previous is not None:
      self._count(*previous)

  def flush(self) -> None:
    if self._pending is not None:
      pending, self._pending = self._pending, None
      self._count(*pending)

  def _count(self, step: int, flag) -> None:
    if not int(jax.device_get(flag)):
      self.in_a_row = 0
      return
    self.total += 1
    self.in_a_row += 1
    logging.warning("Step %d: non-finite loss or gradient norm; its update was skipped (%d in a "
                    "row, %d in this run).", step, self.in_a_row, self.total)
    if self.limit and self.in_a_row >= self.limit:
      raise TrainingDivergedError(
          f"Steps {step - self.in_a_row + 1}..{step} all had a non-finite loss or gradient norm "
          f"(TrainConfig.max_bad_steps={self.limit} in a row). Their updates were skipped, so "
          "neither the parameters nor any checkpoint hold anything from them, and this stop "
          "writes none: the last checkpoint is intact. Lower OptimizerConfig.learning_rate (or "
          "raise its warmup_steps, or set loss_weights.z_loss = 1e-4) and resume from it.")
