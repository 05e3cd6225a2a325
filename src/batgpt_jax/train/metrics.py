"""Metrics out: TensorBoard event files, JSON lines, a console progress line, throughput and MFU.

FLOPs per token follow the MaxText accounting: 6 * (matmul parameters) for the dense layers
(forward and backward), plus causal attention 6 * n_layers * n_heads * head_dim * seq_len
(QK^T and AV, each 2 FLOPs per multiply-add, times 3 for the backward, halved for the causal mask).
Embedding lookups are not matmuls and are not counted; the LM head is.
"""

import json
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from batgpt_jax.model.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
  d, h, kv, hd = cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  per_layer = d * h * hd * 2 + d * kv * hd * 2 + 3 * d * cfg.ffn
  return cfg.n_layers * per_layer + d * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  attention = 6 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len  # causal half of 12·L·H·hd·T
  return 6 * matmul_params(cfg) + attention


# Dense bfloat16 peak FLOP/s per device, from the vendors' spec sheets (no sparsity).
PEAK_FLOPS_BF16 = (
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v4", 275e12),
)


def spec_peak_flops(device) -> float | None:
  """The spec-sheet peak of an accelerator, or None (CPUs are measured instead)."""
  kind = getattr(device, "device_kind", "")
  return next((peak for name, peak in PEAK_FLOPS_BF16 if name.lower() in kind.lower()), None)


def measure_matmul_peak(size: int = 2048, repeats: int = 5, dtype="float32") -> float:
  """FLOP/s of the best of `repeats` square matmuls on the default device: the CPU denominator.

  The operands come from numpy: drawn with `jax.random` they cost four more compiles (0.6 s on
  one core, paid by every `batgpt train` process) for a number that needs only the matmul's."""
  rng = np.random.default_rng(0)
  a, b = (jnp.asarray(rng.standard_normal((size, size), np.float32), dtype) for _ in range(2))
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best


def peak_flops(device, num_devices: int) -> float:
  """The MFU denominator of a mesh: spec sheets on accelerators, a measured matmul on CPU.

  Fake CPU devices share the host's cores, so the CPU figure is the host's, not per device.
  """
  spec = spec_peak_flops(device)
  if spec:
    return spec * num_devices
  return measure_matmul_peak(size=1024, repeats=3)


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


# What `tf.summary.scalar` attaches (TensorBoard's scalar plugin), written through the low-level
# `tf.summary.write`, which does not need the tensorboard package installed.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))


class Writer:
  """Scalars to TensorBoard and to a JSON-lines file (one record per call), from process 0 only.

  The JSON lines (`metrics.jsonl` in the run directory) are appended, so a resumed run continues
  the same file; they are what scripts and tests read.
  """

  def __init__(self, log_dir: str | None, jsonl_path: str | None = None):
    lead = jax.process_index() == 0
    # TensorFlow's own event writer (TensorFlow is here for gfile anyway): local and gs:// alike,
    # and no tensorboardX, which imports torch whenever torch is installed (seconds per process).
    self.tb = tf.summary.create_file_writer(log_dir) if log_dir and lead else None
    self.jsonl = tf.io.gfile.GFile(jsonl_path, "a") if jsonl_path and lead else None

  def scalars(self, step: int, values: dict, prefix: str = "") -> None:
    if self.tb is not None:
      with self.tb.as_default(step=step):
        for name, value in values.items():
          tf.summary.write(f"{prefix}{name}", tf.constant(float(value), tf.float32),
                           metadata=_SCALAR_METADATA)
      self.tb.flush()
    if self.jsonl is not None:
      record = {"step": step, **{f"{prefix}{k}": float(v) for k, v in values.items()}}
      self.jsonl.write(json.dumps(record) + "\n")
      self.jsonl.flush()

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
    if self.jsonl is not None:
      self.jsonl.close()


def cut_jsonl(path: str, step: int) -> int:
  """Drops the records after `step` from a JSON-lines file; returns how many were dropped.

  A resumed run trains the steps after its checkpoint again: their old records (written before
  a crash or a kill) would otherwise appear twice.
  """
  if jax.process_index() != 0 or not tf.io.gfile.exists(path):
    return 0
  with tf.io.gfile.GFile(path) as f:
    lines = [line for line in f if line.strip()]
  kept = [line for line in lines if _record_step(line) <= step]
  if len(kept) < len(lines):
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
      f.write("".join(kept))
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)  # never a half-written file
  return len(lines) - len(kept)


def _record_step(line: str) -> float:
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):  # a line cut short by a kill: drop it
    return float("inf")


def read_jsonl(path: str) -> list[dict]:
  with tf.io.gfile.GFile(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Throughput:
  """Tokens/s and ETA over the steps since the last report (the first, compiling step excluded)."""

  def __init__(self, tokens_per_step: int, total_steps: int, flops_per_token: float,
               peak_flops: float | None = None):
    self.tokens_per_step, self.total_steps = tokens_per_step, total_steps
    self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
    self.mark_step, self.mark_time = None, None

  def start(self, step: int) -> None:
    self.mark_step, self.mark_time = step, time.perf_counter()

  def report(self, step: int) -> dict:
    now = time.perf_counter()
    steps = step - self.mark_step
    seconds = max(now - self.mark_time, 1e-9)
    self.mark_step, self.mark_time = step, now
    if steps <= 0:
      return {}
    step_time = seconds / steps
    tokens_per_s = self.tokens_per_step / step_time
    out = {"perf/step_seconds": step_time, "perf/tokens_per_second": tokens_per_s,
           "perf/tflops": tokens_per_s * self.flops_per_token / 1e12,
           "perf/eta_seconds": step_time * (self.total_steps - step)}
    if self.peak_flops:
      out["perf/mfu"] = tokens_per_s * self.flops_per_token / self.peak_flops
    return out


def _groups(values: dict) -> list[str]:
  """The metric groups that saw tokens (`l2r`, `r2l`, `reply`, ...), in the objective's order."""
  return [key[:-len("/tokens")] for key, count in values.items()
          if key.endswith("/tokens") and count > 0]


# Preference objectives report pairs, not token groups: (key, title) shown when present.
_PAIR_METRICS = (("reward/accuracy", "pair acc"), ("reward/margin", "margin"),
                 ("kl/sequence", "KL"))


def _pair_parts(values: dict) -> list[str]:
  return [f"{title} {values[key]:.3f}" for key, title in _PAIR_METRICS if key in values]


def progress_line(step: int, total: int, train: dict, perf: dict) -> str:
  parts = [f"step {step}/{total}", f"loss {train['loss']:.3f}"]
  parts += [f"{group.upper()} {train[f'{group}/loss']:.3f}" for group in _groups(train)]
  parts += _pair_parts(train)
  parts.append(f"lr {train.get('learning_rate', float('nan')):.2e}")
  if train.get("skipped_steps"):
    parts.append(f"skipped {train['skipped_steps']:.0f}")
  if perf:
    parts.append(f"{perf['perf/tokens_per_second']:,.0f} tok/s")
    if "perf/mfu" in perf:
      parts.append(f"MFU {perf['perf/mfu']:.1%}")
    parts.append(f"ETA {format_duration(perf['perf/eta_seconds'])}")
  return " | ".join(parts)


def eval_line(step: int, values: dict) -> str:
  parts = [f"eval @ {step}"]
  groups = _groups(values)
  for group in groups:
    parts.append(f"{group.upper()} loss {values[f'{group}/loss']:.3f} "
                 f"ppl {values[f'{group}/perplexity']:.1f} acc {values[f'{group}/accuracy']:.3f}")
  if not groups and "loss" in values:
    parts.append(f"loss {values['loss']:.3f}")
  parts += _pair_parts(values)
  return " | ".join(parts)


def to_host(values: dict) -> dict:
  return {k: float(np.asarray(v)) for k, v in jax.device_get(values).items()}


def log_console(line: str) -> None:
  if jax.process_index() == 0:
    logging.info("%s", line)
