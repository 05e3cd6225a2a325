"""Data: vocabulary, seqio tasks, direction and packing preprocessors, the per-host pipeline.

Importing the package hides every GPU from TensorFlow (the accelerators belong to JAX; tf.data
only needs CPUs) and keeps TensorFlow's C++ logging quiet.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402  pylint: disable=g-import-not-at-top


def _hide_accelerators_from_tensorflow() -> None:
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    # TensorFlow already initialised its devices (someone used it before importing us): the
    # setting can no longer change, and whoever did that chose their own device placement.
    pass


_hide_accelerators_from_tensorflow()
