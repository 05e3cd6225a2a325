"""The one checkpoint module: save, find, read, restore and fall back past damage.

Each step directory holds three items: `state` (params, optimizer state, step; every host writes
its own shards), `data` (the input position, so a resumed run sees exactly the batches it would
have seen, and the count of skipped non-finite steps), and `config` (the model config and the
full gin text); a training run adds `packer`, its input packers' state (every host writes its
own data shards' block, read back on any process count that divides them). The state is restored into whatever shardings the current mesh asks for, so a
checkpoint written by 2 processes x 4 devices restores on 1 x 8 or 4 x 2.

A save is atomic on every storage orbax supports, by orbax's own protocol for it (its `AUTO`
atomicity mode): on a local or FUSE-mounted disk each save is written into a temporary folder
and renamed once complete; on GCS, where a rename is a copy, each item is written in place and
committed by a `commit_success.txt` file, written last. Either way an interrupted save is never
listed as a step. An async save that cannot finish (a full or read-only disk) raises in the next
save, or after `timeout_s`, instead of hanging. If a listed step still cannot be read (a copy
cut short, a disk error), training falls back to the step before it with one log line and moves
the damaged folder aside to `<step>.damaged`, so it is neither counted among the kept
checkpoints nor in the way of that step's next save.

Train and eval go through a manager (`manager`, `save`, `restore_latest`); everything that only
reads a checkpoint (eval, generate, chat, convert, grow, `TrainConfig.init_from`) names it by a
run directory, a checkpoints directory or one step directory (`find_step`), reads its config
(`read_config`) and its parameters alone, never the optimizer state (`read_params`). Paths may
be local or any URL that orbax and etils.epath read, `gs://` included.
"""

import contextlib
import dataclasses
import difflib
import gc
import logging
import os
import sys
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from batgpt_jax import heap, logs
from batgpt_jax.model import config as model_config
from batgpt_jax.model import heads
from batgpt_jax.model.config import EXECUTION_FIELDS, ModelConfig
from batgpt_jax.train import state as train_state

ITEMS = ("state", "data", "config")
PACKER = "packer"  # optional: the input packers' state, when the pipeline gave one


class CheckpointMismatchError(ValueError):
  """The checkpoint was written for another model than the one configured."""


class UnreadableCheckpointError(RuntimeError):
  """Not one step of a checkpoint directory could be read."""


class CheckpointWriteError(OSError):
  """The checkpoint directory cannot be written (not writable, read-only, full)."""



@dataclasses.dataclass
class Restored:
  step: int
  state: dict
  data_position: int
  skipped_steps: int = 0
  data_state: dict | None = None  # this host's block of the packer state, when it was usable


def manager(directory: str, *, keep: int, async_save: bool = True, timeout_s: int = 1200,
            restore_concurrent_gb: float | None = None) -> ocp.CheckpointManager:
  """`timeout_s` bounds how long an async save may take before the run stops with an error.

  `restore_concurrent_gb` caps the GB (10**9 bytes) of the state a host reads at once (None:
  orbax's default, 96). A cap below one array's read size fails that read, so it is left at
  the default: benchmarks/restore_memory.py measured no lower peak memory from lower caps.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
      async_options=ocp.AsyncOptions(timeout_secs=timeout_s), cleanup_tmp_directories=True)
  handlers = {} if restore_concurrent_gb is None else {
      "state": ocp.StandardCheckpointHandler(restore_concurrent_gb=restore_concurrent_gb)}
  return ocp.CheckpointManager(_absolute(directory), options=options,
                               item_names=ITEMS + (PACKER,), item_handlers=handlers or None)


def _absolute(path: str) -> str:
  # Local paths are made absolute (orbax requires it); gs:// and other URLs pass through.
  return os.fspath(path) if "://" in os.fspath(path) else os.path.abspath(path)


def save(mngr: ocp.CheckpointManager, state: dict, *, data_position: int, model_cfg: ModelConfig,
         gin_text: str, force: bool = False, skipped_steps: int = 0,
         calibration: dict | None = None, data_state: dict | None = None,
         data_key: str | None = None) -> bool:
  """Saves the state, the data position and the config (with a reward model's `calibration`).

  `data_state` is this host's block of the input packers' state ({name: [shards of this host,
  ...]}, data/pipeline.TrainBatches.state); every host writes its own block, and `data_key`
  (pipeline.resume_key) says which data config it is valid for. An earlier async save that could
  not write (a read-only or full disk) raises here as one `CheckpointWriteError` naming the
  directory and the fix.
  """
  step = int(jax.device_get(state["step"]))
  saved_config = {"model": model_cfg.to_dict(), "gin": gin_text}
  if calibration is not None:
    saved_config["calibration"] = calibration
  data = {"position": int(data_position), "step": step, "skipped_steps": int(skipped_steps)}
  items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(saved_config)}
  if data_state is not None:
    data["packer_key"] = data_key
    items[PACKER] = ocp.args.StandardSave(_global_blocks(data_state))
  with _write_failures_named(mngr):
    return mngr.save(step, force=force,
                     args=ocp.args.Composite(data=ocp.args.JsonSave(data), **items))


def wait(mngr: ocp.CheckpointManager) -> None:
  """Waits for the async save in flight; one that could not write raises `CheckpointWriteError`.

  After that error, do not wait on or close `mngr` again: orbax's other threads of the failed
  save may wait for its signals until their timeout (TrainConfig's 1200 s), and each wait
  raises the same error again.
  """
  with _write_failures_named(mngr):
    mngr.wait_until_finished()


@contextlib.contextmanager
def finishing(mngr: ocp.CheckpointManager):
  """A training run's block: when it ends, the save in flight is waited for and `mngr` closed,
  except after a `CheckpointWriteError` (that save's threads may never finish: see `wait`)."""
  failed = False
  try:
    yield
  except CheckpointWriteError:
    failed = True
    raise
  finally:
    if not failed:
      wait(mngr)
      mngr.close()


@contextlib.contextmanager
def _write_failures_named(mngr: ocp.CheckpointManager):
  """Turns orbax's error for storage that refused a write into one `CheckpointWriteError`."""
  try:
    yield
  except Exception as err:  # pylint: disable=broad-except  (orbax re-raises its threads' errors)
    problem = logs.storage_write_failure(f"{err} {err.__cause__ or ''}")
    if problem is None:
      raise
    raise CheckpointWriteError(
        f"Cannot save checkpoints in {mngr.directory}: {problem} ({_first_line(err)}). Make it "
        "writable (or free space on its disk), or point TrainConfig.run_dir at a directory "
        "that is; the run resumes from its newest complete checkpoint.") from None



def _host_sharding() -> jax.sharding.NamedSharding:
  """Axis 0 split over the processes in order, each process's block on all its devices."""
  devices = [[d for d in jax.devices() if d.process_index == p]
             for p in range(jax.process_count())]
  mesh = jax.sharding.Mesh(np.array(devices), ("process", "local"))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("process"))


def _global_blocks(local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Per-host numpy blocks -> global arrays of every host's blocks, in process order."""
  sharding = _host_sharding()
  return {name: jax.make_array_from_process_local_data(
      sharding, block, (block.shape[0] * jax.process_count(), *block.shape[1:]))
          for name, block in local.items()}


def _packer_item(mngr: ocp.CheckpointManager, step: int) -> dict[str, np.ndarray] | None:
  """This host's block of a step's packer state, for the current process count (None when the
  processes cannot split its data shards: the pipeline then refuses the layout, naming it)."""
  folder = epath.Path(mngr.directory) / str(step) / PACKER
  meta = ocp.PyTreeCheckpointer().metadata(os.fspath(folder)).item_metadata.tree
  if any(m.shape[0] % jax.process_count() for m in meta.values()):
    return None
  sharding = _host_sharding()
  target = {name: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding)
            for name, m in meta.items()}
  out = mngr.restore(step, args=ocp.args.Composite(
      **{PACKER: ocp.args.StandardRestore(target)}))[PACKER]
  return {name: np.asarray(array.addressable_data(0)) for name, array in out.items()}


def _config_item(mngr: ocp.CheckpointManager, step: int) -> dict:
  return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def model_config_differences(saved: dict, current: ModelConfig) -> list[str]:
  """The fields in which a checkpoint's model is another model than `current`.

  A field the checkpoint predates counts as its default; execution fields (remat, attention)
  may change between runs of one model."""
  now = current.to_dict()
  saved = {**model_config.field_defaults(), **saved}
  return [f"{key}: checkpoint has {saved.get(key)!r}, config has {now.get(key)!r}"
          for key in sorted(set(saved) | set(now))
          if key not in EXECUTION_FIELDS and saved.get(key) != now.get(key)]


def _check_saved_model(saved: dict, where: str, model_cfg: ModelConfig) -> None:
  diffs = model_config_differences(saved["model"], model_cfg)
  if diffs:
    raise CheckpointMismatchError(
        f"The checkpoint at {where} was written for another model:\n  "
        + "\n  ".join(diffs)
        + "\nUse the gin model file it was trained with, or point TrainConfig.run_dir at a new "
          "directory (or `batgpt grow` it to the new size).")


def _check_saved_state(checkpoints_dir, step: int, abstract_state: dict) -> None:
  """Raises `CheckpointMismatchError` when the saved arrays are not the ones this run builds.

  The model config matched, so this is another optimizer or objective head; telling it apart
  here keeps a good checkpoint from being taken for a damaged one when its restore fails.
  """
  meta = _state_metadata(os.fspath(checkpoints_dir), step)
  saved = sorted((tuple(m.shape), str(np.dtype(m.dtype))) for m in jax.tree.leaves(meta))
  wanted = sorted((tuple(a.shape), str(np.dtype(a.dtype))) for a in jax.tree.leaves(abstract_state))
  if saved != wanted:
    params = shape_differences(
        {name: (tuple(m.shape), "") for name, m in _by_name(meta.get("params", {})).items()},
        abstract_state["params"])
    raise CheckpointMismatchError(
        f"The checkpoint at {checkpoints_dir}/{step} holds another training state than this run "
        f"builds: {len(saved)} arrays against {len(wanted)}"
        + ("; parameters:\n  " + "\n  ".join(params[:20]) if params else
           ", the parameters alike (another optimizer or objective?)")
        + "\nResume with the optimizer and objective it was written with, or point "
          "TrainConfig.run_dir at a new directory (TrainConfig.init_from starts from its "
          "parameters).")


def _warn_gin_changes(saved: dict, gin_text: str) -> None:
  if gin_text and saved.get("gin") and saved["gin"] != gin_text:
    changed = [line for line in difflib.unified_diff(
        saved["gin"].splitlines(), gin_text.splitlines(), "checkpoint", "now", n=0, lineterm="")
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    logging.warning("Resuming with gin settings that differ from the checkpoint's:\n  %s",
                    "\n  ".join(changed[:40]))


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: dict, shardings: dict,
                   model_cfg: ModelConfig, gin_text: str, *, move_aside: bool = False,
                   data_key: str | None = None) -> Restored | None:
  """The newest readable checkpoint placed in `shardings`, or None when there is none.

  With `data_key`, the step's packer state comes back too (this host's block) when it was saved
  for that key (the same data config); else `data_state` is None.

  A step whose config, data or state cannot be read is passed over with one log line, and with
  `move_aside` (the training run that owns the directory; never a reader such as eval or grow)
  renamed to `<step>.damaged`. A readable config of another model is no damage: it raises
  `CheckpointMismatchError` and the checkpoint stays as it is.
  """
  steps = complete_steps(mngr, move_aside=move_aside)
  if not steps:
    return None
  target = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)
  for step in steps:
    with _failed_read_noise_silenced() as attempt, heap.read_buffers_returned():
      try:
        saved = _config_item(mngr, step)
        _check_saved_model(saved, f"{mngr.directory}/{step}", model_cfg)
        _check_saved_state(mngr.directory, step, abstract_state)
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
        restored = Restored(step=step, state=out["state"],
                            data_position=int(out["data"]["position"]),
                            skipped_steps=int(out["data"].get("skipped_steps", 0)))
        if data_key is not None and out["data"].get("packer_key") == data_key:
          restored.data_state = _packer_item(mngr, step)
      except CheckpointMismatchError:
        raise
      except Exception as err:  # pylint: disable=broad-except  (orbax raises bare Exception)
        attempt.failed = True
        _pass_over(mngr, step, f"it cannot be read ({_first_line(err)})", move_aside)
        continue
    _warn_gin_changes(saved, gin_text)
    return restored
  raise UnreadableCheckpointError(
      f"No checkpoint in {mngr.directory} could be restored (steps {steps}); see the errors "
      "above. Move the directory away to start afresh.")


def complete_steps(mngr: ocp.CheckpointManager, *, move_aside: bool = False) -> list[int]:
  """The steps whose folder holds every item, newest first; others are named once and skipped.

  Orbax lists any numeric folder as a step; an empty or partial one (a copy cut short, a
  folder made by hand) would otherwise stop every resume with a KeyError on its first item.
  """
  complete = []
  for step in sorted(mngr.all_steps(), reverse=True):
    folder = epath.Path(mngr.directory) / str(step)
    missing = [item for item in ITEMS if not (folder / item).is_dir()]
    if missing:
      _pass_over(mngr, step, f"not a complete checkpoint (no {', '.join(missing)})", move_aside)
    else:
      complete.append(step)
  return complete


def _pass_over(mngr: ocp.CheckpointManager, step: int, reason: str, move_aside: bool) -> None:
  """One log line for a step that cannot be used; with `move_aside`, its folder renamed."""
  folder = epath.Path(mngr.directory) / str(step)
  if not move_aside:
    logging.warning("Skipping %s: %s.", folder, reason)
    return
  aside = folder.parent / f"{step}.damaged"
  n = 1
  while aside.exists():
    aside, n = folder.parent / f"{step}.damaged.{n}", n + 1
  if jax.process_index() == 0:
    folder.rename(aside)
  # Every process must stop listing the step before any of them decides whether to save it.
  ocp.multihost.sync_global_processes(f"batgpt_move_aside_{step}")
  mngr.reload()
  logging.warning("Skipping %s: %s. Moved it aside to %s.", folder, reason, aside.name)


@contextlib.contextmanager
def _failed_read_noise_silenced():
  """Runs a restore attempt without the debris of a failed one on the console.

  A failed TensorStore read leaves one asyncio future or coroutine per array whose exception
  nobody retrieves, and Python reports each with its whole traceback (a TensorStore spec of 50
  lines) when it is collected: dozens of screenfuls for one damaged step, which the caller
  reports in one line. They are collected here, with the asyncio logger, the unraisable hook and
  the never-awaited warnings turned off. Only when the caller marks the attempt `failed`: a full
  collection costs tenths of a second in a long-lived process (a notebook, the test suite), and a
  read that succeeded leaves no debris.
  """
  logger = logging.getLogger("asyncio")
  level, hook = logger.level, sys.unraisablehook
  logger.setLevel(logging.CRITICAL + 1)
  sys.unraisablehook = lambda unraisable: None
  attempt = types.SimpleNamespace(failed=False)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      try:
        yield attempt
      finally:
        if attempt.failed:
          gc.collect()
  finally:
    sys.unraisablehook = hook
    logger.setLevel(level)


def _first_line(err: BaseException, limit: int = 300) -> str:
  """An exception as one short line: orbax's messages embed whole TensorStore specs."""
  cause = err.__cause__ or err
  line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
  return line if len(line) <= limit else line[:limit] + "..."


# --- reading a checkpoint by its path: eval, generate, chat, convert, grow, init_from ----------

def _steps(checkpoints_dir: epath.Path) -> list[int]:
  if not checkpoints_dir.is_dir():
    return []
  return sorted(int(p.name) for p in checkpoints_dir.iterdir()
                if p.name.isdigit() and (p / "state").is_dir())


def find_step(path: str, step: int | None = None) -> tuple[str, int]:
  """(checkpoints directory, step) for a run dir, a checkpoints dir or a step dir.

  `step` None means the newest step. Local paths come back absolute; URLs as given.
  """
  root = epath.Path(_absolute(path))
  if root.name.isdigit() and (root / "state").is_dir():
    candidates = [(root.parent, [int(root.name)])]
  else:
    candidates = [(root / "checkpoints", None), (root, None)]
  for directory, steps in candidates:
    steps = steps or _steps(directory)
    if not steps:
      continue
    if step is None:
      return os.fspath(directory), steps[-1]
    if step not in steps:
      raise FileNotFoundError(f"No step {step} in {directory}; it has steps {steps}.")
    return os.fspath(directory), step
  listing = (sorted(p.name for p in root.iterdir())[:20] if root.is_dir()
             else "it does not exist")
  raise FileNotFoundError(
      f"{root} is not an orbax checkpoint of this project: expected a run directory holding "
      "checkpoints/<step>/, a checkpoints directory holding <step>/ directories, or a step "
      f"directory holding 'state' and 'config' (found: {listing}).")


def read_config(checkpoints_dir: str, step: int) -> tuple[ModelConfig, str]:
  """(model config, gin text) saved with the checkpoint."""
  if not (epath.Path(checkpoints_dir) / str(step) / "config").is_dir():
    raise FileNotFoundError(f"The checkpoint {checkpoints_dir}/{step} has no 'config' item, so "
                            "its model config is unknown; it was not written by batgpt train.")
  mngr = manager(checkpoints_dir, keep=None, async_save=False)
  try:
    saved = _config_item(mngr, step)
  finally:
    mngr.close()
  return ModelConfig.from_dict(saved["model"]), saved.get("gin", "")


def read_calibration(checkpoints_dir: str, step: int) -> dict | None:
  """A reward model's score calibration saved with the checkpoint ({'mean', 'std', ...}), or
  None when the run never evaluated (or is no reward model)."""
  mngr = manager(checkpoints_dir, keep=None, async_save=False)
  try:
    return _config_item(mngr, step).get("calibration")
  finally:
    mngr.close()


def _state_dir(checkpoints_dir: str, step: int) -> str:
  return os.fspath(epath.Path(checkpoints_dir) / str(step) / "state")


def param_shapes(checkpoints_dir: str, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
  """'path/to/param' -> (shape, dtype) of the saved parameters, read from metadata only."""
  return {name: (tuple(m.shape), str(np.dtype(m.dtype)))
          for name, m in _by_name(_state_metadata(checkpoints_dir, step)["params"]).items()}


def _state_metadata(checkpoints_dir: str, step: int) -> dict:
  """The saved state's tree with an `ArrayMetadata` (shape, dtype) per array; no array read."""
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax warns about a per-item metadata file
  return ocp.PyTreeCheckpointer().metadata(_state_dir(checkpoints_dir, step)).item_metadata.tree


def _by_name(tree: dict) -> dict[str, object]:
  """A nested dict's leaves by their 'a/b/c' names (the inverse of `_nest`)."""
  return {"/".join(str(k.key) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _nest(flat: dict[str, object]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def _partial_restore(checkpoints_dir: str, step: int, item: dict, restore_args) -> dict:
  return ocp.PyTreeCheckpointer().restore(
      _state_dir(checkpoints_dir, step),
      args=ocp.args.PyTreeRestore(item={"params": item}, restore_args={"params": restore_args},
                                  partial_restore=True))["params"]


def read_param_arrays(checkpoints_dir: str, step: int, paths: list[str],
                      shapes: dict | None = None) -> dict[str, np.ndarray]:
  """The saved parameters at `paths` ('a/b/c') as host numpy arrays; nothing else is read.

  One tensor at a time is what conversion needs; `shapes` is `param_shapes(...)` if known.
  """
  if not paths:
    return {}
  shapes = shapes or param_shapes(checkpoints_dir, step)
  item = _nest({path: jax.ShapeDtypeStruct(*shapes[path]) for path in paths})
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  out = _partial_restore(checkpoints_dir, step, item, restore_args)
  return {name: np.asarray(value) for name, value in _by_name(out).items()}


def read_params(checkpoints_dir: str, step: int, shardings: dict | None = None) -> dict:
  """Every parameter (no optimizer state) as a pure dict of jax arrays.

  With `shardings` (a pure dict like the parameters, e.g. `train.state.param_shardings`) each
  array is read straight into its sharding on the current mesh, and only the parameters it names
  are read (a reward run's decoder without its head); without, all onto the default device.
  """
  shapes = param_shapes(checkpoints_dir, step)
  if shardings is None:
    flat = read_param_arrays(checkpoints_dir, step, list(shapes), shapes)
    return _nest({path: jnp.asarray(value) for path, value in flat.items()})
  wanted = _by_name(shardings)
  shapes = {name: shape for name, shape in shapes.items() if name in wanted}
  target = jax.tree.map(lambda spec, s: jax.ShapeDtypeStruct(spec[0], spec[1], sharding=s),
                        _nest(shapes), shardings, is_leaf=lambda x: isinstance(x, tuple))
  return _partial_restore(checkpoints_dir, step, target,
                          ocp.checkpoint_utils.construct_restore_args(target))


def shape_differences(saved: dict[str, tuple], abstract_params: dict) -> list[str]:
  """Parameters whose presence, shape or dtype differ between a checkpoint and a model."""
  wanted = {name: (tuple(a.shape), str(np.dtype(a.dtype)))
            for name, a in _by_name(abstract_params).items()}
  out = []
  for name in sorted(set(saved) | set(wanted)):
    if name not in saved:
      out.append(f"{name}: missing from the checkpoint (the model has {wanted[name][0]})")
    elif name not in wanted:
      out.append(f"{name}: in the checkpoint {saved[name][0]}, not in the model")
    elif saved[name][0] != wanted[name][0]:
      out.append(f"{name}: checkpoint {saved[name][0]}, model {wanted[name][0]}")
  return out


# --- writing a new run: conversion ------------------------------------------------------------

MODEL_GIN = "model.gin"


def model_gin(cfg: ModelConfig, header: str = "") -> str:
  lines = [f"# {line}" if line else "#" for line in header.splitlines()]
  for field in dataclasses.fields(cfg):
    lines.append(f"ModelConfig.{field.name} = {getattr(cfg, field.name)!r}")
  return "\n".join(lines) + "\n"


def ensure_new_run_dir(run_dir: str) -> None:
  checkpoints_dir = epath.Path(_absolute(run_dir)) / "checkpoints"
  if _steps(checkpoints_dir):
    raise FileExistsError(f"{checkpoints_dir} already holds checkpoints (steps "
                          f"{_steps(checkpoints_dir)}); import into a new run directory.")


def write_fresh_run_dir(run_dir: str, cfg: ModelConfig, seed: int = 0,
                        head_names: tuple[str, ...] = ()) -> str:
  """Step 0 of a new run from freshly initialised parameters (the decoder and `head_names`): the
  `init_from` of a run that starts from scratch. Returns the path of model.gin."""
  init = jax.jit(heads.init_params, static_argnums=(0, 1, 2))
  return write_run_dir(run_dir, cfg, init(cfg, seed, tuple(head_names)),
                       train_state.OptimizerConfig())


def write_run_dir(run_dir: str, cfg: ModelConfig, params: dict,
                  opt_cfg: train_state.OptimizerConfig, header: str = "") -> str:
  """Saves `params` as step 0 of a new run (fresh optimizer state) and writes model.gin.

  Returns the path of model.gin. Refuses a run directory that already holds checkpoints.
  """
  ensure_new_run_dir(run_dir)
  root = epath.Path(_absolute(run_dir))
  gin_text = model_gin(cfg, header)
  tx = train_state.make_optimizer(opt_cfg, total_steps=2)  # the schedule is not saved
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  mngr = manager(os.fspath(root / "checkpoints"), keep=1, async_save=False)
  try:
    save(mngr, state, data_position=0, model_cfg=cfg, gin_text=gin_text, force=True)
  finally:  # a synchronous save: nothing is left in flight to wait for
    mngr.close()
  path = root / MODEL_GIN
  path.write_text(gin_text)
  return os.fspath(path)
