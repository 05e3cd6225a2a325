"""Console logging that a person can read: one format, and the libraries' noise turned down.

TensorFlow and SentencePiece write some lines straight to file descriptor 2 from C++, before
any Python logging setting can reach them (TF_CPP_MIN_LOG_LEVEL does not silence absl's
pre-initialisation lines): a CUDA probe on CPU machines, a oneDNN notice, and one SentencePiece
line per tokenizer op. `native_noise_filtered` captures fd 2 around the few places that trigger
them and writes back every line except those known ones, in order.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

_NOISY_LOGGERS = ("absl", "jax._src", "orbax", "tensorflow", "asyncio")


def setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(message)s",
                      datefmt="%H:%M:%S", force=True)
  for noisy in _NOISY_LOGGERS:
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # gin logs every search-path miss on the root logger, as an error, before it finds the file.
  quiet_gin = lambda record: not record.pathname.endswith(os.path.join("gin", "resource_reader.py"))
  for handler in logging.getLogger().handlers:
    handler.addFilter(quiet_gin)
  if not getattr(sys.unraisablehook, "batgpt_quiet", False):
    sys.unraisablehook = closed_event_loop_dropped(sys.unraisablehook)
  absl = logging.getLogger("absl")
  if write_failure_tracebacks_dropped not in absl.filters:
    absl.addFilter(write_failure_tracebacks_dropped)


# What orbax's errors say when the storage refuses a write, and how a person would put it.
_WRITE_FAILURES = ((("Permission denied", "PERMISSION_DENIED"), "it is not writable"),
                   (("Read-only file system",), "its file system is read-only"),
                   (("No space left", "RESOURCE_EXHAUSTED"), "its disk is full"))


def storage_write_failure(text: str) -> str | None:
  """What is wrong with the storage when `text` (an error) says it refused a write, or None."""
  return next((what for marks, what in _WRITE_FAILURES if any(m in text for m in marks)), None)


def write_failure_tracebacks_dropped(record: logging.LogRecord) -> bool:
  """Keeps orbax's log line for a save thread that could not write, without its traceback.

  The same error reaches the next save, which reports it in one line (checkpoints.save); each
  failed thread would otherwise print a screenful (474 lines for one read-only directory).
  """
  if record.exc_info and storage_write_failure(str(record.exc_info[1])):
    record.exc_info, record.exc_text = None, None
  return True


def closed_event_loop_dropped(hook):
  """`hook` for every unraisable exception but "Event loop is closed".

  After a failed TensorStore read (a damaged checkpoint, reported once by `checkpoints`), its
  worker threads still post the other reads' results to orbax's event loop, which has closed;
  each post prints that RuntimeError with a traceback, and there is nothing left to do about it.
  """
  def quiet(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      hook(unraisable)
  quiet.batgpt_quiet = True
  return quiet


NATIVE_NOISE = tuple(re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
    r"^I0000 .*\] oneDNN custom operations are on",
    r"^I0000 .*cudart_stub\.cc.*Could not find cuda drivers",
    r"^E0000 .*cuda_platform\.cc.*failed call to cuInit",
    r"^E0000 .*oneDNN supports DT_INT64 only on platforms with AVX-512",
    r"^normalizer\.cc\(\d+\) LOG\(INFO\) precompiled_charsmap is empty",
))


@contextlib.contextmanager
def native_noise_filtered():
  """Runs the block with fd 2 captured; then writes back all but the `NATIVE_NOISE` lines."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
        if not any(pattern.search(line) for pattern in NATIVE_NOISE):
          sys.stderr.write(line)
      sys.stderr.flush()


def tag_processes(process_index: int, process_count: int) -> None:
  """Prefixes every line with [i/n] so that the interleaved logs of many hosts can be told apart."""
  tag = f"[{process_index}/{process_count}] "
  for handler in logging.getLogger().handlers:
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname).1s {tag}%(message)s",
                                           datefmt="%H:%M:%S"))
