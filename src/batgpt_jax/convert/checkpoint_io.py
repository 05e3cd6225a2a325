"""Our side of the conversion: find a checkpoint step, read its config and parameters one leaf
at a time, and write a fresh run directory (step 0, new optimizer state) with its model.gin."""

import dataclasses
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import checkpoints
from batgpt_jax.train import state as train_state

MODEL_GIN = "model.gin"


def _steps(checkpoints_dir: str) -> list[int]:
  if not os.path.isdir(checkpoints_dir):
    return []
  return sorted(int(name) for name in os.listdir(checkpoints_dir)
                if name.isdigit() and os.path.isdir(os.path.join(checkpoints_dir, name, "state")))


def find_step(path: str, step: int | None = None) -> tuple[str, int]:
  """(checkpoints directory, step) for a run dir, a checkpoints dir or a step dir."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "state")) and os.path.basename(path).isdigit():
    candidates = [(os.path.dirname(path), [int(os.path.basename(path))])]
  else:
    candidates = [(os.path.join(path, "checkpoints"), None), (path, None)]
  for directory, steps in candidates:
    steps = steps or _steps(directory)
    if not steps:
      continue
    if step is None:
      return directory, steps[-1]
    if step not in steps:
      raise FileNotFoundError(f"No step {step} in {directory}; it has steps {steps}.")
    return directory, step
  listing = sorted(os.listdir(path))[:20] if os.path.isdir(path) else "it does not exist"
  raise FileNotFoundError(
      f"{path} is not an orbax checkpoint of this project: expected a run directory holding "
      "checkpoints/<step>/, a checkpoints directory holding <step>/ directories, or a step "
      f"directory holding 'state' and 'config' (found: {listing}).")


def read_config(checkpoints_dir: str, step: int) -> tuple[ModelConfig, str]:
  """(model config, gin text) saved with the checkpoint."""
  if not os.path.isdir(os.path.join(checkpoints_dir, str(step), "config")):
    raise FileNotFoundError(f"The checkpoint {checkpoints_dir}/{step} has no 'config' item, so "
                            "its model config is unknown; it was not written by train/loop.py.")
  mngr = checkpoints.manager(checkpoints_dir, keep=1 << 30, async_save=False)
  try:
    saved = checkpoints.read_config(mngr, step)
  finally:
    mngr.close()
  return ModelConfig.from_dict(saved["model"]), saved.get("gin", "")


def _state_dir(checkpoints_dir: str, step: int) -> str:
  return os.path.join(checkpoints_dir, str(step), "state")


def param_shapes(checkpoints_dir: str, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
  """'path/to/param' -> (shape, dtype) of the saved parameters, read from metadata only."""
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax warns about a per-item metadata file
  meta = ocp.PyTreeCheckpointer().metadata(_state_dir(checkpoints_dir, step)).item_metadata.tree
  flat = jax.tree_util.tree_flatten_with_path(meta["params"])[0]
  return {"/".join(str(k.key) for k in path): (tuple(m.shape), str(np.dtype(m.dtype)))
          for path, m in flat}


def read_params(checkpoints_dir: str, step: int, paths: list[str],
                shapes: dict | None = None) -> dict[str, np.ndarray]:
  """The saved parameters at `paths` as numpy arrays; nothing else is read.

  `shapes` is `param_shapes(...)` when the caller already has it.
  """
  if not paths:
    return {}
  shapes = shapes or param_shapes(checkpoints_dir, step)
  item = {}
  for path in paths:
    shape, dtype = shapes[path]
    node = item
    *parents, leaf = path.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = jax.ShapeDtypeStruct(shape, dtype)
  item = {"params": item}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  out = ocp.PyTreeCheckpointer().restore(
      _state_dir(checkpoints_dir, step),
      args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True))
  result = {}
  for path in paths:
    node = out["params"]
    for key in path.split("/"):
      node = node[key]
    result[path] = np.asarray(node)
  return result


def read_all_params(checkpoints_dir: str, step: int) -> dict:
  """Every parameter as a pure dict of jax arrays (for generation)."""
  shapes = param_shapes(checkpoints_dir, step)
  flat = read_params(checkpoints_dir, step, list(shapes), shapes)
  params: dict = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = params
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = jnp.asarray(value)
  return params


def model_gin(cfg: ModelConfig, header: str = "") -> str:
  lines = [f"# {line}" if line else "#" for line in header.splitlines()]
  for field in dataclasses.fields(cfg):
    lines.append(f"ModelConfig.{field.name} = {getattr(cfg, field.name)!r}")
  return "\n".join(lines) + "\n"


def ensure_new_run_dir(run_dir: str) -> None:
  checkpoints_dir = os.path.join(os.path.abspath(run_dir), "checkpoints")
  if _steps(checkpoints_dir):
    raise FileExistsError(f"{checkpoints_dir} already holds checkpoints (steps "
                          f"{_steps(checkpoints_dir)}); import into a new run directory.")


def write_run_dir(run_dir: str, cfg: ModelConfig, params: dict,
                  opt_cfg: train_state.OptimizerConfig, header: str = "") -> str:
  """Saves `params` as step 0 of a new run (fresh optimizer state) and writes model.gin.

  Returns the path of model.gin. Refuses a run directory that already holds checkpoints.
  """
  ensure_new_run_dir(run_dir)
  checkpoints_dir = os.path.join(os.path.abspath(run_dir), "checkpoints")
  gin_text = model_gin(cfg, header)
  tx = train_state.make_optimizer(opt_cfg, total_steps=2)  # the schedule is not saved
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  mngr = checkpoints.manager(checkpoints_dir, keep=1, async_save=False)
  try:
    checkpoints.save(mngr, state, data_position=0, model_cfg=cfg, gin_text=gin_text, force=True)
    mngr.wait_until_finished()
  finally:
    mngr.close()
  path = os.path.join(os.path.abspath(run_dir), MODEL_GIN)
  with open(path, "w", encoding="utf-8") as f:
    f.write(gin_text)
  return path
