"""Data: vocabulary, seqio tasks, direction and packing preprocessors, the per-host pipeline.

Importing the package hides every GPU from TensorFlow (the accelerators belong to JAX; tf.data
only needs CPUs), keeps TensorFlow's C++ logging quiet, and takes back the heap setting that
TensorFlow makes for from_generator (batgpt_jax/heap.py): it made every training step fault
its buffers in afresh.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402  pylint: disable=g-import-not-at-top

from batgpt_jax import heap  # noqa: E402  pylint: disable=g-import-not-at-top


def _hide_accelerators_from_tensorflow() -> None:
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    # TensorFlow already initialised its devices (someone used it before importing us): the
    # setting can no longer change, and whoever did that chose their own device placement.
    pass


_hide_accelerators_from_tensorflow()


def _heap_settled_after_tensorflow() -> None:
  """TensorFlow pins glibc's mmap threshold once per process, when it first builds a
  from_generator kernel; building one here puts that behind us, then the thresholds are set back
  (about 30 ms)."""
  one = tf.data.Dataset.from_generator(lambda: iter((0,)),
                                       output_signature=tf.TensorSpec((), tf.int32))
  next(iter(one))
  heap.settled()


_heap_settled_after_tensorflow()
