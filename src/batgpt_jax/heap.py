"""glibc's heap thresholds for a process that trains: where large buffers come from.

XLA's CPU backend allocates every intermediate buffer of a step with malloc and frees it when
the step is done. glibc serves a request above `M_MMAP_THRESHOLD` from fresh pages of its own
mapping and returns them on free, so the next step faults the same pages in (zeroed) again.
glibc raises that threshold by itself, up to 32 MiB, as such buffers are freed, and a step's
buffers soon come from the heap and stay warm.

TensorFlow pins the threshold at 128 KiB the first time a `tf.data.Dataset.from_generator`
kernel is built in a process (`ApplyPython311MemoryPatch`, once, against a from_generator
memory growth on Python 3.11), and every data source here is built on from_generator. Left
that way, the tiny model's instruction-tuning step faulted 28,000 pages (110 MB) in each step
and took 0.185 s instead of 0.107 s on one core (docs/performance.md). `settled()`
puts the thresholds where glibc's own adjustment ends; `batgpt_jax.data` calls it once
TensorFlow's setting has happened. Off glibc (macOS, musl) these functions do nothing.
"""

import contextlib
import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for its own adjustment on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # glibc keeps twice the mmap threshold as it adjusts


@functools.cache
def _libc():
  try:
    return ctypes.CDLL("libc.so.6")
  except OSError:  # not glibc: the allocator's defaults stay
    return None


def _mallopt(param: int, value: int) -> bool:
  mallopt = getattr(_libc(), "mallopt", None)
  return mallopt is not None and mallopt(param, value) == 1


def settled() -> bool:
  """Sets the thresholds where glibc's adjustment ends; False where there is no glibc."""
  return _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(M_TRIM_THRESHOLD,
                                                                 TRIM_THRESHOLD)


@contextlib.contextmanager
def read_buffers_returned():
  """Runs a checkpoint restore with its read buffers given back to the system as they are freed.

  A restore reads each array through buffers that are freed once the array is placed. With the
  threshold high, those buffers come from the heap and stay in the process: a 2 x 4 `bench`
  checkpoint restored on 4 x 2 peaked at 1.6x each host's share of the state
  (benchmarks/restore_memory.py), 1.2x with the threshold held at 128 KiB during the restore.
  Afterwards the thresholds are settled again and the freed heap is trimmed.
  """
  if not _mallopt(M_MMAP_THRESHOLD, 128 * 1024):
    yield
    return
  try:
    yield
  finally:
    settled()
    _libc().malloc_trim(0)
