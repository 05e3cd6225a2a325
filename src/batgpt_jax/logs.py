"""Console logging that a person can read: one format, and the libraries' noise turned down."""

import logging
import os

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


def tag_processes(process_index: int, process_count: int) -> None:
  """Prefixes every line with [i/n] so that the interleaved logs of many hosts can be told apart."""
  tag = f"[{process_index}/{process_count}] "
  for handler in logging.getLogger().handlers:
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname).1s {tag}%(message)s",
                                           datefmt="%H:%M:%S"))
