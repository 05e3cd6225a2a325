"""Orbax checkpoints: async save, validated restore, resume, and fallback to the last good step.

Each step directory holds three items: `state` (params, optimizer state, step; every host writes
its own shards), `data` (the input position, so a resumed run sees exactly the batches it would
have seen, and the count of skipped non-finite steps), and `config` (the model config and the
full gin text). The state is restored into whatever shardings the current mesh asks for, so a
checkpoint written by 2 processes x 4 devices restores on 1 x 8 or 4 x 2. Orbax writes each save
into a temporary directory and renames it only once complete, so an interrupted save is never
listed as a step; restore still falls back to an older step if the newest one cannot be read.
"""

import dataclasses
import difflib
import logging
import os

import jax
import orbax.checkpoint as ocp

from batgpt_jax.model.config import ModelConfig

ITEMS = ("state", "data", "config")


class CheckpointMismatchError(ValueError):
  """The checkpoint was written for another model than the one configured."""


@dataclasses.dataclass
class Restored:
  step: int
  state: dict
  data_position: int
  skipped_steps: int = 0


def manager(directory: str, *, keep: int, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True)
  # Local paths are made absolute (orbax requires it); gs:// and other URLs pass through.
  path = directory if "://" in directory else os.path.abspath(directory)
  return ocp.CheckpointManager(path, options=options, item_names=ITEMS)


def save(mngr: ocp.CheckpointManager, state: dict, *, data_position: int, model_cfg: ModelConfig,
         gin_text: str, force: bool = False, skipped_steps: int = 0) -> bool:
  step = int(jax.device_get(state["step"]))
  return mngr.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave({"position": int(data_position), "step": step,
                              "skipped_steps": int(skipped_steps)}),
      config=ocp.args.JsonSave({"model": model_cfg.to_dict(), "gin": gin_text})))


def read_config(mngr: ocp.CheckpointManager, step: int) -> dict:
  return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def model_config_differences(saved: dict, current: ModelConfig) -> list[str]:
  now = current.to_dict()
  return [f"{key}: checkpoint has {saved.get(key)!r}, config has {now.get(key)!r}"
          for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]


def check_compatible(mngr: ocp.CheckpointManager, step: int, model_cfg: ModelConfig,
                     gin_text: str) -> None:
  """Raises `CheckpointMismatchError` naming every model field that differs; logs gin changes."""
  saved = read_config(mngr, step)
  diffs = model_config_differences(saved["model"], model_cfg)
  if diffs:
    raise CheckpointMismatchError(
        f"The checkpoint at {mngr.directory}/{step} was written for another model:\n  "
        + "\n  ".join(diffs)
        + "\nUse the gin model file it was trained with, or point TrainConfig.run_dir at a new "
          "directory (or `batgpt grow` it to the new size).")
  if gin_text and saved.get("gin") and saved["gin"] != gin_text:
    changed = [line for line in difflib.unified_diff(
        saved["gin"].splitlines(), gin_text.splitlines(), "checkpoint", "now", n=0, lineterm="")
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    logging.warning("Resuming with gin settings that differ from the checkpoint's:\n  %s",
                    "\n  ".join(changed[:40]))


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: dict, shardings: dict,
                   model_cfg: ModelConfig, gin_text: str) -> Restored | None:
  """The newest readable checkpoint placed in `shardings`, or None when there is none."""
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    return None
  check_compatible(mngr, steps[0], model_cfg, gin_text)
  target = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
  for step in steps:
    try:
      out = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    except (ValueError, OSError, KeyError) as err:  # unreadable: fall back to an older one
      logging.error("Checkpoint step %d cannot be restored (%s); trying an older one.", step, err)
      continue
    return Restored(step=step, state=out["state"], data_position=int(out["data"]["position"]),
                    skipped_steps=int(out["data"].get("skipped_steps", 0)))
  raise RuntimeError(f"No checkpoint in {mngr.directory} could be restored (steps {steps}); "
                     "see the errors above. Move the directory away to start afresh.")
