"""One job per run directory: `batgpt train` holds a lock on `RUN_DIR/train.lock` while it runs.

Two jobs training into one run directory would interleave their checkpoints and metrics (each
believing itself alone), so the second is refused with the holder's host, pid and start time.
The lock is `fcntl.flock` on an open file: the kernel drops it when the holder's process ends,
however it ends (SIGKILL, OOM, a lost node), so a killed job never leaves it stuck; the file's
text only tells who holds it. In a multi-process job only process 0 takes it (the others write
their shards under the lead's direction).

flock works on local disks and on NFS v4 (as a lease). Object stores (`gs://`, `s3://`) have no
locks at all: there nothing but the scheduler (one job per run name) protects a run directory,
and the lock is skipped with a warning.
"""

import datetime
import fcntl
import logging
import os
import socket

from batgpt_jax import config

LOCK_NAME = "train.lock"


class RunDirInUseError(config.InputError):
  """Another live process holds the run directory's lock (a one-line error, exit code 2)."""


class RunLock:
  """Holds the lock of `run_dir` from `acquire()` to `release()` (or the process's end)."""

  def __init__(self, run_dir: str):
    self.run_dir = run_dir
    self.path = os.path.join(run_dir, LOCK_NAME)
    self._file = None

  def acquire(self) -> "RunLock":
    if "://" in self.run_dir:
      logging.warning("%s is not a local path: it cannot be locked, so make sure that no other "
                      "job trains into it (one job per run directory).", self.run_dir)
      return self
    os.makedirs(self.run_dir, exist_ok=True)
    # "a+" neither truncates nor replaces the file: the holder's text stays readable to others.
    handle = open(self.path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "an unknown process"
      handle.close()
      raise RunDirInUseError(
          f"{self.run_dir} is in use by another training job ({holder}); two jobs in one run "
          "directory would overwrite each other's checkpoints. Wait for it to finish, stop it, "
          "or set TrainConfig.run_dir to a new directory.") from None
    handle.seek(0)
    handle.truncate()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    handle.write(f"host {socket.gethostname()}, pid {os.getpid()}, started {started}\n")
    handle.flush()
    self._file = handle
    return self

  def release(self) -> None:
    if self._file is not None:
      self._file.close()  # closing the file releases the flock
      self._file = None

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
