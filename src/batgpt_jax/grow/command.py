"""`batgpt grow`: a trained checkpoint of a small model -> a checkpoint of a larger one.

  batgpt grow --from_checkpoint runs/small --to_gin gin/grow/tiny_x2.gin --out runs/grown
  batgpt train --gin_file gin/grow/tiny_x2.gin --gin.TrainConfig.run_dir="'runs/grown'"

The source model config is read from the checkpoint; the target model (and mesh, optimizer and
run length) from `--to_gin`, with any `--gin_file` / `--gin.X=Y` flags applied on top. Before
writing, both models run on a probe batch; a function-preserving growth that misses its tolerance
writes nothing. The output is `OUT/checkpoints/<step>` in the format `batgpt train` resumes from.
"""

import dataclasses
import logging
import os
import re

import gin
import jax
from etils import epath

from batgpt_jax import checkpoints, config, parallel
from batgpt_jax.grow import optimizer as grow_optimizer
from batgpt_jax.grow import verify
from batgpt_jax.grow.plan import GrowthError, plan_growth
from batgpt_jax.model import config as model_config
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import metrics
from batgpt_jax.train import state as train_state


@dataclasses.dataclass(frozen=True)
class GrowResult:
  step: int
  directory: str
  report: verify.Report


def checkpoint_dir(path: str) -> tuple[str, int]:
  """(checkpoints directory, newest step) of a run directory, a checkpoints dir or a step dir."""
  try:
    return checkpoints.find_step(path)
  except FileNotFoundError as err:
    raise GrowthError(str(err)) from None


def _holds_steps(directory: epath.Path) -> bool:
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def _restore_source(mngr, cfg: ModelConfig, gin_text: str, mesh, rules) -> checkpoints.Restored:
  """The newest readable state of the source, through the one restore path of `checkpoints`."""
  tx = train_state.make_optimizer(train_state.OptimizerConfig(), 1)  # only its structure matters
  abstract = train_state.abstract_state(cfg, tx)
  shardings = train_state.state_shardings(cfg, tx, mesh, rules, abstract)
  return checkpoints.restore_latest(mngr, abstract, shardings, cfg, gin_text)


def _bound_int(gin_text: str, name: str) -> int | None:
  """The last `name = <int>` binding of a recorded gin text (gin.config_str's one-line form)."""
  found = re.findall(rf"^\s*{re.escape(name)}\s*=\s*(\d+)\s*$", gin_text, flags=re.MULTILINE)
  return int(found[-1]) if found else None


def source_schedule_length(gin_text: str) -> int:
  """The learning-rate schedule length a source run trained with, from its recorded gin text:
  OptimizerConfig.schedule_steps, else TrainConfig.steps, else the dataclasses' defaults."""
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  return (_bound_int(gin_text, "OptimizerConfig.schedule_steps")
          or _bound_int(gin_text, "TrainConfig.steps")
          or train_state.OptimizerConfig().schedule_steps or loop.TrainConfig().steps)


def grow_checkpoint(source: str, out: str, *, big_cfg: ModelConfig, mesh_cfg: parallel.MeshConfig,
                    opt_cfg: train_state.OptimizerConfig, total_steps: int, gin_text: str = "",
                    depth_mode: str = "interleave", noise_snr_db: float | None = None,
                    optimizer: str = "carry", schedule: str = "restart", seed: int = 0,
                    tolerance: float | None = None) -> GrowResult:
  """Grows the newest checkpoint under `source` into `big_cfg`, verifies it, writes `out`.

  Raises `GrowthError` (and writes nothing) on a bad source, an unsupported size, an `out` that
  already holds checkpoints, or a function-preserving growth whose probe logits differ by more
  than `tolerance` (default: `verify.TOLERANCE` by compute dtype).
  """
  grow_optimizer.check_modes(optimizer, schedule)
  directory, source_step = checkpoint_dir(source)
  out_dir = os.fspath(epath.Path(out) / "checkpoints")
  if _holds_steps(epath.Path(out_dir)):
    raise GrowthError(f"{out_dir} already holds checkpoints; grow into a new --out directory")
  rules = parallel.check_rules(mesh_cfg.axis_rules)
  mesh = parallel.mesh_from_config(mesh_cfg)
  source_mngr = checkpoints.manager(directory, keep=None, async_save=False)  # read only
  try:
    small_cfg, source_gin = checkpoints.read_config(directory, source_step)
    plan = plan_growth(small_cfg, big_cfg, depth_mode=depth_mode, noise_snr_db=noise_snr_db,
                       seed=seed)  # every size problem is reported before any array is read
    metrics.log_console(f"Source: {model_config.describe(small_cfg)}")
    metrics.log_console(f"Target: {model_config.describe(big_cfg)}")
    metrics.log_console(f"Growth: {plan.describe()}")
    lengths = None
    if schedule == "rescale":
      lengths = (source_schedule_length(source_gin),
                 train_state.schedule_length(opt_cfg, total_steps))
      metrics.log_console(f"Schedule: the source's step {source_step} of {lengths[0]} becomes "
                          f"step {grow_optimizer.grown_step(schedule, source_step, lengths)} of "
                          f"the target's {lengths[1]}")
    if schedule == "continue" and total_steps <= source_step:
      logging.warning("--schedule continue keeps the source step %d, but the target's "
                      "TrainConfig.steps is %d: raise it, or `batgpt train` has nothing to do.",
                      source_step, total_steps)
    restored = _restore_source(source_mngr, small_cfg, source_gin, mesh, rules)
  finally:
    source_mngr.close()

  tx = train_state.make_optimizer(opt_cfg, total_steps)
  shardings = train_state.state_shardings(big_cfg, tx, mesh, rules,
                                          train_state.abstract_state(big_cfg, tx))
  state = grow_optimizer.grow_state(restored.state, small_cfg, big_cfg, plan, tx=tx,
                                    shardings=shardings, optimizer=optimizer, schedule=schedule,
                                    schedule_lengths=lengths, progress=metrics.log_console)
  report = verify.compare(small_cfg, restored.state["params"], big_cfg, state["params"], plan,
                          tolerance=tolerance)
  for line in report.lines():
    metrics.log_console(line)
  if not report.passed:
    raise GrowthError(
        f"Refusing to write: the grown model's probe logits differ from the source's by "
        f"{report.max_logit_diff:.3g} > tolerance {report.tolerance:.0e}, so it is not the same "
        "function. This is a bug in the growth operators for this configuration; please report "
        "it with the command line.")

  mngr = checkpoints.manager(out_dir, keep=1, async_save=False)
  try:
    checkpoints.save(mngr, state, data_position=restored.data_position, model_cfg=big_cfg,
                     gin_text=gin_text, force=True)
  finally:  # a synchronous save: nothing is left in flight to wait for
    mngr.close()
  step = int(jax.device_get(state["step"]))
  metrics.log_console(f"Wrote {out_dir}/{step} (source step {restored.step}, data position "
                      f"{restored.data_position}, optimizer {optimizer}, schedule {schedule})")
  return GrowResult(step=step, directory=out_dir, report=report)


def target_gin(to_gin: str, overrides: str) -> str:
  """Parses the target gin file afresh, then the command line's gin on top; returns the text."""
  gin.clear_config()
  text = config.parse_gin([to_gin], [])
  if overrides.strip():
    gin.parse_config(overrides)
    text = gin.config_str()
  return text


def run(args, gin_text: str) -> int:
  """The `grow` command: `gin_text` holds the command line's `--gin_file` / `--gin.X=Y` flags."""
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  text = target_gin(args.to_gin, gin_text)
  try:
    big_cfg, total_steps = ModelConfig(), loop.TrainConfig().steps
  except ValueError as err:  # an invalid target size: say so without a traceback
    raise SystemExit(f"error: the target gin {args.to_gin}: {str(err).splitlines()[0]}") from None
  try:
    grow_checkpoint(args.from_checkpoint, args.out, big_cfg=big_cfg,
                    mesh_cfg=parallel.MeshConfig(), opt_cfg=train_state.OptimizerConfig(),
                    total_steps=total_steps, gin_text=text, depth_mode=args.depth_mode,
                    noise_snr_db=args.noise_snr_db, optimizer=args.optimizer,
                    schedule=args.schedule, seed=args.seed, tolerance=args.tolerance)
  except GrowthError as err:
    raise SystemExit(f"error: {err}") from None
  flags = " plus the --gin flags given here" if gin_text.strip() else ""
  metrics.log_console(f"Resume training with: batgpt train --gin_file={args.to_gin} "
                      f"--gin.TrainConfig.run_dir=\"'{args.out}'\"{flags}")
  return 0
